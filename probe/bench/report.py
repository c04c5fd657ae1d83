"""The benchmark's result as plain text: the table, the projection, the memory check."""

from __future__ import annotations

from typing import Any


def format_bench(result: dict[str, Any]) -> str:
    """The benchmark as a plain-text table, with the caching-memory check below it."""
    meta = result["meta"]
    lines = [
        f"{meta['model']} ({meta['n_params'] / 1e6:.1f}M params, probe attention "
        f"{meta['probe_attention']}), {meta['device']} {meta['dtype']}, {meta['n_items']} BBQ "
        f"prompts (mean {meta['mean_prompt_tokens']:.0f} tokens), batch {meta['batch_size']}, "
        f"{meta['new_tokens']} new tokens, median of {meta['repeats']}"
        + (" (CPU seconds of this process, not wall time)"
           if meta.get("clock") == "process" else ""),
        f"{meta['date']}; {meta['cpu']} x{meta['cpu_count']}"
        + (f"; {meta['gpu']}" if meta["gpu"] else "")
        + f"; torch {meta['torch']} ({meta['torch_threads']} threads); load avg "
        f"{meta['load_avg_1m']:.1f} -> {meta['load_avg_1m_after']:.1f}", "",
        f"{'row':38} {'items/s':>8} {'tok/s':>8} {'median s':>9} {'best s':>7} "
        f"{'peak MB':>8} {'TFLOP/s':>8} {'%peak':>6} {'ratio':>6} {'target':>6}  status  "
        f"same out",
    ]
    for row in result["rows"]:
        ratio = "ref" if row["ratio"] is None else f"{row['ratio']:.2f}"
        target = "" if row["target"] is None else f">={row['target']:.2f}"
        same = "" if row["same_output"] is None else ("yes" if row["same_output"] else "NO")
        flops = "" if row.get("tflops") is None else f"{row['tflops']:.3g}"
        share = "" if row.get("peak_share") is None else f"{100 * row['peak_share']:.1f}"
        lines.append(
            f"{row['name']:38} {row['items_per_s']:8.2f} {row['tokens_per_s']:8.1f} "
            f"{row['seconds']:9.3f} {row['best']:7.3f} {row['peak_mb']:8.1f} {flops:>8} "
            f"{share:>6} {ratio:>6} {target:>6}  {row['status'] or '':6}  {same}")
    lines.append("ratio: the group's fastest plain-HF reference time / the row's time (a bound "
                 "row is a cheaper computation than the task, shown for scale)")
    lines.append("tok/s: prompt tokens for forward/likelihood rows, new tokens for generate rows;"
                 " peak MB: above the level before the row")
    if meta.get("matmul_tflops"):
        lines.append(f"TFLOP/s: useful prompt-pass FLOPs (padding not counted) per second; "
                     f"%peak: of the measured {meta['matmul_tflops']:.3g} TFLOP/s of a dense "
                     f"{meta['dtype']} matmul on this device")
    if result.get("projection"):
        lines += ["", format_projection(result["projection"])]
    if result["memory"]:
        lines += ["", "caching memory: run_study(cache_acts=True), letter mode, fresh process each"]
        for m in result["memory"]:
            lines.append(f"  {m['rows']:5d} rows: study peak +{m['study_peak_mb']:.1f} MB, "
                         f"process max RSS {m['process_maxrss_mb']:.1f} MB")
    return "\n".join(lines)


def format_projection(proj: dict[str, Any]) -> str:
    """One paragraph: how long the whole BBQ under the projected conditions would take."""
    means = ", ".join(f"{c} {n:.0f}" for c, n in proj["mean_prompt_tokens"].items())
    text = (f"projection (letter mode, at probe letter's {proj['tokens_per_s']:.0f} prompt "
            f"tok/s): BBQ here {proj['n_items']} items ({len(proj['categories'])} categories) x "
            f"{len(proj['conditions'])} conditions, mean prompt tokens {means}: "
            f"{proj['tokens'] / 1e6:.2f} M tokens, {_duration(proj['hours'])}")
    if len(proj["categories"]) < 11:
        text += (f"; scaled to the official 58,492 items: "
                 f"{_duration(proj['hours_official_bbq'])}")
    return text


def _duration(hours: float) -> str:
    if hours >= 1:
        return f"{hours:.1f} h"
    return f"{hours * 60:.1f} min" if hours * 60 >= 1 else f"{hours * 3600:.0f} s"
