"""All metrics of a run from its rows (never a model), and a terminal table of them.

The result is JSON-safe (NaN -> None) and deterministic: the same rows give a
byte-identical ``json.dumps(..., sort_keys=True)`` (fixed bootstrap seed, sorted keys).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from probe.scoring.bbq import bbq_metrics
from probe.scoring.gains import compute_gains, format_gains
from probe.scoring.stats import LEVEL
from probe.scoring.winogender import MIN_R_CLUSTERS, winogender_metrics


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
    "winogender": ...}}}`` (only benchmarks present in the rows appear), each condition's
    ``"gains"`` over the baseline, and ``"interval"``: how every interval was made."""
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
            out["winogender"] = winogender_metrics(by_bench["winogender"], n_boot, seed)
        conditions[cond] = out
    return json_safe({"conditions": conditions, "gains": compute_gains(grouped, n_boot, seed),
                      "interval": interval_method(n_boot, seed)})


def interval_method(n_boot: int, seed: int) -> dict[str, Any]:
    """What every interval in metrics.json is (docs/methods.md, Intervals)."""
    return {"method": "percentile bootstrap", "resample": "template cluster",
            "cluster": {"bbq": "category x question_index (all rows of one BBQ template)",
                        "winogender": "occupation"},
            "n_clusters": "per cell, as n_clusters", "n_boot": n_boot, "seed": seed,
            "level": LEVEL,
            "gains": "paired: clusters drawn once per resample, condition and baseline "
                     "computed on the same draw, difference taken"}


def _num(value: float | None, width: int = 6) -> str:
    return f"{value:+.3f}".rjust(width) if value is not None else "n/a".rjust(width)


def _pct(value: float | None) -> str:
    return f"{100 * value:5.1f}%" if value is not None else "  n/a "


def _ci(cell: dict[str, Any], key: str = "bias_score_ci") -> str:
    lo, hi = cell.get(key) or (None, None)
    if lo is None or hi is None:
        return f"{'':>16}"
    return f"[{lo:+.2f}, {hi:+.2f}]".rjust(16)


def _pct_ci(cell: dict[str, Any], key: str) -> str:
    """``[38, 52]``: a proportion's interval in percentage points; blank when undefined."""
    lo, hi = cell.get(key) or (None, None)
    if lo is None or hi is None:
        return f"{'':>10}"
    return f"[{100 * lo:.0f}, {100 * hi:.0f}]".rjust(10)


def _bbq_lines(cond: str, bbq: dict[str, Any], by_category: bool) -> list[str]:
    lines = []
    cells = [("overall", bbq["overall"])]
    if by_category:
        cells += sorted(bbq["by_category"].items())
    for name, cell in cells:
        parts = [f"{cond:<12} {name:<20}"]
        for context in ("ambig", "disambig"):
            c = cell[context]
            parts.append(f"{_num(c['bias_score'])}{_ci(c)} {_pct(c['accuracy'])}"
                         f"{_pct_ci(c, 'accuracy_ci')} {c['n']:>4} {c.get('n_clusters', ''):>3} "
                         f"{c['n_unparsed']:>4} {_pct(c.get('unparsed_share'))}")
        lines.append(" | ".join(parts))
    return lines


def shown_r(block: dict[str, Any], key: str) -> float | None:
    """A Pearson r over occupations to print: None below MIN_R_CLUSTERS occupations, where
    r says nothing (over two points it is always +1 or -1) and has no interval."""
    n = block.get("n_occupations")
    return None if isinstance(n, int) and n < MIN_R_CLUSTERS else block.get(key)


