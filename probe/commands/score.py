"""``probe score``: metrics from rows, never a model.

Given a run folder or its ``generations.jsonl``, re-read every row's answer from the model's
stored evidence (:mod:`probe.scoring.repredict`: generated text, option scores,
counterbalanced orders) and recompute ``metrics.json``; rows whose answer changed under the
current rules are rewritten in ``generations.jsonl`` (atomically) and counted;
given other JSONL files, score them as external BBQ predictions. A run folder of another
schema version is refused (:func:`probe.store.run_schema.schema_error`): its rows mean
something else.
A model run's ``generations.jsonl`` without its ``run.json`` is refused too, since nothing
then says which schema its rows follow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from probe.config import MODES
from probe.data.bbq import read_jsonl
from probe.errors import ConfigError, DataError
from probe.scoring.external import score_predictions
from probe.scoring.metrics import compute_metrics, format_table
from probe.scoring.repredict import repredict
from probe.store.io import atomic_write_json, atomic_write_text, dumps, read_jsonl_numbered
from probe.store.runlock import run_lock
from probe.store.runs import RunFolder, unique_rows

GENERATIONS = "generations.jsonl"
# What scoring reads from a run's row, per benchmark (row fields, then meta fields): a row
# without them would be silently left out of every cell, giving empty metrics.
ROW_FIELDS = {"bbq": ("pred", "label", "category", "context_condition"),
              "winogender": ("pred",)}
META_FIELDS = {"bbq": ("target_index", "unknown_index"),
               "winogender": ("occupation", "bls_pct_female")}


def check_run_row(row: dict[str, Any], path: Path, line: int) -> None:
    """Raise DataError (file:line) unless ``row`` is a scorable row of a probe run."""
    bench = row.get("benchmark")
    if bench not in ROW_FIELDS:
        raise DataError(f"row has benchmark {bench!r}, expected one of {sorted(ROW_FIELDS)}; "
                        f"is this a probe run's {GENERATIONS}?", str(path), line)
    meta = row.get("meta")
    missing = [f for f in ROW_FIELDS[bench] if f not in row] + (
        [f"meta.{f}" for f in META_FIELDS[bench] if f not in meta]
        if isinstance(meta, dict) else ["meta"])
    if missing:
        raise DataError(f"{bench} row lacks {', '.join(missing)}", str(path), line)


def _run_rows(path: Path) -> list[dict[str, Any]] | None:
    """Rows of a run folder or generations.jsonl, or None if ``path`` is neither."""
    gen = path / GENERATIONS if path.is_dir() else path
    if gen.name != GENERATIONS:
        return None
    if not gen.is_file():
        raise DataError(f"no {GENERATIONS} in this folder", str(path))
    numbered: list[tuple[int, dict[str, Any]]] = []
    if (gen.parent / "run.json").is_file():
        RunFolder.open(gen.parent)  # refuses another schema version
        numbered = read_jsonl_numbered(gen)  # a killed run's torn last line is left out
    else:
        for number, row in read_jsonl(gen):
            if not isinstance(row, dict):
                raise DataError(f"expected a JSON object, got {type(row).__name__}", str(gen),
                                number)
            numbered.append((number, row))
        if any(row.get("mode") in MODES for _, row in numbered):
            raise ConfigError(f"{gen} holds a model run's rows but no run.json lies beside it, "
                              f"so their schema version is unknown; score the run folder, or "
                              f"re-run with `probe run`")
    for number, row in numbered:
        check_run_row(row, gen, number)
    rows = unique_rows(numbered, gen)
    if not rows:
        raise DataError("no rows", str(gen))
    return rows


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows in the run writer's own line format (sorted keys, one JSON object a line)."""
    atomic_write_text(path, "".join(dumps(r, indent=None) + "\n" for r in rows))


def score_files(files: list[Path], pred_field: str | None, condition: str | None,
                out: Path | None, data_dir: Path | None
                ) -> tuple[Path, dict[str, Any], list[tuple[str, str]]]:
    """Score ``files``, write metrics.json (and rows, for external files); returns the
    output folder, the metrics and the (item_id, condition) keys whose answer was re-read
    differently from the stored one."""
    runs = [_run_rows(f) for f in files]
    changed: list[tuple[str, str]] = []
    if any(r is not None for r in runs):
        if len(files) != 1:
            raise ConfigError("give one run folder or generations.jsonl at a time")
        result = repredict(runs[0] or [])
        rows, changed = result.rows, result.changed
        source = files[0] if files[0].is_dir() else files[0].parent
        out = out or source
        write_rows = bool(changed) or out.resolve() != source.resolve()
        metrics = compute_metrics(rows)
    else:
        rows, metrics = score_predictions(files, pred_field, data_dir, condition)
        out = out or Path("artifacts") / f"score-{files[0].stem}"
        write_rows = True
    with run_lock(out, "score"):
        if write_rows:
            _write_rows(out / GENERATIONS, rows)
        # The same writer as a run's, so re-scoring a run reproduces its metrics.json byte
        # for byte.
        atomic_write_json(out / "metrics.json", metrics)
    return out, metrics, changed


@click.command("score")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--pred-field", default=None,
              help="Field holding the prediction in external files (default: the one "
                   "non-BBQ field).")
@click.option("--condition", default=None,
              help="Condition name for external predictions (default: the field name).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: the run folder, or ./artifacts/score-<stem>).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Data folder to join external lines that lack BBQ fields.")
@click.option("--by-category", is_flag=True, help="Print BBQ metrics per category too.")
def score(files: tuple[Path, ...], pred_field: str | None, condition: str | None,
          out: Path | None, data_dir: Path | None, by_category: bool) -> None:
    """Compute metrics from a run's rows or from external prediction files."""
    folder, metrics, changed = score_files(list(files), pred_field, condition, out, data_dir)
    click.echo(format_table(metrics, by_category))
    if changed:
        click.echo(f"re-read {len(changed)} answers differently from the stored ones under the "
                   f"current rules (first: {changed[0][0]} / {changed[0][1]}); "
                   f"rewrote {folder / GENERATIONS}")
    click.echo(f"wrote {folder / 'metrics.json'}")
