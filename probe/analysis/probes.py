"""Linear probes with grouped cross-validation, shuffled-label controls and bootstrap CIs.

Two probe kinds share one protocol:

- ``logreg``: standardise (fit on the training fold), L2 logistic regression with C chosen by
  an inner grouped CV (log-loss) over a few Cs, warm-started along the C path for speed.
  Its direction is ``coef / scale`` (back in activation space), unit-normalised.
- ``diffmeans``: direction ``mean(pos) - mean(neg)`` on raw activations, threshold at the
  midpoint of the projected class means of the training fold.

Outer splits are grouped by template (``StratifiedGroupKFold``), so a template is never in
both train and test. The control fits the same probe (same C) on the training labels
shuffled with a seeded permutation; ``selectivity = accuracy - control_accuracy``.
Confidence intervals are a percentile bootstrap that resamples *templates* (clusters) over
the out-of-fold predictions pooled across folds, for both accuracy and AUROC, because rows
of one template (and the same item under several conditions) are not independent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from probe.analysis import targets as tg
from probe.analysis.bootstrap import auroc, cluster_bootstrap
from probe.analysis.logreg import logreg_path, row_basis, standardise
from probe.errors import ConfigError, DataError
from probe.io import atomic_write_bytes, atomic_write_json
from probe.runlock import locks_run

KINDS = ("logreg", "diffmeans")
DEFAULT_CS = (1e-3, 1e-2, 1e-1, 1.0)
CI_METHOD = "template-cluster percentile bootstrap (95%) over pooled out-of-fold predictions"


@dataclass
class ProbeResult:
    """Cross-validated scores of one probe; ``direction`` is a unit vector (d,)."""

    kind: str
    accuracy: float
    accuracy_ci: tuple[float, float]
    auroc: float
    auroc_ci: tuple[float, float]
    control_accuracy: float
    control_auroc: float
    selectivity: float
    n: int
    n_splits: int
    direction: np.ndarray
    folds: list[dict[str, Any]] = field(default_factory=list)
    C: float | None = None

    def to_json(self) -> dict[str, Any]:
        """Everything but the direction, as plain floats."""
        return {
            "accuracy": self.accuracy, "accuracy_ci": list(self.accuracy_ci),
            "auroc": self.auroc, "auroc_ci": list(self.auroc_ci),
            "control_accuracy": self.control_accuracy, "control_auroc": self.control_auroc,
            "selectivity": self.selectivity, "n": self.n, "n_splits": self.n_splits,
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


def _choose_c(X: np.ndarray, y: np.ndarray, groups: np.ndarray, Cs: tuple[float, ...],
              inner_splits: int = 2) -> float:
    """C with the lowest mean inner-CV log-loss, inner folds grouped by template.

    X holds the outer training fold's row-span coordinates (see :func:`row_basis`),
    standardised with its statistics (re-standardising per inner fold costs more, changes
    little).
    """
    Cs = tuple(sorted(Cs))
    k = min(inner_splits, len(np.unique(groups)))
    if len(Cs) == 1 or k < 2:
        return Cs[len(Cs) // 2]
    losses = np.zeros(len(Cs))
    for tr, te in GroupKFold(n_splits=k).split(X, y, groups):
        if len(np.unique(y[tr])) < 2:
            continue
        Ftr, Fte, _ = row_basis(X[tr], X[te])  # smaller again: fewer rows than coordinates
        for i, v in enumerate(logreg_path(Ftr, y[tr], Cs)):
            losses[i] += np.mean(np.logaddexp(0, -(Fte @ v[:-1] + v[-1]) * (2 * y[te] - 1)))
    return Cs[int(np.argmin(losses))]


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
              splits: list[tuple[np.ndarray, np.ndarray]] | None = None) -> ProbeResult:
    """Cross-validate one probe on (X, y) with splits grouped by ``groups``; see module doc.

    ``Cs`` and ``inner_splits`` set the logreg inner CV (4 Cs x 2 grouped folds keeps 30
    layers x 4 targets x 300 rows x d=576 near 20 s on one core). ``splits`` reuses outer
    splits from :func:`grouped_splits` (they depend only on y and groups, not on X).
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown probe kind {kind!r}; valid: {', '.join(KINDS)}")
    # Small matrices: BLAS threads only contend (10-50x slower on a busy 2-core machine).
    with threadpool_limits(1):
        if splits is None:
            splits = grouped_splits(np.asarray(y), np.asarray(groups), n_splits, seed)
        _check_grouped(splits, np.asarray(groups))
        return _fit_probe(X, y, groups, kind, splits, seed, Cs, inner_splits, n_boot)


