"""``probe data download`` and ``probe data check``: get and verify the benchmark files."""

from __future__ import annotations

from pathlib import Path

import click

from probe.data import download as dl
from probe.data.registry import default_data_dir
from probe.errors import DataError

DATA_DIR_HELP = "Data folder (default: $PROBE_DATA_DIR, else ./data)."


def _data_dir(value: Path | None) -> Path:
    return value if value is not None else default_data_dir()


@click.group("data")
def data() -> None:
    """Download and check the benchmark data files."""


@data.command("download")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help=DATA_DIR_HELP)
@click.option("--base-url", default=None,
              help="Mirror laid out like the data dir (<url>/bbq/Age.jsonl...); "
                   "default: the official GitHub repositories.")
@click.option("--only", type=click.Choice(sorted(dl.FILES)), default=None,
              help="Fetch one benchmark only.")
def download_cmd(data_dir: Path | None, base_url: str | None, only: str | None) -> None:
    """Fetch the official BBQ and Winogender files, verifying each before keeping it."""
    root = _data_dir(data_dir)
    report = dl.download(root, base_url=base_url, only=only)
    click.echo(f"data dir: {root}")
    click.echo(report.summary())


@data.command("check")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help=DATA_DIR_HELP)
def check_cmd(data_dir: Path | None) -> None:
    """List which data files are present, missing, or corrupt (digest mismatch)."""
    root = _data_dir(data_dir)
    report = dl.check(root)
    click.echo(f"data dir: {root}")
    click.echo(report.summary())
    if report.corrupt:
        raise DataError(f"corrupt files: {', '.join(report.corrupt)}; "
                        "delete them and run `probe data download`", str(root))