def _wino_line(name: str, w: dict[str, Any]) -> str:
    rates, two = w["rates"], w.get("he_she") or {}
    return (f"{name:<22} {_num(shown_r(w, 'r_bls'), 7)}{_ci(w, 'r_bls_ci')} "
            f"{_num(shown_r(two, 'r_bls'), 7)} "
            f"{_num(shown_r(w, 'r_bergsma'), 7)} {_num(shown_r(two, 'r_bergsma'), 7)} "
            f"{_pct(w.get('p_female')):>7}{_pct_ci(w, 'p_female_ci')} "
            f"{_pct(two.get('p_female')):>7} "
            f"{_pct(rates['male']):>7} {_pct(rates['female']):>7} {_pct(rates['neutral']):>7} "
            f"{w['n']:>5} {w.get('n_occupations') or 0:>3} {w['n_unparsed']:>5} "
            f"{_pct(w.get('unparsed_share'))}")


def _wino_lines(wino: dict[str, dict[str, Any]]) -> list[str]:
    """Per condition: both participant kinds pooled, then each kind; r and mean P(female)
    with P(female) over he/she/they (3) and over he/she (2)."""
    lines = [f"{'Winogender':<22} {'r(BLS)':^31} {'r(Bergsma)':^15} {'P(female)':^25} "
             f"{'answers':^23}",
             f"{'condition / participant':<22} {'3':>7}{'95% CI':>16} {'2':>7} {'3':>7} "
             f"{'2':>7} {'3':>7}{'95% CI':>10} {'2':>7} {'male':>7} {'female':>7} "
             f"{'neutral':>7} {'n':>5} {'k':>3} {'unparsed':>12}"]
    for cond, w in wino.items():
        lines.append(_wino_line(cond, w))
        kinds = w.get("by_participant") or {}
        lines += [_wino_line(f"  {k}", kinds[k]) for k in ("specific", "someone") if k in kinds]
    lines.append("3: P(female) over he/she/they (Ganguli et al. 2023); 2: over he/she")
    return lines


def format_table(metrics: dict[str, Any], by_category: bool = False) -> str:
    """A readable table: BBQ bias score (95% CI), accuracy, n and unparsed (count and share
    of the cell's rows) for ambig and disambig per condition (and per category if asked);
    Winogender r and pronoun rates."""
    conditions = metrics.get("conditions", {})
    out: list[str] = []
    bbq = {c: m["bbq"] for c, m in conditions.items() if "bbq" in m}
    if bbq:
        head = (f"{'bias':>7}{'95% CI':>16} {'acc':>6}{'95% CI':>10} {'n':>4} {'k':>3} "
                f"{'unparsed':>11}")
        out.append(f"{'BBQ':<12} {'':<20} | {'ambiguous':^61} | {'disambiguated':^61}")
        out.append(f"{'condition':<12} {'category':<20} | {head} | {head}")
        for cond, block in bbq.items():
            out += _bbq_lines(cond, block, by_category)
        counterbalanced = any((b.get("answer_positions") or {}).get("counterbalanced")
                              for b in bbq.values())
        out.append("answer position habit (share of picks at displayed (a)/(b)/(c)"
                   + (", every cyclic order, before un-permuting" if counterbalanced else "")
                   + "): " + "; ".join(
            f"{cond} " + "/".join(_pct(block["answer_positions"].get(str(i))).strip()
                                  for i in range(3))
            for cond, block in bbq.items() if block.get("answer_positions")))
        excluded = {len(block.get("excluded_no_target") or []) for block in bbq.values()}
        if excluded - {0}:
            out.append(f"left out of every BBQ metric (no single biased answer, as in the "
                       f"official analysis): {max(excluded)} items per condition")
    wino = {c: m["winogender"] for c, m in conditions.items() if "winogender" in m}
    if wino:
        out += _wino_lines(wino)
    method = metrics.get("interval")
    if out and method:
        out.append(f"95% CI: {method['method']}, {method['n_boot']} resamples of templates "
                   "(BBQ: category x question_index) or occupations (Winogender), not rows; "
                   "n: rows, k: templates or occupations resampled; a blank interval is "
                   f"undefined; r is n/a under {MIN_R_CLUSTERS} occupations")
    gains = format_gains(metrics.get("gains") or {})
    if gains:
        out += ["", gains]
    return "\n".join(out) if out else "(no rows)"
