"""Is a concept direction reproducible? The two template halves' directions, compared.

Each half's direction is fitted on disjoint templates, so if the stereotyped-vs-contrast
label carries a consistent direction the two agree (positive cosine); if the direction is
noise (or lexical differences that cancel) they do not. The null is a sign-flip
permutation: under "the label carries no direction" which answer of a pair is the
stereotyped one is exchangeable, so flipping the sign of a block of templates' pair
differences leaves the distribution unchanged. Templates of each half are dealt into at most
``N_BLOCKS`` blocks (flipped together, to keep memory at blocks x hooks x d); the p-value is
one-sided: the share of ``N_DRAWS`` flipped draws whose split-half cosine is at least the
observed one. Directions with p >= 0.05 carry no verdict downstream (the analyses say so).
"""

from __future__ import annotations

from typing import Any

import numpy as np

N_BLOCKS = 8
N_DRAWS = 500
ALPHA = 0.05


def blocks_of(fold_of: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Template -> (half, block): each half's templates in sorted order, dealt round-robin."""
    out = {}
    for f in (0, 1):
        mine = sorted(t for t, h in fold_of.items() if h == f)
        out.update({t: (f, i % N_BLOCKS) for i, t in enumerate(mine)})
    return out


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.divide((a * b).sum(-1), den, out=np.zeros(den.shape), where=den > 0)


def split_half(diffs: list[np.ndarray], counts: list[int], seed: int = 0
               ) -> list[dict[str, Any]]:
    """Per hook: the cosine of the two halves' directions and its sign-flip p-value.

    ``diffs[f]`` is (blocks, hooks, d): per block of half f, the sum over its items of the
    pair difference (stereotyped minus contrast); ``counts[f]`` the items of half f.
    """
    rng = np.random.default_rng([seed, 5171])
    flips = [rng.choice([-1.0, 1.0], size=(N_DRAWS, len(D))) for D in diffs]
    out = []
    for h in range(diffs[0].shape[1]):
        a, b = (diffs[f][:, h] / max(counts[f], 1) for f in (0, 1))
        observed = float(_cos(a.sum(0), b.sum(0)))
        null = _cos(flips[0] @ a, flips[1] @ b)
        p = float((1 + np.sum(null >= observed - 1e-12)) / (1 + N_DRAWS))
        out.append({"split_half_cosine": observed, "split_half_p": p,
                    "reliable": bool(observed > 0 and p < ALPHA)})
    return out
