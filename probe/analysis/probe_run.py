"""``run_probes``: probe a run folder's activations and write ``probes.json`` and the probe
directions, keeping earlier targets computed under the same settings.

Resumable per target (:mod:`probe.analysis.checkpoint`): a target's splits and control labels
depend only on its own labels and clusters, so probing targets one at a time gives the same
numbers as probing them together, and a killed ``probe probes`` rerun with the same options
recomputes only the targets it had not finished.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from probe.analysis import probe_controls as pc
from probe.analysis import targets as tg
from probe.analysis.checkpoint import Checkpoint, pack_arrays, run_fingerprint, unpack_arrays
from probe.analysis.probes import CI_METHOD, DEFAULT_CS, KINDS, probe_layers
from probe.analysis.self_correction import self_correction_rates
from probe.store.io import atomic_write_bytes, atomic_write_json
from probe.store.runlock import locks_run


@locks_run("probes")
def run_probes(run_dir: Path, targets: list[str] | None = None,
               kinds: tuple[str, ...] = KINDS, *, seed: int = 0, n_splits: int = 5,
               layers: list[int] | None = None, store: Any = None,
               progress: bool = True, position: int = -1,
               n_draws: int = pc.DEFAULT_DRAWS) -> dict[str, Any]:
    """Probe a run folder; writes ``probes.json`` and ``probe_directions.safetensors``.

    ``store`` overrides the run's ``activations/`` store (tests, notebooks). ``position``
    is a stored position label (-1: last prompt token; j >= 0: generated token j).
    """
    from safetensors.numpy import save

    pc.check_draws(n_draws)
    run_dir = Path(run_dir)
    rows = tg.read_rows(run_dir / "generations.jsonl")
    given = store is not None
    store = store if given else tg.open_store(run_dir)
    available = set(tg.key_index(store.rows, position))
    names = targets or tg.default_target_names(rows)
    built = [tg.build_target(name, rows, available) for name in names]
    start = time.perf_counter()
    ckpt = None if given else Checkpoint(run_dir, "probes", {
        "--target": names, "--kind": list(kinds), "--layer": layers, "--seed": seed,
        "--position": position, "n_splits": n_splits, "n_draws": n_draws,
        "run rows (generations.jsonl sha256)": run_fingerprint(run_dir),
        "activations (index.json sha256)": _index_fingerprint(run_dir)}, progress)
    directions: dict[str, np.ndarray] = {}
    best: dict[str, dict[str, Any]] = {}
    records: list[dict[str, Any]] = []
    try:
        for target in built:
            def one(target: tg.Target = target) -> dict[str, Any]:
                return _probe_target(store, rows, target, layers, kinds, n_splits, seed,
                                     position, n_draws, progress)
            done = one() if ckpt is None else ckpt.unit(target.name, one)
            records += done["records"]
            best.update(done["best"])
            directions.update({k: unpack_arrays(v)[0] for k, v in done["directions"].items()})
    finally:
        if ckpt is not None:
            ckpt.close()
    result: dict[str, Any] = {
        "meta": {"kinds": list(kinds), "seed": seed, "n_splits": n_splits, "position": position,
                 "cs": list(DEFAULT_CS),
                 "ci_method": CI_METHOD, "control": pc.CONTROL, "n_draws": n_draws,
                 "p_value": "one-sided permutation p over the control draws; p_fwer: "
                            "max over layers (Westfall-Young)",
                 "seconds": round(time.perf_counter() - start, 2)},
        "targets": {t.name: {**t.summary(), "layers": [], "best": best.get(t.name)}
                    for t in built},
    }
    for rec in records:
        name = rec.pop("target")
        result["targets"][name]["layers"].append(rec)
    for name, target in result["targets"].items():
        if name.startswith("self_corrected:"):  # the behaviour itself, against the placebo
            target["rates"] = self_correction_rates(rows, name.split(":")[1], seed=seed)
    directions = keep_earlier_targets(run_dir, result, directions)
    atomic_write_json(run_dir / "probes.json", result)  # NaN (undefined AUROC) -> null
    if directions:
        atomic_write_bytes(run_dir / DIRECTIONS_FILE,
                           save({k: v.astype(np.float32) for k, v in directions.items()}))
    if ckpt is not None:
        ckpt.finish()
    return result


def _probe_target(store: Any, rows: list[dict[str, Any]], target: tg.Target,
                  layers: list[int] | None, kinds: tuple[str, ...], n_splits: int, seed: int,
                  position: int, n_draws: int, progress: bool) -> dict[str, Any]:
    """One target's per-layer records, nested best layers and directions (arrays packed
    exactly, so a resumed run reads back the numbers an uninterrupted one computes)."""
    directions: dict[str, np.ndarray] = {}
    best: dict[str, dict[str, Any]] = {}
    records = probe_layers(store, rows, [target], layers, kinds=kinds, n_splits=n_splits,
                           seed=seed, progress=progress, directions_out=directions,
                           position=position, n_draws=n_draws, best_out=best)
    return {"records": records, "best": best,
            "directions": {k: pack_arrays([v]) for k, v in directions.items()}}


def _index_fingerprint(run_dir: Path) -> str | None:
    from probe.store.io import sha256_file

    index = run_dir / "activations" / "index.json"
    return sha256_file(index) if index.is_file() else None


# Settings under which two probes.json results are comparable and may share a file.
SAME_SETTINGS = ("kinds", "seed", "n_splits", "position", "cs", "ci_method", "control",
                 "n_draws")
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
