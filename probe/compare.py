"""Compare runs (one per model): the study's central figure and table.

For each run and each instruct/negate condition, the self-correction gain is the instructed
metric minus the baseline one (BBQ bias score and accuracy, ambiguous and disambiguated),
set against model size and base-vs-aligned, with the run's probe and patching peaks when
those analyses exist. Model size comes from run.json provenance when recorded, else from
the safetensors headers of a locally available copy, else from a ``--size`` override.
"""

from __future__ import annotations

import csv
import io
import json
import math
import struct
from collections.abc import Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from probe.analysis_summary import patching_summary, peak_effect, probe_best, read_analysis
from probe.errors import ConfigError
from probe.io import atomic_write_json, atomic_write_text
from probe.plots import condition_order, pyplot, run_metrics
from probe.runs import RunFolder

INSTRUCTION_GLOBS = ("instruct-*", "negate-*")
GAINS = [(f"gain_{m}_{c}", m, c) for m in ("bias_score", "accuracy") for c in ("ambig", "disambig")]
SIZE_KEYS = ("n_params", "num_parameters", "param_count", "n_parameters")
# Prompt text that only a chat template produces (fallback when run.json does not say).
CHAT_MARKERS = ("<|im_start|>", "[INST]", "<|start_header_id|>", "<start_of_turn>", "<|user|>")
SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}


def parse_size(text: str) -> int:
    """A parameter count from "135M", "1.7B", "360000000"; ConfigError otherwise."""
    raw = text.strip().lower()
    scale = SUFFIXES.get(raw[-1:], 1.0)
    try:
        value = float(raw[:-1] if raw[-1:] in SUFFIXES else raw) * scale
    except ValueError:
        raise ConfigError(
            f"--size {text!r}: expected a count like 135M, 1.7B or 360000000") from None
    return int(value)


def safetensors_params(folder: Path) -> int | None:
    """Parameters stored in a folder's safetensors files, read from their headers only."""
    files = sorted(folder.glob("*.safetensors"))
    total = 0
    for file in files:
        with file.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        total += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    return total or None


def model_dirs(name: str) -> list[Path]:
    """Local folders holding the model's files (no download is ever attempted)."""
    from probe.models import EMBEDDED, cache_root  # deferred: it imports torch

    if Path(name).is_dir():
        return [Path(name)]
    if name in EMBEDDED:
        return sorted(p for p in (cache_root() / "models").glob(f"{name}-*")
                      if (p / "config.json").is_file())
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # hub id shapes vary; any failure here just means "not cached"
        return []
    return [Path(found).parent] if isinstance(found, str) else []


def _recorded(folder: RunFolder, keys: Sequence[str]) -> Any:
    prov = folder.provenance
    for place in (prov, prov.get("model") or {}, folder.config):
        for key in keys:
            if isinstance(place, dict) and place.get(key) is not None:
                return place[key]
    return None


def model_size(folder: RunFolder, overrides: dict[str, int]) -> tuple[int | None, str]:
    """(parameter count, where it came from) for a run's model."""
    name = str(folder.config.get("model"))
    for key in (folder.path.name, str(folder.path), name):
        if key in overrides:
            return overrides[key], "override"
    recorded = _recorded(folder, SIZE_KEYS)
    if isinstance(recorded, (int, float)):
        return int(recorded), "run.json"
    for path in model_dirs(name):
        count = safetensors_params(path)
        if count:
            return count, "safetensors"
    return None, "unknown"


def chat_kind(folder: RunFolder) -> tuple[str | None, str]:
    """("aligned/chat" or "base", source): a chat template present means aligned/chat."""
    recorded = _recorded(folder, ("chat",))
    if isinstance(recorded, bool):
        return ("aligned/chat" if recorded else "base"), "run.json"
    for path in model_dirs(str(folder.config.get("model"))):
        tok = path / "tokenizer_config.json"
        has = (path / "chat_template.jinja").is_file() or (
            tok.is_file() and "chat_template" in json.loads(tok.read_text(encoding="utf-8")))
        return ("aligned/chat" if has else "base"), "tokenizer"
    if folder.generations.is_file():
        with folder.generations.open(encoding="utf-8") as fh:
            first = json.loads(fh.readline() or "{}")
        prompt = str(first.get("prompt", ""))
        return ("aligned/chat" if any(m in prompt for m in CHAT_MARKERS) else "base"), "prompt"
    return None, "unknown"


