"""One self-contained HTML page per run: the study's answers first, then the details.

Order: the summary (per benchmark, each condition's gain over the baseline with its paired
interval, n and verdict; the negation effect; where inside the model the effect appears, or
"no localisable effect"), then the run (stages, model, provenance), the metrics per
condition, example prompts and outputs, the figures, and the analysis files in detail.
Images are embedded as base64 data URIs and there is no external CSS and no script, so the
page can be mailed or archived alone and reads in any browser. Every piece of text from the
run is escaped (:func:`probe.presentation.report_html.esc`).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from probe.presentation.plots import FIGURES, condition_order, run_metrics
from probe.presentation.report_analyses import analyses_section
from probe.presentation.report_details import examples_section, metrics_section, stage_rows
from probe.presentation.report_html import details, esc, table
from probe.presentation.report_summary import gains_summary
from probe.presentation.report_where import where_summary
from probe.store.io import atomic_write_text
from probe.store.runlock import locks_run
from probe.store.runs import RunFolder

CAPTIONS: dict[str, str] = {
    "bbq_bias.png": "BBQ bias score per condition (pooled over categories), 95% "
                    "template-cluster bootstrap CI.",
    "bbq_accuracy.png": "BBQ accuracy per condition, 95% template-cluster bootstrap CI; "
                        "dashed line = chance.",
    "bbq_bias_by_category.png": "BBQ bias score per category and condition.",
    "bbq_answer_positions.png": "Share of answers at option (a)/(b)/(c): position habit.",
    "winogender_scatter.png": "Winogender P(female) per occupation vs BLS % women; r in legend.",
    "winogender_rates.png": "Winogender pronoun choice (male/female/neutral) per condition.",
    "probes.png": "Linear probe accuracy per layer (grouped CV), with the control task "
                  "(random labels per template cluster), 5-95% of its draws.",
    "directions.png": "Self-correction directions: held-out cosine with the bias direction "
                      "per layer (95% CI), grey = shuffled-condition control (5-95%).",
    "patching_resid.png": "Activation patching of the residual stream (layer x position), "
                          "denoising and noising: normalised effect (0 none, 1 the full "
                          "source-target gap) when the gap is reliable, else the raw patched "
                          "- unpatched readout in nats (see the panel titles); dotted cells: "
                          "95% interval includes 0.",
    "patching_components.png": "Activation patching of attn_out / mlp_out per layer (all "
                               "patched positions at once), with 95% intervals over items.",
    "patching_heads.png": "Activation patching of each attention head (attn.hook_z, all "
                          "patched positions at once) per layer, denoising and noising.",
    "steering.png": "Steering the baseline along the self-correction direction (last prompt "
                    "position, held-out templates): bias score vs alpha per layer; dashed and "
                    "shaded = median and 5-95% of norm-matched random directions.",
    "lens.png": "Logit lens: answer preference read out per layer.",
    "superficial_trajectories.png": "Mean projection of each condition's (and cached review "
                                    "round's) hidden states on the held-out concept direction "
                                    "per layer and component, 95% template-bootstrap band; "
                                    "right: the same rows' ambiguous bias score.",
    "superficial_ratio.png": "Superficial test: internal change / behavioural change per "
                             "layer (95% paired template-bootstrap CI); dashed = 0.5, the "
                             "verdict threshold; n = paired items.",
    "superficial_alignment.png": "Cosine of each condition's prompt-induced shift with the "
                                 "concept direction per layer (95% CI); grey = random "
                                 "directions (95%).",
}
# The main column fits a 1400 px window with room to spare; wide tables scroll inside
# their own box instead of widening the page; long prompts wrap.
STYLE = ("body{font-family:sans-serif;max-width:1280px;margin:1.5em auto;padding:0 1em;"
         "color:#222;line-height:1.4}"
         ".scroll{overflow-x:auto;max-width:100%}"
         "table{border-collapse:collapse;margin:.4em 0 1.2em;font-size:13px}"
         "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right;vertical-align:top}"
         "thead th{background:#f2f2f2}"
         "th[scope=row]{text-align:left;background:#fafafa;white-space:nowrap}"
         "td:first-child{text-align:left}"
         "pre.text{white-space:pre-wrap;overflow-wrap:anywhere;max-width:60em;margin:0;"
         "text-align:left;font-size:12px}"
         ".null{color:#555}.sig{color:#0a5}.warn{color:#b45309}.note{color:#555;font-size:13px}"
         "figure{margin:1em 0}img{max-width:100%;height:auto}"
         "figcaption{font-size:13px;color:#555}"
         "section.summary{border:2px solid #444;padding:0 1em .5em;margin-bottom:2em}")


def _figures(plots_dir: Path) -> str:
    known = [n for n in [*FIGURES, *CAPTIONS] if (plots_dir / n).is_file()]
    others = sorted(p.name for p in plots_dir.glob("*.png") if p.name not in known)
    parts = ["<h2>Figures</h2>"]
    for name in dict.fromkeys(known + others):
        data = base64.b64encode((plots_dir / name).read_bytes()).decode("ascii")
        caption = CAPTIONS.get(name, f"Figure {name} (from an analysis stage).")
        parts.append(f'<figure><img alt="{esc(name)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{esc(name)}: {esc(caption)}</figcaption></figure>")
    return "".join(parts) if len(parts) > 1 else ""


def _run_section(folder: RunFolder) -> str:
    cfg, prov = folder.config, folder.provenance
    git = prov.get("git") or {}
    model = prov.get("model") or {}
    facts = [("model", cfg.get("model")), ("chat template", model.get("chat", "not recorded")),
             ("parameters", model.get("n_params", "not recorded")),
             ("scoring mode", cfg.get("mode")), ("created", folder.info.get("created")),
             ("git commit", f"{git.get('commit')} (dirty: {git.get('dirty')})"),
             ("resumes", len(folder.info.get("resumes") or []))]
    packages = sorted((prov.get("packages") or {}).items())
    config = sorted((k, json.dumps(v)) for k, v in cfg.items())
    return ("<h2>Run</h2>" + table(None, facts, row_heads=True) + "<h3>Stages</h3>"
            + table(["stage", "status", "finished (UTC)", "detail"], stage_rows(folder))
            + details("Packages", table(["package", "version"], packages))
            + details("Full config", table(["setting", "value"], config)))


def build_page(folder: RunFolder) -> str:
    """The report's HTML for a run folder."""
    metrics = run_metrics(folder)
    conds = condition_order(metrics, folder.config)
    title = f"probe report: {folder.config.get('model')} ({folder.path.name})"
    summary = ("<section class='summary'><h2>Summary: does the instruction correct the "
               "bias, and where?</h2>" + gains_summary(metrics, conds)
               + where_summary(folder.path) + "</section>")
    body = (summary + _run_section(folder) + metrics_section(metrics, conds)
            + examples_section(folder, conds) + _figures(folder.plots_dir)
            + analyses_section(folder.path))
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width'><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body><main><h1>{esc(title)}</h1>{body}</main>"
            "</body></html>")


@locks_run("report")
def write_report(run_dir: str | Path) -> Path:
    """Write ``RUN/report.html`` (self-contained) and return its path."""
    folder = RunFolder.open(run_dir)
    out = folder.path / "report.html"
    atomic_write_text(out, build_page(folder))
    return out
