"""Linear probes with grouped cross-validation, shuffled-label controls and bootstrap CIs.

Two probe kinds share one protocol:

- ``logreg``: standardise (fit on the training fold), L2 logistic regression with C chosen by
  an inner grouped CV (log-loss) over a few Cs, warm-started along the C path for speed.
  Its direction is ``coef / scale`` (back in activation space), unit-normalised.
- ``diffmeans``: direction ``mean(pos) - mean(neg)`` on raw activations, threshold at the
  midpoint of the projected class means of the training fold.

Outer splits are grouped by template (``StratifiedGroupKFold``), so a template is never in
both train and test. Controls (:mod:`probe.analysis.probe_controls`): the same probe (same
folds, same C) fitted on >= 100 control tasks whose random labels are constant per template
cluster; ``control_accuracy`` is their mean, ``selectivity = accuracy - control_accuracy``,
``p_value`` the permutation p, ``p_fwer`` its max-over-layers correction, and each target's
``best`` layer is chosen on held-out folds (nested), never the max over the same folds.
Confidence intervals are a percentile bootstrap that resamples *templates* (clusters) over
the out-of-fold predictions pooled across folds, for both accuracy and AUROC, because rows
of one template (and the same item under several conditions) are not independent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from probe.analysis import probe_controls as pc
from probe.analysis import targets as tg
from probe.analysis.bootstrap import auroc, cluster_bootstrap
from probe.analysis.logreg import logreg_path, row_basis, standardise
from probe.errors import ConfigError, DataError

KINDS = ("logreg", "diffmeans")
DEFAULT_CS = (1e-3, 1e-2, 1e-1, 1.0)
CI_METHOD = "template-cluster percentile bootstrap (95%) over pooled out-of-fold predictions"


@dataclass
class ProbeResult:
    """Cross-validated scores of one probe; ``direction`` is a unit vector (d,).

    ``scores`` (out-of-fold decision values), ``inner`` (inner-CV accuracy per outer fold)
    and ``null_scores`` (the control draws' out-of-fold scores) feed the across-layer
    controls in :mod:`probe.analysis.probe_controls`; they are not written to JSON.
    """

    kind: str
    accuracy: float
    accuracy_ci: tuple[float, float]
    auroc: float
    auroc_ci: tuple[float, float]
    control_accuracy: float
    control_auroc: float | None
    selectivity: float
    p_value: float
    control: dict[str, Any]
    n: int
    n_splits: int
    direction: np.ndarray
    n_templates: int = 0
    folds: list[dict[str, Any]] = field(default_factory=list)
    C: float | None = None
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    inner: np.ndarray = field(default_factory=lambda: np.zeros(0))
    null_scores: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    null_accuracy: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def to_json(self) -> dict[str, Any]:
        """Everything but the direction and the arrays, as plain floats."""
        return {
            "accuracy": self.accuracy, "accuracy_ci": list(self.accuracy_ci),
            "auroc": self.auroc, "auroc_ci": list(self.auroc_ci),
            "control_accuracy": self.control_accuracy, "control_auroc": self.control_auroc,
            "selectivity": self.selectivity, "p_value": self.p_value, "control": self.control,
            "n": self.n, "n_templates": self.n_templates, "n_splits": self.n_splits,
            "C": self.C, "folds": self.folds,
        }


def grouped_splits(y: np.ndarray, groups: np.ndarray, n_splits: int,
                   seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified splits grouped by template; asserts no template is on both sides."""
    n_groups = len(np.unique(groups))
    k = min(n_splits, n_groups)
    if k < 2:
        raise ConfigError(f"grouped CV needs at least 2 templates, got {n_groups}")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    splits = list(splitter.split(np.zeros(len(y)), y, groups))
    _check_grouped(splits, groups)
    return splits


def _check_grouped(splits: list[tuple[np.ndarray, np.ndarray]], groups: np.ndarray) -> None:
    for train, test in splits:
        # The whole point of grouping: a shared template would leak its wording into test.
        assert not set(groups[train]) & set(groups[test]), "template in both train and test"


def _fit_diffmeans(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """(weights, bias) of the difference-of-means probe; score = X @ w + b."""
    mu_pos, mu_neg = X[y == 1].mean(0), X[y == 0].mean(0)
    w = mu_pos - mu_neg
    return w, -float((mu_pos + mu_neg) @ w) / 2


def _inner_fit(kind: str, X: np.ndarray, y: np.ndarray, groups: np.ndarray,
               Cs: tuple[float, ...], inner_splits: int = 2) -> tuple[float | None, float]:
    """(C, inner-CV accuracy at that C) on an outer training fold, inner folds grouped.

    logreg: C with the lowest mean inner log-loss (X holds the fold's standardised
    row-span coordinates, see :func:`row_basis`; re-standardising per inner fold costs
    more, changes little). The accuracy ranks layers for the nested best-layer choice.
    """
    Cs = tuple(sorted(Cs))
    k = min(inner_splits, len(np.unique(groups)))
    C_mid = Cs[len(Cs) // 2] if kind == "logreg" else None
    if k < 2:
        return C_mid, float("nan")
    losses, hits = np.zeros(len(Cs)), np.zeros(len(Cs))
    for tr, te in GroupKFold(n_splits=k).split(X, y, groups):
        if kind == "diffmeans":
            hits[0] += np.sum((_fit_score(kind, X[tr], y[tr], X[te], None) > 0) == (y[te] == 1))
            continue
        if len(np.unique(y[tr])) < 2:
            continue
        Ftr, Fte, _ = row_basis(X[tr], X[te])  # smaller again: fewer rows than coordinates
        for i, v in enumerate(logreg_path(Ftr, y[tr], Cs)):
            s = Fte @ v[:-1] + v[-1]
            losses[i] += np.mean(np.logaddexp(0, -s * (2 * y[te] - 1)))
            hits[i] += np.sum((s > 0) == (y[te] == 1))
    if kind == "diffmeans":
        return None, float(hits[0] / len(y))
    best = int(np.argmin(losses)) if len(Cs) > 1 else 0
    return Cs[best], float(hits[best] / len(y))


def _fit_score(kind: str, Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray,
               C: float | None) -> np.ndarray:
    """Decision scores on Xte (>0 means class 1) of a probe fit on (Xtr, ytr)."""
    if len(np.unique(ytr)) < 2:  # a degenerate training fold predicts its only class
        return np.full(len(Xte), 1.0 if ytr[0] == 1 else -1.0)
    if kind == "diffmeans":
        w, b = _fit_diffmeans(Xtr, ytr)
        return Xte @ w + b
    assert C is not None
    v = logreg_path(Xtr, ytr, (C,))[0]
    return Xte @ v[:-1] + v[-1]


def _final_direction(kind: str, X: np.ndarray, y: np.ndarray, C: float | None) -> np.ndarray:
    """Unit direction from a fit on all rows (positive = class 1), in raw activation space."""
    if kind == "diffmeans":
        w = _fit_diffmeans(X, y)[0]
    else:
        assert C is not None
        Xs, _, sd = standardise(X, X[:0])
        F, _, back = row_basis(Xs, Xs[:0], centred=True)
        w = back(logreg_path(F, y, (C,))[0][:-1]) / sd
    norm = np.linalg.norm(w)
    return w / norm if norm > 0 else w


def fit_probe(X: np.ndarray, y: np.ndarray, groups: np.ndarray, *, kind: str = "logreg",
              n_splits: int = 5, seed: int = 0, Cs: tuple[float, ...] = DEFAULT_CS,
              inner_splits: int = 2, n_boot: int = 1000,
              splits: list[tuple[np.ndarray, np.ndarray]] | None = None,
              controls: np.ndarray | None = None,
              n_draws: int = pc.DEFAULT_DRAWS) -> ProbeResult:
    """Cross-validate one probe on (X, y) with splits grouped by ``groups``; see module doc.

    ``Cs`` and ``inner_splits`` set the logreg inner CV. ``splits`` reuses outer splits
    from :func:`grouped_splits`; ``controls`` (draws, n) reuses control-task labels from
    :func:`probe_controls.control_labels` (both depend only on y and groups, not on X, so
    every layer shares them and the max-over-layers null is valid).
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown probe kind {kind!r}; valid: {', '.join(KINDS)}")
    # Small matrices: BLAS threads only contend (10-50x slower on a busy 2-core machine).
    with threadpool_limits(1):
        if splits is None:
            splits = grouped_splits(np.asarray(y), np.asarray(groups), n_splits, seed)
        _check_grouped(splits, np.asarray(groups))
        if controls is None:
            controls = pc.control_labels(np.asarray(y), np.asarray(groups), n_draws, seed)
        return _fit_probe(X, y, groups, kind, splits, seed, Cs, inner_splits, n_boot, controls)


def _fit_probe(X: np.ndarray, y: np.ndarray, groups: np.ndarray, kind: str,
               splits: list[tuple[np.ndarray, np.ndarray]], seed: int, Cs: tuple[float, ...],
               inner_splits: int, n_boot: int, controls: np.ndarray) -> ProbeResult:
    X, y, groups = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=int), np.asarray(groups)
    scores, null = np.zeros(len(y)), np.zeros(controls.shape)
    folds, chosen, inner = [], [], []
    for i, (tr, te) in enumerate(splits):
        Xtr, Xte = X[tr], X[te]
        if kind == "logreg":
            Xtr, Xte, _ = standardise(Xtr, Xte)
            Xtr, Xte, _ = row_basis(Xtr, Xte, centred=True)
        C, inner_acc = _inner_fit(kind, Xtr, y[tr], groups[tr], Cs, inner_splits)
        chosen.append(C)
        inner.append(inner_acc)
        scores[te] = _fit_score(kind, Xtr, y[tr], Xte, C)
        for b, yc in enumerate(controls):  # the control tasks: same fold, same C
            null[b, te] = _fit_score(kind, Xtr, yc[tr], Xte, C)
        folds.append({"fold": i, "n_train": len(tr), "n_test": len(te), "C": C,
                      "inner_accuracy": inner_acc,
                      "accuracy": float(np.mean((scores[te] > 0) == (y[te] == 1)))})
    C_final = max(set(chosen), key=chosen.count) if kind == "logreg" else None
    cis = cluster_bootstrap(y, scores, groups, n_boot=n_boot, seed=seed)
    acc = float(np.mean((scores > 0) == (y == 1)))
    null_acc = np.mean((null > 0) == (controls == 1), axis=1)
    null_auc = np.array([auroc(yc, s) for yc, s in zip(controls, null, strict=True)])
    ctrl_acc = float(np.mean(null_acc))
    summary = pc.null_summary(null_acc, null_auc)
    return ProbeResult(
        kind=kind, accuracy=acc, accuracy_ci=cis["accuracy"], auroc=auroc(y, scores),
        auroc_ci=cis["auroc"], control_accuracy=ctrl_acc,
        control_auroc=summary["auroc_mean"], selectivity=acc - ctrl_acc,
        p_value=pc.p_value(acc, null_acc), control=summary, n=len(y), n_splits=len(folds),
        direction=_final_direction(kind, X, y, C_final), folds=folds, C=C_final,
        scores=scores, inner=np.array(inner), null_scores=null, null_accuracy=null_acc,
        n_templates=len(np.unique(groups)),
    )


def probe_layers(store_or_arrays: Any, rows: list[dict[str, Any]],
                 targets: Sequence[tg.Target | str],
                 layers: list[int] | None = None, *, kinds: tuple[str, ...] = KINDS,
                 n_splits: int = 5, seed: int = 0, position: int = -1, progress: bool = True,
                 directions_out: dict[str, np.ndarray] | None = None,
                 n_draws: int = pc.DEFAULT_DRAWS,
                 best_out: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Fit every probe kind on every (residual hook, target); one JSON-ready dict each.

    ``store_or_arrays`` is an activation store (``rows``, ``hook_names``, ``load``) or a
    dict ``hook -> (n, d) array`` aligned with ``rows``. ``targets`` are built targets or
    names (built here against the store's keys). Skipped targets are not fit.
    Unit directions go into ``directions_out`` as ``"<target>/<kind>/<hook>"`` when given;
    the nested best layer of each target and kind into ``best_out[target][kind]``.
    """
    store = (tg.ArraySource(store_or_arrays, rows) if isinstance(store_or_arrays, dict)
             else store_or_arrays)
    index = tg.key_index(store.rows, position)
    built = [tg.build_target(t, rows, set(index)) if isinstance(t, str) else t for t in targets]
    live = [t for t in built if t.skipped is None]
    hooks = tg.select_hooks(store.hook_names, layers)
    out = []
    # splits and control labels depend only on (y, groups): shared by every layer and kind
    splits = {t.name: grouped_splits(t.y, t.groups, n_splits, seed) for t in live}
    controls = {t.name: pc.control_labels(t.y, t.groups, n_draws, seed) for t in live}
    fits: dict[tuple[str, str], list[ProbeResult]] = {}
    bar = tqdm(total=len(hooks) * len(live), desc="probes", disable=not progress)
    for hook in hooks:
        X = tg.load_matrix(store, hook, position)
        for target in live:
            Xt = X[_row_indices(index, target)]
            record: dict[str, Any] = {"target": target.name, "hook": hook,
                                      "layer": tg.hook_layer(hook)}
            for kind in kinds:
                res = fit_probe(Xt, target.y, target.groups, kind=kind, seed=seed,
                                splits=splits[target.name], controls=controls[target.name])
                record[kind] = res.to_json()
                fits.setdefault((target.name, kind), []).append(res)
                if directions_out is not None:
                    directions_out[f"{target.name}/{kind}/{hook}"] = res.direction
            out.append(record)
            bar.update()
    bar.close()
    _across_layers(out, fits, {t.name: t for t in live}, splits, controls, seed, best_out)
    return out


def _across_layers(records: list[dict[str, Any]], fits: dict[tuple[str, str], list[ProbeResult]],
                   live: dict[str, tg.Target], splits: dict[str, list[Any]],
                   controls: dict[str, np.ndarray], seed: int,
                   best_out: dict[str, dict[str, Any]] | None) -> None:
    """Add ``p_fwer`` (max over layers) to each record; nested best layers to ``best_out``."""
    for (name, kind), results in fits.items():
        mine = [r for r in records if r["target"] == name]
        p_fwer = pc.fwer_p_values(np.array([r.accuracy for r in results]),
                                  np.stack([r.null_accuracy for r in results]))
        for rec, p in zip(mine, p_fwer, strict=True):
            rec[kind]["p_fwer"] = float(p)
        if best_out is not None:
            target = live[name]
            best_out.setdefault(name, {})[kind] = pc.nested_best(
                [r["layer"] for r in mine], np.stack([r.inner for r in results]),
                np.stack([r.scores for r in results]),
                np.stack([r.null_scores for r in results]), splits[name], target.y,
                target.groups, controls[name], seed=seed)


def _row_indices(index: dict[tg.Key, int], target: tg.Target) -> list[int]:
    missing = [k for k in target.keys if k not in index]
    if missing:
        raise DataError(f"target {target.name}: {len(missing)} rows have no activations "
                        f"(first: {missing[0]}); build targets with available=key_index(...)")
    return [index[k] for k in target.keys]
