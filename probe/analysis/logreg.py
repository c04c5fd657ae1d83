"""L2 logistic regression by damped Newton on the row span: the solver behind ``logreg`` probes.

Activations have many more dimensions than a probe has rows, and are badly conditioned;
an L2 solution lies in the span of the training rows, so :func:`row_basis` re-expresses
the rows in an orthonormal basis of that span and :func:`newton_logreg` fits there in a
few Newton steps (lbfgs needed 50+ iterations on the same data).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.linalg import LinAlgError, cholesky, solve_triangular
from scipy.linalg.lapack import dposv
from scipy.special import expit


def newton_logreg(A: np.ndarray, y: np.ndarray, C: float, w0: np.ndarray | None = None,
                  max_iter: int = 30, tol: float = 1e-5) -> np.ndarray:
    """L2 logistic regression by damped Newton; the last column of A is the intercept.

    Minimises ``sum log(1 + exp(-s z)) + |w|^2 / (2C)`` (sklearn's objective, intercept
    unpenalised). Newton needs a few steps whatever the conditioning, where lbfgs needed
    50+ on anisotropic activations; on the row-span design (:func:`row_basis`) each step
    is one small positive-definite solve.
    """
    reg = np.full(A.shape[1], 1.0 / C)
    reg[-1] = 1e-8  # keeps the Hessian positive definite without shrinking the intercept
    w = np.zeros(A.shape[1]) if w0 is None else w0.copy()
    sign = 2.0 * y - 1.0

    def objective(v: np.ndarray) -> float:
        return float(np.logaddexp(0.0, -sign * (A @ v)).sum() + 0.5 * (reg * v * v).sum())

    f = objective(w)
    for _ in range(max_iter):
        p = expit(A @ w)
        grad = A.T @ (p - y) + reg * w
        root = A * np.sqrt(p * (1 - p))[:, None]
        hess = root.T @ root  # numpy sends X.T @ X to syrk: half the flops of a general product
        hess[np.diag_indices_from(hess)] += reg
        step = _solve_pd(hess, grad)
        decrement = float(grad @ step)
        if decrement / 2 < tol * (1 + abs(f)):
            break
        t = 1.0  # backtracking keeps Newton stable on (nearly) separable folds
        while t > 1e-6 and objective(w - t * step) > f - 1e-4 * t * decrement:
            t /= 2
        w = w - t * step
        f = objective(w)
    return w


def _solve_pd(H: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Solve H x = g for symmetric positive-definite H (LAPACK posv, no wrapper overhead)."""
    _, x, info = dposv(H, g, lower=1)
    return x if info == 0 else np.linalg.lstsq(H, g, rcond=None)[0]


def row_basis(Xtr: np.ndarray, Xte: np.ndarray,
               centred: bool = False) -> tuple[np.ndarray, np.ndarray, Any]:
    """Training and test rows in an orthonormal basis of the training rows' span.

    Returns (Ftr, Fte, back) where ``back(v)`` maps weights on F to weights on X. An L2
    solution (for these rows or any subset of them) lies in that span, so fitting on Ftr
    (n x r, r <= n) is exact and, with n < d, cheaper. The basis is ``B = M.T @ S`` for
    spanning rows S, with M from the Cholesky factor of their Gram matrix (eigh when rows
    are nearly dependent, e.g. the same last token everywhere); only Gram-sized products
    are formed. With n >= d the rows are used as they are.
    """
    if len(Xtr) >= Xtr.shape[1]:
        return Xtr, Xte, lambda v: v
    gram = Xtr @ Xtr.T
    m = len(Xtr) - 1 if centred else len(Xtr)  # centred rows sum to zero: n-1 span them all
    try:  # Cholesky is ~20x cheaper than eigh
        L = cholesky(gram[:m, :m], lower=True)
        diag = np.abs(np.diag(L))
        if diag.min() > 1e-5 * diag.max():
            span, M = Xtr[:m], solve_triangular(L, np.eye(m), lower=True).T  # M = L^-T
            return gram[:, :m] @ M, (Xte @ span.T) @ M, lambda v: span.T @ (M @ v)
    except LinAlgError:
        pass
    lam, U = np.linalg.eigh(gram)
    keep = lam > 1e-10 * max(lam[-1], 1e-30)
    M = U[:, keep] / np.sqrt(lam[keep])
    return gram @ M, (Xte @ Xtr.T) @ M, lambda v: Xtr.T @ (M @ v)


def logreg_path(F: np.ndarray, y: np.ndarray, Cs: tuple[float, ...]) -> list[np.ndarray]:
    """Weights (intercept last) on features F for each C, ascending, warm-started."""
    A = np.hstack([F, np.ones((len(F), 1))])
    out, v = [], None
    for C in sorted(Cs):
        v = newton_logreg(A, y, C, v)
        out.append(v)
    return out


def standardise(Xtr: np.ndarray, Xte: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mu, sd = Xtr.mean(0), Xtr.std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)  # constant features (padding dims) stay finite
    return (Xtr - mu) / sd, (Xte - mu) / sd, sd
