"""``probe plots``, ``probe report`` and ``probe compare``: figures, HTML page, cross-run table."""

from __future__ import annotations

from pathlib import Path

import click

from probe.errors import ConfigError
from probe.presentation.compare import compare_runs, format_compare, parse_size, write_compare

RUN_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command("plots")
@click.argument("run", type=RUN_DIR)
def plots_cmd(run: Path) -> None:
    """(Re)draw the output-study figures of RUN into RUN/plots/."""
    from probe.api import plot_run  # probe.plot_run in Python

    for path in plot_run(run):
        click.echo(str(path))


@click.command("report")
@click.argument("run", type=RUN_DIR)
@click.option("--plots/--no-plots", default=True, show_default=True,
              help="Redraw the output-study figures first.")
@click.option("--open", "open_", is_flag=True, help="Open the page in a browser.")
def report_cmd(run: Path, plots: bool, open_: bool) -> None:
    """Write RUN/report.html: config, provenance, metrics, every figure, analyses."""
    from probe.api import write_report  # probe.write_report in Python

    path = write_report(run, redraw=plots)
    click.echo(str(path))
    if open_:
        click.launch(str(path))


def _sizes(values: tuple[str, ...]) -> dict[str, int]:
    """--size NAME=COUNT pairs; NAME is a model name or a run folder (path or last part)."""
    out = {}
    for value in values:
        name, sep, count = value.rpartition("=")
        if not sep or not name:
            raise ConfigError(f"--size {value!r}: expected NAME=COUNT, e.g. smollm2-135m=135M")
        out[name] = parse_size(count)
    return out


@click.command("compare")
@click.argument("runs", nargs=-1, required=True, type=RUN_DIR)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("artifacts/compare"), show_default=True,
              help="Folder for compare.json, compare.csv and compare.png.")
@click.option("--size", "sizes", multiple=True, metavar="NAME=COUNT",
              help="Parameter count of a model or run (e.g. smollm2-135m=135M), repeatable; "
                   "overrides what run.json or the local model files say.")
def compare_cmd(runs: tuple[Path, ...], out: Path, sizes: tuple[str, ...]) -> None:
    """Self-correction gain (instructed - baseline) per run against model size and kind."""
    result = compare_runs(list(runs), _sizes(sizes))
    click.echo(format_compare(result))
    for path in write_compare(result, out):
        click.echo(f"wrote {path}")
