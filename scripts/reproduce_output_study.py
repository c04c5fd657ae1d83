"""Reproduce the output study: run every model, draw its figures and report, then compare.

    .venv/bin/python scripts/reproduce_output_study.py --models smollm2-135m --limit 20

Writes ``artifacts/output_study/runs/<model>/`` (one run folder per model, resumable: rerun
the same command to continue) and ``artifacts/output_study/compare/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from probe.config import MODES, RunConfig
from probe.data.registry import default_data_dir
from probe.engine.models import DEFAULT_MODEL
from probe.engine.study import run_study
from probe.errors import ProbeError
from probe.presentation.compare import compare_runs, format_compare, write_compare
from probe.presentation.plots import plot_run
from probe.presentation.report import write_report


def model_list(values: tuple[str, ...]) -> list[str]:
    """--models values, each possibly comma-separated, in order, without repeats."""
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return list(dict.fromkeys(names)) or [DEFAULT_MODEL]


def run_one(model: str, out: Path, **opts: object) -> Path:
    """Run (or resume) one model's output study, then its plots and report."""
    cfg = RunConfig(model=model, **opts)  # type: ignore[arg-type]
    folder = out / "runs" / model.replace("/", "--")
    click.echo(f"== {model} -> {folder}")
    run_study(cfg, folder)
    plot_run(folder)
    click.echo(f"report: {write_report(folder)}")
    return folder


@click.command()
@click.option("--models", "models", multiple=True,
              help=f"Model(s), repeatable or comma-separated (default: {DEFAULT_MODEL}).")
@click.option("--limit", type=int, default=None, help="Items per category (default: all).")
@click.option("--mode", type=click.Choice(MODES), default="text", show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Benchmark data (default: $PROBE_DATA_DIR or ./data).")
@click.option("--condition", "conditions", multiple=True,
              help="Condition (repeatable; default: all that apply).")
@click.option("--conditions-file", type=click.Path(dir_okay=False), default=None,
              help="Your own conditions (.py, .yaml or .json), as `probe run --conditions-file`.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("artifacts/output_study"),
              show_default=True)
def main(models: tuple[str, ...], limit: int | None, mode: str, data_dir: Path | None,
         conditions: tuple[str, ...], conditions_file: str | None, device: str,
         batch_size: int, out: Path) -> None:
    """Run the output study for each model, then report each run and compare them."""
    try:
        folders = [run_one(m, out, limit=limit, mode=mode, device=device, batch_size=batch_size,
                           data_dir=str(data_dir or default_data_dir()),
                           conditions=list(conditions) or None,
                           conditions_file=conditions_file)
                   for m in model_list(models)]
        result = compare_runs(folders)
        click.echo(format_compare(result))
        for path in write_compare(result, out / "compare"):
            click.echo(f"wrote {path}")
    except ProbeError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
