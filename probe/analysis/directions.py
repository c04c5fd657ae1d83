"""Self-correction directions: how an instruction moves the residual stream, layer by layer.

For an instruction condition I and the baseline B, the direction at a hook is the mean over
paired items (same ``item_id`` cached under both) of ``x_I - x_B``: the raw mean shift, not
normalised, so steering can add it at its natural size. Against the bias direction ``b``
(unit, pointing to the *biased* answer; the ``biased_answer:<baseline>`` probe's diffmeans or
logreg direction, learnt on baseline rows only so that it cannot encode the instruction
itself) the shift ``s`` splits into ``along = s . b`` (negative: the instruction moves the
representation away from the biased answer) and the orthogonal remainder ``|s - along b|``
(what the instruction adds on top). ``along_gap_units`` rescales ``along`` by the distance
between the biased and unbiased class means along ``b``: -1 would move a biased item's
representation all the way to the unbiased mean.

``per_kind`` is in-sample (every item and template enters both vectors); ``heldout``
(:mod:`probe.analysis.direction_controls`) is the cross-fitted cosine with its interval and
nulls, the number to report. Only BBQ items enter the shift.

Outputs: ``directions.json`` ``{"pairs": {"<I>-<B>": {...}}}`` and
``directions.safetensors`` keyed ``"<I>-<B>/<hook>"``; both are merged, not overwritten,
so each instruction can be computed on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from probe.analysis import targets as tg
from probe.analysis.direction_controls import heldout_cosines
from probe.errors import DataError
from probe.presentation.plots import pyplot, save_figure
from probe.store.io import atomic_write_bytes, atomic_write_json, read_json
from probe.store.runlock import locks_run

BIAS_KINDS = ("diffmeans", "logreg")


def pair_name(instruction: str, baseline: str = tg.BASELINE) -> str:
    """The key prefix of one instruction-vs-baseline pair."""
    return f"{instruction}-{baseline}"


def paired_rows(store_rows: list[dict[str, Any]], instruction: str,
                baseline: str = tg.BASELINE, position: int = -1) -> tuple[list[int], list[int]]:
    """Store row indices (instruction, baseline) of items cached under both, item-aligned
    (at a generated-token ``position``, both answers must reach it)."""
    index = tg.key_index(store_rows, position)
    both = {i for i, c in index if c == instruction} & {i for i, c in index if c == baseline}
    items = sorted(both)
    return [index[(i, instruction)] for i in items], [index[(i, baseline)] for i in items]


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def shift_stats(X_instr: np.ndarray, X_base: np.ndarray, bias: dict[str, np.ndarray],
                gaps: dict[str, float] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Mean paired shift and its geometry against each bias direction in ``bias``.

    ``X_instr`` and ``X_base`` are item-aligned (n, d). ``gaps`` holds, per kind, the
    distance between biased and unbiased class means along that (unit) direction.
    """
    diffs = X_instr - X_base
    shift = diffs.mean(0)
    norm = float(np.linalg.norm(shift))
    stats: dict[str, Any] = {
        "n_pairs": len(diffs), "norm": norm,
        "rel_norm": norm / float(np.linalg.norm(X_base, axis=1).mean() or 1.0),
        "per_kind": {},
    }
    for kind, direction in bias.items():
        b = _unit(np.asarray(direction, dtype=np.float64))
        along = float(shift @ b)
        gap = (gaps or {}).get(kind)
        stats["per_kind"][kind] = {
            "cosine": along / norm if norm > 0 else 0.0,
            "along": along,
            "orth_norm": float(np.linalg.norm(shift - along * b)),
            "frac_items_away": float(np.mean(diffs @ b < 0)),
            "along_gap_units": along / gap if gap else None,
        }
    return shift, stats


