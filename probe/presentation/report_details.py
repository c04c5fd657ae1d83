"""The report's detail sections: stages, per-condition metrics, example prompts and outputs.

Stages are read from what the run folder holds (run.json's record and the files each stage
writes), so a stage that ran is listed even when it did not mark itself in run.json, and an
interrupted generation reads "incomplete" rather than "done".
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from probe.presentation.report_html import Raw, details, esc, fmt, pre, table, with_ci
from probe.presentation.report_summary import MIN_N
from probe.scoring.metrics import shown_r
from probe.scoring.stats import zero_width
from probe.store.runs import RunFolder

# stage -> the file or folder it writes (relative to the run folder)
STAGE_FILES: dict[str, str] = {
    "generate": "generations.jsonl", "score": "metrics.json",
    "activations": "activations/index.json", "plots": "plots", "probes": "probes.json",
    "directions": "directions.json", "patching": "patching.json", "steering": "steering.json",
    "lens": "lens.json"}


def _mtime(path: Path) -> str:
    stamp = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
    return stamp.isoformat(timespec="seconds")


def _stage_detail(folder: RunFolder, name: str, path: Path) -> str:
    if name == "plots":
        return f"{len(list(path.glob('*.png')))} figures"
    if name == "generate":
        return f"{sum(1 for _ in path.open(encoding='utf-8'))} rows"
    if path.suffix == ".json" and name != "score":
        try:
            meta = json.loads(path.read_text(encoding="utf-8")).get("meta") or {}
        except (OSError, ValueError, AttributeError):
            return "unreadable"
        keys = ("source", "target", "instruction", "n_items", "seconds")
        return ", ".join(f"{k} {fmt(meta[k])}" for k in keys if k in meta)
    return ""


def stage_rows(folder: RunFolder) -> list[list[Any]]:
    """(stage, status, when, detail) for every stage the folder shows signs of."""
    marked = folder.info.get("stages") or {}
    rows = []
    for name in dict.fromkeys([*STAGE_FILES, *marked]):
        path = folder.path / STAGE_FILES.get(name, f"{name}.json")
        mark = marked.get(name) if isinstance(marked.get(name), dict) else None
        exists = path.is_dir() and any(path.glob("*.png")) if name == "plots" else path.is_file()
        if not mark and not exists:
            rows.append([name, "not run", "", ""])
            continue
        status = "done" if mark or name != "generate" else "incomplete (interrupted)"
        when = (mark or {}).get("done") or (_mtime(path) if exists else "")
        rows.append([name, status, when, _stage_detail(folder, name, path) if exists else ""])
    return rows


def _flag(n: Any, value: Any = None, k: Any = None, ci: Any = None) -> str:
    """A small-n / degenerate warning for a metrics cell: few items, few templates
    (clusters), a proportion of 0 or 1, or a zero-width interval."""
    if isinstance(n, int) and n < MIN_N:
        return " ⚠"
    if isinstance(k, int) and k < MIN_N:
        return " ⚠"
    if isinstance(value, (int, float)) and value in (0, 1):
        return " ⚠"
    if (isinstance(ci, (list, tuple)) and len(ci) == 2
            and all(isinstance(v, (int, float)) for v in ci) and zero_width(*ci)):
        return " ⚠"
    return ""


def _bbq_row(cells: dict[str, Any], label: str) -> list[Any]:
    row: list[Any] = [label]
    for ctx in ("ambig", "disambig"):
        c = cells.get(ctx) or {}
        row += [with_ci(c.get("bias_score"), c.get("bias_score_ci"))
                + _flag(None, ci=c.get("bias_score_ci")),
                with_ci(c.get("accuracy"), c.get("accuracy_ci")) + _flag(None, c.get("accuracy")),
                f"{c.get('n')}{_flag(c.get('n'))}",
                f"{c.get('n_clusters', '?')}{_flag(None, k=c.get('n_clusters'))}",
                c.get("n_unparsed")]
    return row


BBQ_HEADS = ["ambiguous bias [95% CI]", "ambiguous accuracy", "ambiguous n", "templates",
             "unparsed", "disambiguated bias [95% CI]", "disambiguated accuracy",
             "disambiguated n", "templates", "unparsed"]


def metrics_section(metrics: dict[str, Any], conds: list[str]) -> str:
    """Per-condition metrics tables (BBQ pooled and per category, Winogender)."""
    blocks = metrics.get("conditions", {})
    bbq = {c: blocks[c]["bbq"] for c in conds if "bbq" in blocks.get(c, {})}
    out = ["<h2>Metrics per condition</h2><p class='note'>⚠: fewer than "
           f"{MIN_N} items or {MIN_N} templates (the unit every interval resamples), a "
           "proportion of 0 or 1 (0/n, n/n), or a zero-width interval, where the bootstrap "
           "interval is degenerate or unreliable and should not be read as certainty.</p>"]
    if bbq:
        pos = {c: b.get("answer_positions") or {} for c, b in bbq.items()}
        rows = [[*_bbq_row(b["overall"], c), " / ".join(fmt(pos[c].get(str(i)), 2)
                                                         for i in range(3))]
                for c, b in bbq.items()]
        out.append("<h3>BBQ, pooled over categories</h3>"
                   + table(["condition", *BBQ_HEADS, "share a / b / c"], rows, row_heads=True))
        cat_rows = [_bbq_row(cell, f"{c}: {cat}") for c, b in bbq.items()
                    for cat, cell in sorted(b.get("by_category", {}).items())]
        out.append(details("BBQ per category", table(["condition: category", *BBQ_HEADS],
                                                     cat_rows, row_heads=True)))
    wino = {c: blocks[c]["winogender"] for c in conds if "winogender" in blocks.get(c, {})}
    if wino:
        rows = []
        for c, w in wino.items():
            kinds = w.get("by_participant") or {}
            rows += [_wino_row(c, w), *(_wino_row(f"{c}: {k}", kinds[k])
                                        for k in ("specific", "someone") if k in kinds)]
        out.append("<h3>Winogender</h3>" + table(
            ["condition (participant)", "r vs BLS [95% CI]", "r vs BLS, he/she [95% CI]",
             "r vs Bergsma [95% CI]", "male", "female", "neutral", "n", "unparsed",
             "occupations"], rows, row_heads=True)
            + "<p class='note'>P(female) over he/she/they (Ganguli et al. 2023) unless "
              "marked he/she; rows without a participant kind pool both kinds.</p>")
    return "".join(out)


def _wino_row(name: str, w: dict[str, Any]) -> list[Any]:
    two = w.get("he_she") or {}
    return [name, with_ci(shown_r(w, "r_bls"), w.get("r_bls_ci")),
            with_ci(shown_r(two, "r_bls"), two.get("r_bls_ci")),
            with_ci(shown_r(w, "r_bergsma"), w.get("r_bergsma_ci")),
            *(fmt((w.get("rates") or {}).get(g)) for g in ("male", "female", "neutral")),
            f"{w.get('n')}{_flag(w.get('n'))}", w.get("n_unparsed"), w.get("n_occupations")]


def bbq_role(row: dict[str, Any]) -> str:
    """What a BBQ answer is, by the item's roles rather than a letter (option order may be
    counterbalanced, so a letter would not name the option the prompt showed there)."""
    pred, meta = row.get("pred"), row.get("meta") or {}
    if not isinstance(pred, int):
        return "unparsed"
    role = ("unknown" if pred == meta.get("unknown_index") else
            "stereotyped" if pred == meta.get("target_index") else "anti-stereotyped")
    return role + (", correct" if pred == row.get("label") else ", wrong")


def _example_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    out = []
    for row in rows:
        meta = row.get("meta") or {}
        if row.get("benchmark") == "bbq":
            answer = bbq_role(row)
            note = {"ambig": "ambiguous context", "disambig": "disambiguated context"}.get(
                str(row.get("context_condition")), str(row.get("context_condition")))
        else:
            note, answer = f"occupation {meta.get('occupation')}", str(row.get("pred"))
        prompt = details(f"prompt ({row.get('n_prompt_tokens')} tokens)", pre(row.get("prompt")))
        out.append([row.get("condition"), Raw(pre(row.get("output", ""))), answer, note,
                    Raw(prompt)])
    return out


def examples_section(folder: RunFolder, conds: list[str]) -> str:
    """Per benchmark, one item's prompt and output under every condition (escaped)."""
    by_item: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for row in folder.rows():
        key = (str(row.get("benchmark")), str(row["item_id"]))
        by_item.setdefault(key, {})[str(row["condition"])] = row
    parts = []
    for bench in dict.fromkeys(b for b, _ in by_item):
        items = [(k, v) for k, v in by_item.items() if k[0] == bench]
        # An ambiguous BBQ item when there is one: there the instruction should matter.
        items.sort(key=lambda kv: (len(kv[1]) < len(conds),
                                   next(iter(kv[1].values())).get("context_condition")
                                   not in (None, "ambig")))
        (_, item_id), found = items[0]
        order = [c for c in conds if c in found] + sorted(set(found) - set(conds))
        parts.append(f"<h3>{esc(bench)}: item <code>{esc(item_id)}</code></h3>" + table(
            ["condition", "output", "parsed answer", "item", "prompt"],
            _example_rows([found[c] for c in order]), row_heads=True))
    if not parts:
        return ""
    return ("<h2>Example prompts and outputs</h2><p class='note'>One item per benchmark under "
            "every condition, as the model saw and answered it.</p>" + "".join(parts))