def _diff(a: Any, b: Any) -> float | None:
    ok = all(isinstance(v, (int, float)) for v in (a, b))
    return float(a) - float(b) if ok else None


def _gains(metrics: dict[str, Any], conds: list[str]) -> list[dict[str, Any]]:
    blocks = metrics.get("conditions", {})
    base = blocks.get("baseline", {})
    rows = []
    for cond in conds:
        if not any(fnmatchcase(cond, g) for g in INSTRUCTION_GLOBS):
            continue
        row: dict[str, Any] = {"condition": cond}
        for key, metric, ctx in GAINS:
            cells = [(b.get("bbq") or {}).get("overall", {}).get(ctx, {}) for b in
                     (blocks[cond], base)]
            row[key] = _diff(cells[0].get(metric), cells[1].get(metric))
        row["gain_r_bls"] = _diff((blocks[cond].get("winogender") or {}).get("r_bls"),
                                  (base.get("winogender") or {}).get("r_bls"))
        rows.append(row)
    return rows


def _peaks(folder: RunFolder) -> dict[str, Any]:
    """Best probe (biased_answer target preferred) and peak patching effect, when present.

    The patching peak is the attn/mlp component of largest denoising effect; files of an
    unknown shape fall back to :func:`probe.analysis_summary.peak_effect`.
    """
    best = probe_best(read_analysis(folder.path / "probes.json")[0])
    pick = [b for b in best if b["target"] == "biased_answer"] or best
    top = max(pick, key=lambda b: b["accuracy"]) if pick else {}
    data = read_analysis(folder.path / "patching.json")[0]
    summary = patching_summary(data)
    patch = (summary or {}).get("peak") or (peak_effect(data) if summary is None else None) or {}
    return {"probe_target": top.get("target"), "probe_layer": top.get("layer"),
            "probe_accuracy": top.get("accuracy"), "patching_peak": patch.get("value"),
            "patching_peak_layer": patch.get("layer"),
            "patching_peak_component": patch.get("component", patch.get("path"))}


def compare_runs(run_dirs: Sequence[str | Path],
                 sizes: dict[str, int] | None = None) -> dict[str, Any]:
    """Per run: model, size, base/aligned, peaks; ``rows``: one per (run, instruction)."""
    runs, rows = [], []
    for run_dir in run_dirs:
        folder = RunFolder.open(run_dir)
        metrics = run_metrics(folder)
        n_params, size_src = model_size(folder, sizes or {})
        kind, kind_src = chat_kind(folder)
        info = {"run": str(folder.path), "model": folder.config.get("model"),
                "n_params": n_params, "size_source": size_src, "kind": kind,
                "kind_source": kind_src, **_peaks(folder)}
        runs.append(info)
        for gain in _gains(metrics, condition_order(metrics, folder.config)):
            rows.append({**{k: info[k] for k in ("run", "model", "n_params", "kind")}, **gain,
                         **{k: v for k, v in info.items() if k.startswith(("probe_", "patch"))}})
    return {"runs": runs, "rows": rows}


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:+.3f}"
    return "n/a" if value is None else str(value)


def format_compare(result: dict[str, Any]) -> str:
    """The comparison as a terminal table."""
    cols = ["run", "model", "n_params", "kind", "condition", *(k for k, _, _ in GAINS),
            "gain_r_bls", "probe_layer", "probe_accuracy", "patching_peak"]
    if not result["rows"]:
        return "(no instruct/negate conditions to compare)"
    # A run folder's last part is enough to tell runs apart in a terminal.
    short = {"gain_bias_score_ambig": "dbias_amb", "gain_bias_score_disambig": "dbias_dis",
             "gain_accuracy_ambig": "dacc_amb", "gain_accuracy_disambig": "dacc_dis",
             "gain_r_bls": "dr_bls", "probe_accuracy": "probe_acc", "patching_peak": "patch_peak"}
    cells = [[short.get(c, c) for c in cols]]
    cells += [[Path(row["run"]).name] + [_cell(row.get(c)) for c in cols[1:]]
              for row in result["rows"]]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cols))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(line, widths, strict=True))
                     for line in cells)