def _bias_directions(run_dir: Path, bias: tg.Target, X: np.ndarray, index: dict[tg.Key, int],
                     hook: str) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Bias directions for one hook (probe file, else diffmeans on the fly) and class gaps."""
    if bias.skipped is not None:
        return {}, {}
    Xb = X[[index[k] for k in bias.keys]]
    mu_pos, mu_neg = Xb[bias.y == 1].mean(0), Xb[bias.y == 0].mean(0)
    dirs = {"diffmeans": _unit(mu_pos - mu_neg)}
    saved = run_dir / "probe_directions.safetensors"
    if saved.exists():
        from safetensors.numpy import load_file

        stored = load_file(str(saved))
        for kind in BIAS_KINDS:
            key = f"{bias.name}/{kind}/{hook}"
            if key in stored:
                dirs[kind] = stored[key].astype(np.float64)
    return dirs, {k: float((mu_pos - mu_neg) @ _unit(d)) for k, d in dirs.items()}


@locks_run("probes")
def compute_directions(run_dir: Path, instruction: str, baseline: str = tg.BASELINE, *,
                       bias_target: str | None = None, store: Any = None,
                       layers: list[int] | None = None, position: int = -1) -> dict[str, Any]:
    """Per-layer self-correction direction of one instruction; merges into the run's files.

    Returns this pair's entry of ``directions.json``. ``bias_target`` defaults to
    ``biased_answer:<baseline>``; ``store`` overrides ``activations/``.
    """
    bias_target = bias_target or f"biased_answer:{baseline}"
    run_dir = Path(run_dir)
    rows = tg.read_rows(run_dir / "generations.jsonl")
    store = store if store is not None else tg.open_store(run_dir)
    index = tg.key_index(store.rows, position)
    idx_i, idx_b = paired_rows(store.rows, instruction, baseline, position)
    # BBQ items only: a Winogender shift has no biased answer to be measured against
    group_of = {r["item_id"]: str(r["group"]) for r in rows
                if str(r.get("benchmark", "")).startswith("bbq")}
    kept = [(i, b) for i, b in zip(idx_i, idx_b, strict=True)
            if store.rows[i]["item_id"] in group_of]
    idx_i, idx_b = [i for i, _ in kept], [b for _, b in kept]
    if not idx_i:
        raise DataError(f"no BBQ items have activations under both {instruction!r} and "
                        f"{baseline!r}", str(run_dir))
    diff_groups = [group_of[store.rows[i]["item_id"]] for i in idx_i]
    bias = tg.build_target(bias_target, rows, set(index))
    entry: dict[str, Any] = {"instruction": instruction, "baseline": baseline,
                             "n_pairs": len(idx_i), "bias_target": bias_target,
                             "bias_skipped": bias.skipped, "layers": []}
    vectors: dict[str, np.ndarray] = {}
    for hook in tg.select_hooks(store.hook_names, layers):
        X = tg.load_matrix(store, hook, position)
        dirs, gaps = _bias_directions(run_dir, bias, X, index, hook)
        shift, stats = shift_stats(X[idx_i], X[idx_b], dirs, gaps)
        vectors[f"{pair_name(instruction, baseline)}/{hook}"] = shift
        heldout = None if bias.skipped is not None else heldout_cosines(
            X[idx_i] - X[idx_b], diff_groups, X[[index[k] for k in bias.keys]], bias.y,
            [str(g) for g in bias.groups])
        entry["layers"].append({"hook": hook, "layer": tg.hook_layer(hook), **stats,
                                "heldout": heldout})
    _merge_outputs(run_dir, pair_name(instruction, baseline), entry, vectors)
    return entry


def _merge_outputs(run_dir: Path, name: str, entry: dict[str, Any],
                   vectors: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import load_file, save

    json_path, st_path = run_dir / "directions.json", run_dir / "directions.safetensors"
    data = read_json(json_path) if json_path.exists() else {}
    data.setdefault("pairs", {})[name] = entry
    atomic_write_json(json_path, data)
    stored = load_file(str(st_path)) if st_path.exists() else {}
    stored.update({k: v.astype(np.float32) for k, v in vectors.items()})
    atomic_write_bytes(st_path, save(stored))


def load_direction(run_dir: Path, instruction: str, hook: str,
                   baseline: str = tg.BASELINE) -> Any:
    """The raw mean shift (instruction - baseline) at ``hook`` as a float32 torch tensor (d,)."""
    from safetensors.torch import load_file

    path = Path(run_dir) / "directions.safetensors"
    if not path.exists():
        raise DataError("no directions computed yet (run `probe probes` first)", str(path))
    stored = load_file(str(path))
    key = f"{pair_name(instruction, baseline)}/{hook}"
    if key not in stored:
        raise DataError(f"no direction {key!r}; have {len(stored)} others", str(path))
    return stored[key]


def plot_cosines(directions_json: Path | dict[str, Any], out_png: Path) -> Path:
    """Cosine of each pair's shift with the bias direction, and the shift size, per layer."""
    plt = pyplot()

    data = directions_json if isinstance(directions_json, dict) else read_json(directions_json)
    fig, (ax_cos, ax_norm) = plt.subplots(1, 2, figsize=(12, 4.2))
    for i, (name, pair) in enumerate(data["pairs"].items()):
        color = f"C{i % 10}"
        layers = [rec["layer"] for rec in pair["layers"]]
        held = [rec.get("heldout") or {} for rec in pair["layers"]]
        if any(held):  # held-out cosine with its interval, and the shuffled-condition band
            nan2 = [np.nan, np.nan]
            ci = np.array([h.get("cosine_ci") or nan2 for h in held], dtype=float)
            band = np.array([(h.get("control") or {}).get("shuffled_condition_5_95") or nan2
                             for h in held], dtype=float)
            ax_cos.fill_between(layers, band[:, 0], band[:, 1], color="grey", alpha=0.3,
                                linewidth=0, label="shuffled-condition control" if i == 0
                                else None)
            ax_cos.errorbar(layers, [h.get("cosine", np.nan) for h in held],
                            yerr=np.abs(ci.T - [h.get("cosine", np.nan) for h in held]),
                            color=color, marker=".", capsize=2, label=f"{name} (held out)")
        else:  # older files: the in-sample cosines
            for kind, style in zip(BIAS_KINDS, ("-", "--"), strict=True):
                cos = [rec["per_kind"].get(kind, {}).get("cosine", np.nan)
                       for rec in pair["layers"]]
                if not np.all(np.isnan(cos)):
                    ax_cos.plot(layers, cos, style, color=color, label=f"{name} ({kind})")
        ax_norm.plot(layers, [rec["rel_norm"] for rec in pair["layers"]], color=color, label=name)
    ax_cos.axhline(0, color="k", linewidth=0.8)
    ax_cos.set(title="Instruction shift vs bias direction\n(< 0: away from the biased answer)",
               xlabel="layer (-1 = embeddings)", ylabel="cosine(shift, bias direction)")
    ax_norm.set(title="Size of the instruction shift", xlabel="layer (-1 = embeddings)",
                ylabel="|mean shift| / mean |baseline activation|")
    for ax in (ax_cos, ax_norm):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return save_figure(fig, out_png)