def _fit_probe(X: np.ndarray, y: np.ndarray, groups: np.ndarray, kind: str,
               splits: list[tuple[np.ndarray, np.ndarray]], seed: int, Cs: tuple[float, ...],
               inner_splits: int, n_boot: int) -> ProbeResult:
    X, y, groups = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=int), np.asarray(groups)
    rng = np.random.default_rng(seed)
    scores, control = np.zeros(len(y)), np.zeros(len(y))
    folds, chosen = [], []
    for i, (tr, te) in enumerate(splits):
        Xtr, Xte = X[tr], X[te]
        C = None
        if kind == "logreg":
            Xtr, Xte, _ = standardise(Xtr, Xte)
            Xtr, Xte, _ = row_basis(Xtr, Xte, centred=True)
            C = _choose_c(Xtr, y[tr], groups[tr], Cs, inner_splits)
            chosen.append(C)
        scores[te] = _fit_score(kind, Xtr, y[tr], Xte, C)
        control[te] = _fit_score(kind, Xtr, rng.permutation(y[tr]), Xte, C)
        folds.append({"fold": i, "n_train": len(tr), "n_test": len(te), "C": C,
                      "accuracy": float(np.mean((scores[te] > 0) == (y[te] == 1)))})
    C_final = max(set(chosen), key=chosen.count) if chosen else None
    cis = cluster_bootstrap(y, scores, groups, n_boot=n_boot, seed=seed)
    acc = float(np.mean((scores > 0) == (y == 1)))
    ctrl_acc = float(np.mean((control > 0) == (y == 1)))
    return ProbeResult(
        kind=kind, accuracy=acc, accuracy_ci=cis["accuracy"], auroc=auroc(y, scores),
        auroc_ci=cis["auroc"], control_accuracy=ctrl_acc, control_auroc=auroc(y, control),
        selectivity=acc - ctrl_acc, n=len(y), n_splits=len(folds),
        direction=_final_direction(kind, X, y, C_final), folds=folds, C=C_final,
    )


def probe_layers(store_or_arrays: Any, rows: list[dict[str, Any]],
                 targets: Sequence[tg.Target | str],
                 layers: list[int] | None = None, *, kinds: tuple[str, ...] = KINDS,
                 n_splits: int = 5, seed: int = 0, position: int = -1, progress: bool = True,
                 directions_out: dict[str, np.ndarray] | None = None) -> list[dict[str, Any]]:
    """Fit every probe kind on every (residual hook, target); one JSON-ready dict each.

    ``store_or_arrays`` is an activation store (``rows``, ``hook_names``, ``load``) or a
    dict ``hook -> (n, d) array`` aligned with ``rows``. ``targets`` are built targets or
    names (built here against the store's keys). Skipped targets are not fit.
    Unit directions go into ``directions_out`` as ``"<target>/<kind>/<hook>"`` when given.
    """
    store = (tg.ArraySource(store_or_arrays, rows) if isinstance(store_or_arrays, dict)
             else store_or_arrays)
    index = tg.key_index(store.rows, position)
    built = [tg.build_target(t, rows, set(index)) if isinstance(t, str) else t for t in targets]
    live = [t for t in built if t.skipped is None]
    hooks = tg.select_hooks(store.hook_names, layers)
    out = []
    splits: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    bar = tqdm(total=len(hooks) * len(live), desc="probes", disable=not progress)
    for hook in hooks:
        X = tg.load_matrix(store, hook, position)
        for target in live:
            Xt = X[_row_indices(index, target)]
            if target.name not in splits:  # same for every layer and kind
                splits[target.name] = grouped_splits(target.y, target.groups, n_splits, seed)
            record: dict[str, Any] = {"target": target.name, "hook": hook,
                                      "layer": tg.hook_layer(hook)}
            for kind in kinds:
                res = fit_probe(Xt, target.y, target.groups, kind=kind, seed=seed,
                                splits=splits[target.name])
                record[kind] = res.to_json()
                if directions_out is not None:
                    directions_out[f"{target.name}/{kind}/{hook}"] = res.direction
            out.append(record)
            bar.update()
    bar.close()
    return out