def _size_label(n: int | None) -> str:
    if n is None:
        return "size ?"
    for suffix, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return str(n)


def _model_order(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs by size (unknown sizes last), so the x axis reads small to large."""
    return sorted(runs, key=lambda r: (r["n_params"] is None, r["n_params"] or 0, r["run"]))


PANELS = [("gain_bias_score_ambig", "Δ bias score, ambiguous"),
          ("gain_bias_score_disambig", "Δ bias score, disambiguated"),
          ("gain_accuracy_ambig", "Δ accuracy, ambiguous"),
          ("gain_accuracy_disambig", "Δ accuracy, disambiguated")]


def _peak_panel(ax: Any, runs: list[dict[str, Any]], key: str, layer_key: str,
                title: str, ylabel: str) -> None:
    found = {i: float(r[key]) for i, r in enumerate(runs) if isinstance(r.get(key), (int, float))}
    xs = list(found)
    ax.bar(xs, list(found.values()), color="tab:purple")
    for i, v in found.items():
        ax.text(i, v, f"L{runs[i].get(layer_key)}", ha="center", fontsize=7,
                va="bottom" if v >= 0 else "top")
    if not xs:
        ax.text(0.5, 0.5, "not computed for any run", ha="center", transform=ax.transAxes)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)


def plot_compare(result: dict[str, Any], path: str | Path) -> Path:
    """Gains vs model (ordered by size; filled = aligned/chat, hollow = base), and peaks."""
    plt = pyplot()
    runs = _model_order(result["runs"])
    pos = {r["run"]: i for i, r in enumerate(runs)}
    conds = list(dict.fromkeys(row["condition"] for row in result["rows"]))
    fig, axes = plt.subplots(2, 3, figsize=(max(12.0, 2.2 * len(runs) + 8), 7.5))
    gain_axes = [axes[0, 0], axes[0, 1], axes[1, 0], axes[1, 1]]
    for ax, (key, title) in zip(gain_axes, PANELS, strict=True):
        for j, cond in enumerate(conds):
            dx = (j - (len(conds) - 1) / 2) * 0.12
            rows = [r for r in result["rows"] if r["condition"] == cond
                    and isinstance(r.get(key), (int, float))]
            color = f"C{j % 10}"
            for k, row in enumerate(rows):
                ax.plot(pos[row["run"]] + dx, row[key], "o" if row["kind"] != "base" else "s",
                        color=color, mfc=color if row["kind"] != "base" else "none",
                        label=cond if k == 0 else None)
        ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_title(title + " (instructed − baseline)", fontsize=10)
        ax.set_ylabel("gain")
    _peak_panel(axes[0, 2], runs, "probe_accuracy", "probe_layer",
                "best probe accuracy (label: layer)", "accuracy")
    _peak_panel(axes[1, 2], runs, "patching_peak", "patching_peak_layer",
                "peak patching effect (label: layer)", "effect")
    labels = [f"{Path(str(r['model'])).name}\n{_size_label(r['n_params'])}, {r['kind'] or '?'}"
              for r in runs]
    for ax in axes.ravel():
        ax.set_xticks(range(len(runs)))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_xlim(-0.6, len(runs) - 0.4)
    handles, names = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="upper right", fontsize=8, title="condition")
    fig.suptitle("Self-correction gain by model (bias: < 0 = less biased; "
                 "circle = aligned/chat, hollow square = base)")
    path = Path(path)
    fig.tight_layout(rect=(0, 0, 0.93, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_compare(result: dict[str, Any], out: str | Path) -> list[Path]:
    """compare.json, compare.csv and compare.png into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "compare.json", result)
    fields = list(dict.fromkeys(k for row in result["rows"] for k in row)) or ["run"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(result["rows"])
    atomic_write_text(out / "compare.csv", buffer.getvalue())
    return [out / "compare.json", out / "compare.csv", plot_compare(result, out / "compare.png")]
