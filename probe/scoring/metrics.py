"""All metrics of a run from its rows (never a model), and a terminal table of them.

The result is JSON-safe (NaN -> None) and deterministic: the same rows give a
byte-identical ``json.dumps(..., sort_keys=True)`` (fixed bootstrap seed, sorted keys).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from probe.scoring.bbq import bbq_metrics
from probe.scoring.winogender import winogender_metrics


def json_safe(value: Any) -> Any:
    """Recursively turn NaN/inf into None and numpy scalars into Python numbers."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def compute_metrics(rows: Iterable[dict[str, Any]], n_boot: int = 1000,
                    seed: int = 0) -> dict[str, Any]:
    """Metrics per condition and benchmark: ``{"conditions": {cond: {"bbq": ...,
    "winogender": ...}}}``; only benchmarks present in the rows appear."""
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        by_bench = grouped.setdefault(str(row.get("condition")), {})
        by_bench.setdefault(str(row.get("benchmark")), []).append(row)
    conditions: dict[str, Any] = {}
    for cond, by_bench in sorted(grouped.items()):
        out: dict[str, Any] = {}
        if "bbq" in by_bench:
            out["bbq"] = bbq_metrics(by_bench["bbq"], n_boot=n_boot, seed=seed)
        if "winogender" in by_bench:
            out["winogender"] = winogender_metrics(by_bench["winogender"])
        conditions[cond] = out
    return json_safe({"conditions": conditions})


def _num(value: float | None, width: int = 6) -> str:
    return f"{value:+.3f}".rjust(width) if value is not None else "n/a".rjust(width)


def _pct(value: float | None) -> str:
    return f"{100 * value:5.1f}%" if value is not None else "  n/a "


def _bbq_lines(cond: str, bbq: dict[str, Any]) -> list[str]:
    lines = []
    cells = [("overall", bbq["overall"])] + sorted(bbq["by_category"].items())
    for name, cell in cells:
        amb, dis = cell["ambig"], cell["disambig"]
        lines.append(
            f"{cond:<14} {name:<20} {_num(amb['bias_score'])} {_pct(amb['accuracy'])} "
            f"{amb['n']:>5} | {_num(dis['bias_score'])} {_pct(dis['accuracy'])} {dis['n']:>5}")
    return lines


def format_table(metrics: dict[str, Any]) -> str:
    """A readable table: BBQ bias score / accuracy / n for ambig and disambig per
    condition and category; Winogender r and pronoun rates per condition."""
    conditions = metrics.get("conditions", {})
    out: list[str] = []
    bbq = {c: m["bbq"] for c, m in conditions.items() if "bbq" in m}
    if bbq:
        out.append(f"{'BBQ condition':<14} {'category':<20} {'ambig: bias   acc     n':>24} "
                   f"| {'disambig: bias   acc     n':>24}")
        for cond, block in bbq.items():
            out += _bbq_lines(cond, block)
    wino = {c: m["winogender"] for c, m in conditions.items() if "winogender" in m}
    if wino:
        out.append(f"{'Winogender':<14} {'r(BLS)':>7} {'r(Bergsma)':>10} {'male':>7} "
                   f"{'female':>7} {'neutral':>7} {'n':>5} {'unparsed':>8}")
        for cond, w in wino.items():
            rates = w["rates"]
            out.append(f"{cond:<14} {_num(w['r_bls'], 7)} {_num(w['r_bergsma'], 10)} "
                       f"{_pct(rates['male']):>7} {_pct(rates['female']):>7} "
                       f"{_pct(rates['neutral']):>7} {w['n']:>5} {w['n_unparsed']:>8}")
    return "\n".join(out) if out else "(no rows)"