def _row_indices(index: dict[tg.Key, int], target: tg.Target) -> list[int]:
    missing = [k for k in target.keys if k not in index]
    if missing:
        raise DataError(f"target {target.name}: {len(missing)} rows have no activations "
                        f"(first: {missing[0]}); build targets with available=key_index(...)")
    return [index[k] for k in target.keys]


@locks_run("probes")
def run_probes(run_dir: Path, targets: list[str] | None = None,
               kinds: tuple[str, ...] = KINDS, *, seed: int = 0, n_splits: int = 5,
               layers: list[int] | None = None, store: Any = None,
               progress: bool = True, position: int = -1) -> dict[str, Any]:
    """Probe a run folder; writes ``probes.json`` and ``probe_directions.safetensors``.

    ``store`` overrides the run's ``activations/`` store (tests, notebooks). ``position``
    is a stored position label (-1: last prompt token; j >= 0: generated token j).
    """
    from safetensors.numpy import save

    run_dir = Path(run_dir)
    rows = tg.read_rows(run_dir / "generations.jsonl")
    store = store if store is not None else tg.open_store(run_dir)
    available = set(tg.key_index(store.rows, position))
    names = targets or tg.default_target_names(rows)
    built = [tg.build_target(name, rows, available) for name in names]
    start = time.perf_counter()
    directions: dict[str, np.ndarray] = {}
    records = probe_layers(store, rows, built, layers, kinds=kinds, n_splits=n_splits,
                           seed=seed, progress=progress, directions_out=directions,
                           position=position)
    result: dict[str, Any] = {
        "meta": {"kinds": list(kinds), "seed": seed, "n_splits": n_splits, "position": position,
                 "cs": list(DEFAULT_CS),
                 "ci_method": CI_METHOD, "control": "same probe on seeded shuffled train labels",
                 "seconds": round(time.perf_counter() - start, 2)},
        "targets": {t.name: {**t.summary(), "layers": []} for t in built},
    }
    for rec in records:
        name = rec.pop("target")
        result["targets"][name]["layers"].append(rec)
    directions = keep_earlier_targets(run_dir, result, directions)
    atomic_write_json(run_dir / "probes.json", result)  # NaN (undefined AUROC) -> null
    if directions:
        atomic_write_bytes(run_dir / DIRECTIONS_FILE,
                           save({k: v.astype(np.float32) for k, v in directions.items()}))
    return result


# Settings under which two probes.json results are comparable and may share a file.
SAME_SETTINGS = ("kinds", "seed", "n_splits", "position", "cs", "ci_method", "control")
DIRECTIONS_FILE = "probe_directions.safetensors"


def keep_earlier_targets(run_dir: Path, result: dict[str, Any],
                         directions: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Add to ``result`` (in place) the targets of an earlier probes.json that this call did
    not recompute, so ``probe probes --target X`` adds X instead of dropping the rest; and
    return the directions with theirs. Earlier results under other settings (seed, kinds,
    position...) are not mixed in: they are replaced, and ``meta.replaced`` says so."""
    from safetensors.numpy import load_file

    path = run_dir / "probes.json"
    if not path.is_file():
        return directions
    earlier = json.loads(path.read_text(encoding="utf-8"))
    old_meta = earlier.get("meta", {})
    if any(old_meta.get(k) != result["meta"].get(k) for k in SAME_SETTINGS):
        result["meta"]["replaced"] = sorted(earlier.get("targets", {}))
        return directions
    kept = {n: t for n, t in earlier.get("targets", {}).items() if n not in result["targets"]}
    result["targets"] = {**kept, **result["targets"]}
    old_dirs = (load_file(str(run_dir / DIRECTIONS_FILE))
                if (run_dir / DIRECTIONS_FILE).is_file() else {})
    return {**{k: v for k, v in old_dirs.items() if k.split("/")[0] in kept}, **directions}
