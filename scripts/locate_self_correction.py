"""Locate self-correction inside one model: run with cached activations, then probes,
directions, activation patching, steering and the logit lens, then the HTML report.

    .venv/bin/python scripts/locate_self_correction.py --model smollm2-135m --limit 10

Writes ``artifacts/locate/<model>/`` (a run folder; rerun to resume the run stage). Analysis
modules that are not installed yet are reported as skipped instead of stopping the script.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import click

from probe.config import MODES, RunConfig
from probe.data.registry import default_data_dir
from probe.engine.models import DEFAULT_MODEL, load_model
from probe.engine.study import run_study
from probe.errors import ProbeError
from probe.presentation.plots import plot_run
from probe.presentation.report import write_report

DEFAULT_CONDITIONS = ("baseline", "instruct-1", "negate-1")


def optional_stage(name: str, module: str, func: str, *args: Any, **kwargs: Any) -> str:
    """Call ``module.func`` and say what it found, in one line printed as soon as it ends; a
    module (or function) that cannot be imported is skipped."""
    try:
        fn = getattr(importlib.import_module(module), func, None)
    except ImportError as err:
        line = f"{name}: skipped: module not available ({err})"
    else:
        line = (f"{name}: skipped: {module}.{func} not available" if fn is None
                else f"{name}: {summary(name, fn(*args, **kwargs))}")
    click.echo(line)
    return line


def _ci(block: dict[str, Any] | None) -> str:
    if not block or block.get("mean") is None:
        return "n/a"
    low, high = block.get("ci") or [None, None]
    ci = f" [{low:+.3f}, {high:+.3f}]" if low is not None and high is not None else ""
    return f"{block['mean']:+.3f}{ci}"


def summary(name: str, out: Any) -> str:
    """One line of a stage's result (its JSON), with its interval where it has one."""
    if not isinstance(out, dict):
        return "done"
    if name == "patching":
        return (f"readout gap {out['meta']['source']} - {out['meta']['target']} "
                f"{_ci(out['metric']['gap'])}, n={out['meta']['n_items']} items; "
                f"{(out.get('control') or {}).get('verdict', 'no control')}")
    if name == "steering":
        return (f"{len(out['results'])} steered runs on {out['meta']['n_items']} items; "
                f"readout at alpha 0 {_ci(out['readout']['alpha0'])}")
    if name == "lens":
        finals = [f"{c} {_ci(b['layers'][-1]['readout'])}"
                  for c, b in out["conditions"].items() if b["layers"]]
        return "final-layer readout: " + "; ".join(finals)
    return "done"


def probes_and_directions(run: Path) -> None:
    """Probes per layer (+ plot), then one self-correction direction per instruction."""
    from probe.analysis import targets as tg
    from probe.analysis.probe_plots import plot_probes
    from probe.analysis.probe_run import run_probes

    plot_probes(run_probes(run, progress=False), run / "plots" / "probes.png")
    try:
        from probe.analysis.directions import compute_directions, plot_cosines
    except ImportError:
        click.echo("directions: skipped: module not available")
        return
    for cond in tg.instruction_conditions(tg.read_rows(run / "generations.jsonl")):
        try:
            compute_directions(run, cond)
        except ProbeError as err:  # e.g. no item cached under both conditions
            click.echo(f"direction {cond}: skipped: {err}")
    if (run / "directions.json").is_file():
        plot_cosines(run / "directions.json", run / "plots" / "directions.png")


@click.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True)
@click.option("--limit", type=int, default=None, help="Items per category (default: all).")
@click.option("--mode", type=click.Choice(MODES), default="text", show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Benchmark data (default: $PROBE_DATA_DIR or ./data).")
@click.option("--condition", "conditions", multiple=True,
              help=f"Condition, repeatable (default: {', '.join(DEFAULT_CONDITIONS)}).")
@click.option("--conditions-file", type=click.Path(dir_okay=False), default=None,
              help="Your own conditions (.py, .yaml or .json), as `probe run --conditions-file`.")
@click.option("--instruction", default="instruct-1", show_default=True,
              help="Instruction condition patched into the baseline and used as steering "
                   "direction.")
@click.option("--analysis-limit", type=int, default=4, show_default=True,
              help="Items per category used by patching, steering and the lens (as "
                   "`probe patch --limit`; at most --limit).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run folder (default: artifacts/locate/<model>).")
def main(model: str, limit: int | None, mode: str, data_dir: Path | None,
         conditions: tuple[str, ...], conditions_file: str | None, instruction: str,
         analysis_limit: int, device: str, batch_size: int, out: Path | None) -> None:
    """Run one model with --cache-acts, then every analysis stage available, then report."""
    run = out or Path("artifacts/locate") / model.replace("/", "--")
    data = str(data_dir or default_data_dir())
    try:
        cfg = RunConfig(model=model, limit=limit, mode=mode, data_dir=data, device=device,
                        batch_size=batch_size, cache_acts=True,
                        conditions=list(conditions or DEFAULT_CONDITIONS),
                        conditions_file=conditions_file)
        loaded = load_model(cfg.model, cfg.device, cfg.dtype)
        result = run_study(cfg, run, loaded=loaded)
        rows = (run / "generations.jsonl").read_text(encoding="utf-8").count("\n")
        click.echo(f"run: {result.folder.path} ({rows} rows)")
        plot_run(run)
        probes_and_directions(run)
        click.echo(f"probes: wrote {run / 'probes.json'}")
        # Each stage prints its result as soon as it ends (and resumes if killed).
        common = {"limit": analysis_limit, "data_dir": data}
        optional_stage("patching", "probe.analysis.patch_study", "run_patching", str(run),
                       instruction, loaded=loaded, **common)
        optional_stage("steering", "probe.analysis.steering", "run_steering", str(run),
                       instruction, loaded=loaded, **common)
        optional_stage("lens", "probe.analysis.lens", "run_lens", str(run), loaded=loaded,
                       **common)
        click.echo(f"report: {write_report(run)}")
    except ProbeError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
