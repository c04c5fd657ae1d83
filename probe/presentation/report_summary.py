"""The top of the report: the study's answers before any detail.

Per benchmark, each condition's gain over the baseline with its paired 95% interval and n,
read from metrics.json's "gains" block (computed at scoring: paired template-clustered
bootstrap, see :mod:`probe.scoring.gains`; nothing is recomputed here), with a verdict
("not distinguishable from 0" where the interval contains 0) and a warning where the
interval cannot carry a verdict (few items, a single cluster, or a zero-width interval, as
when every item is right, 0/n or n/n, under both conditions). Negated instructions get their
own table: their gain over the baseline is the negation effect. Then where inside the model
the effect appears (:mod:`probe.presentation.report_where`).
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from probe.presentation.report_html import Raw, esc, fmt, table
from probe.scoring.gains import METRICS, MIN_N, small_n_reasons, verdict

BENCH_TITLES = {"bbq": "BBQ", "winogender": "Winogender"}
DIRECTION = {"bbq": "bias score: negative = less biased than the baseline; accuracy: "
                    "positive = more accurate.",
             "winogender": "r with occupation statistics: negative = less stereotyped than "
                           "the baseline (when the baseline's r is positive)."}
NEGATION = "negate-*"


def gain_cell(gain: dict[str, Any] | None) -> Raw:
    """A gain as "value [low, high]" over "n · verdict", flagged when n is small."""
    if not gain or gain.get("value") is None:
        return Raw("n/a")
    low, high = gain.get("ci") or (None, None)
    ci = "" if low is None or high is None else f" [{_signed(low)}, {_signed(high)}]"
    sure = verdict(gain)
    cls = "null" if sure == "not distinguishable from 0" else (
        "warn" if sure.startswith("no verdict") else "sig")
    warn = [r for r in small_n_reasons(gain) if r not in sure]
    flag = f' <span class="warn">⚠ {esc(", ".join(warn))}</span>' if warn else ""
    n = f"n={gain.get('n_items')} items, {gain.get('n_clusters')} clusters"
    return Raw(f'<span class="num">{esc(_signed(gain["value"]) + ci)}</span><br>'
               f'<small>{esc(n)} · <span class="{cls}">{esc(sure)}</span>{flag}</small>')


def _signed(value: Any) -> str:
    # Differences of equal floats leave ~1e-16 residue; printed, it would read as an effect.
    if isinstance(value, float) and abs(value) < 1e-12:
        value = 0.0
    text = fmt(value)
    return text if text.startswith("-") or text == "n/a" else "+" + text


def _bench_table(gains: dict[str, Any], bench: str, conds: list[str]) -> str:
    metrics = [m for m, spec in METRICS.items() if spec.benchmark == bench
               and any(m in (gains[c].get(bench) or {}) for c in conds)]
    if not metrics:
        return ""
    rows = [[c, *(gain_cell((gains[c].get(bench) or {}).get(m)) for m in metrics)]
            for c in conds]
    heads = ["condition", *(METRICS[m].label.removeprefix(BENCH_TITLES[bench]).strip(" ,")
                            for m in metrics)]
    return table(heads, rows, row_heads=True)


def gains_summary(metrics: dict[str, Any], order: list[str]) -> str:
    """Per benchmark, the self-correction gains and the negation effect, as tables."""
    gains = metrics.get("gains") or {}
    conds = [c for c in order if c in gains] + sorted(c for c in gains if c not in order)
    if not conds:
        why = ("the run has no baseline condition" if "baseline" not in
               metrics.get("conditions", {}) else "metrics.json predates paired gains: "
               "re-score the run (probe score RUN)")
        return f"<p class='warn'>No gains over the baseline: {esc(why)}.</p>"
    negated = [c for c in conds if fnmatchcase(c, NEGATION)]
    plain = [c for c in conds if c not in negated]
    base = next(iter(gains.values())).get("vs", "baseline")
    parts = [f"<p>Each cell: condition − {esc(base)} on the same items, 95% paired bootstrap "
             "interval resampling templates (BBQ) or occupations (Winogender), n paired "
             "items and clusters, and what the interval supports. "
             f"⚠ marks an interval too thin to trust: fewer than {MIN_N} paired items; one "
             "template/occupation (nothing to resample); or zero width (every resample gives "
             "the same value, as when 0/n or n/n items are right under both conditions), "
             "which carries no verdict.</p>"]
    for bench in ("bbq", "winogender"):
        mine = [c for c in conds if bench in gains[c]]
        if not mine:
            continue
        parts.append(f"<h3>{BENCH_TITLES[bench]}</h3><p class='note'>{esc(DIRECTION[bench])}"
                     "</p>")
        if [c for c in plain if c in mine]:
            parts.append("<h4>Self-correction gain over the baseline</h4>"
                         + _bench_table(gains, bench, [c for c in plain if c in mine]))
        if [c for c in negated if c in mine]:
            parts.append("<h4>Negation effect (negated instruction − baseline)</h4>"
                         + _bench_table(gains, bench, [c for c in negated if c in mine]))
    return "".join(parts)
