"""The report's block for ``superficial.json``: verdicts first, then per-layer tables."""

from __future__ import annotations

from typing import Any

from probe.presentation.report_html import details, esc, fmt, table, with_ci


def _q(block: Any) -> str:
    return with_ci(block.get("value"), block.get("ci")) if isinstance(block, dict) else "n/a"


def _verdicts(data: dict[str, Any]) -> str:
    meta = data.get("meta") or {}
    rows = [[cond, v.get("verdict"), v.get("rule"), ", ".join(map(str, v.get("layers") or []))]
            for cond, v in ((data.get("superficial") or {}).get("model") or {}).items()]
    missing = meta.get("components_missing") or []
    note = ("<p class='note'>Not cached in this run, so not analysed: "
            f"{esc(', '.join(missing))}.</p>" if missing else "")
    rounds = (data.get("trajectories") or {}).get("rounds_note")
    note += f"<p class='note'>{esc(rounds)}</p>" if rounds else ""
    return (f"<p>Is the behavioural change matched by a change of the hidden states along a "
            f"stereotype direction built from BBQ answer pairs (contrast "
            f"{esc(meta.get('contrast'))}, held-out template halves)? Ratio = internal change "
            f"(in units of the baseline's own stereotyped-vs-other separation) / behavioural "
            f"change in the share of stereotyped answers, {esc(meta.get('primary_context'))} "
            f"context; {esc(meta.get('n_items'))} items, {esc(meta.get('n_templates'))} "
            f"templates.</p>" + note
            + table(["condition", "verdict", "rule", "layers"], rows))


def _ratio_table(data: dict[str, Any], cond: str) -> str:
    ctx = (data.get("meta") or {}).get("primary_context")
    rows = [[t.get("layer"), _q(t.get("beh")), _q(t.get("sep")), _q(t.get("internal")),
             _q(t.get("ratio")), t.get("n_pairs"), t.get("n_clusters"), t.get("verdict"),
             t.get("rule")]
            for t in (data.get("superficial") or {}).get("by_hook") or []
            if t.get("condition") == cond and t.get("context") == ctx
            and t.get("component") == "resid"]
    return table(["layer", "behavioural change [95% CI]", "separation", "internal change",
                  "ratio", "n pairs", "templates", "verdict", "rule"], rows)


def _alignment_table(data: dict[str, Any], cond: str) -> str:
    rows = []
    for a in data.get("alignment") or []:
        if a.get("condition") != cond:
            continue
        rnd, plc = a.get("random") or {}, a.get("placebo") or {}
        band = rnd.get("band_95") or [None, None]
        check = a.get("direction") or {}
        rows.append([a.get("layer"), a.get("component"),
                     f"{fmt(check.get('split_half_cosine'))} (p={fmt(check.get('split_half_p'))})",
                     with_ci(a.get("cosine"), a.get("ci")),
                     f"[{fmt(band[0])}, {fmt(band[1])}]", fmt(rnd.get("p_value")),
                     plc.get("condition", "none in run"),
                     with_ci(plc.get("difference"), plc.get("difference_ci")) if plc else "-",
                     a.get("n_pairs"), a.get("verdict")])
    return table(["layer", "component", "direction split-half cosine", "cosine [95% CI]",
                  "random 95%", "p", "placebo",
                  "minus placebo [95% CI]", "n pairs", "verdict"], rows)


def _causal(data: dict[str, Any]) -> str:
    causal = data.get("causal")
    if not isinstance(causal, dict):
        return "<p class='note'>Causal check not run (probe superficial --causal-layers).</p>"
    rows = [[r.get("layer"), r.get("kind"), r.get("alpha"),
             with_ci((r.get("ambig") or {}).get("mean"), (r.get("ambig") or {}).get("ci")),
             with_ci((r.get("readout") or {}).get("mean"), (r.get("readout") or {}).get("ci")),
             r.get("verdict", "")] for r in causal.get("results") or []]
    return ("<p>Causal check: the baseline with alpha x the concept direction added at the "
            "last prompt position, re-scored; random = norm-matched random directions (median, "
            "5-95%).</p>" + table(["layer", "kind", "alpha", "ambiguous bias", "readout",
                                   "verdict"], rows))


def superficial_html(data: dict[str, Any]) -> str:
    """Verdicts, then per condition the ratio and alignment tables, then the causal check."""
    conds = list((data.get("superficial") or {}).get("model") or {})
    parts = [_verdicts(data)]
    for cond in conds:
        parts.append(details(f"{cond}: ratio per layer (resid_post)", _ratio_table(data, cond)))
        parts.append(details(f"{cond}: shift alignment per layer and component",
                             _alignment_table(data, cond)))
    parts.append(_causal(data))
    return "".join(parts)
