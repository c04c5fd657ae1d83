"""The output study end to end: items -> units -> batches -> rows (+ activations) -> metrics.

Resumable by construction. A batch is the unit of work: its activations go to the shard
writer, then its rows are appended to ``generations.jsonl``. On restart, a batch counts as
done only if every row is in ``generations.jsonl`` (and, with ``cache_acts``, in a complete
activation shard, a multi-turn row also in the rounds store: :mod:`probe.engine.act_rows`);
rows of unfinished batches are dropped and the batch re-run. Batches are fixed by the item
list, so a resumed run computes the same numbers in the same order, and the finished folder
equals an uninterrupted run's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from probe.conditions.registry import conditions_for, get_condition
from probe.config import RunConfig
from probe.data.items import Item
from probe.data.registry import LoadReport, get_benchmark
from probe.engine.act_rows import ActWriters, acts_done, open_writers, write_acts
from probe.engine.attention import resolve_attention
from probe.engine.inference import Engine
from probe.engine.models import LoadedModel, load_model
from probe.engine.pipeline import Unit, in_shard, plan_batches, plan_units, run_batch_safe
from probe.errors import ConfigError
from probe.store import faults
from probe.store.io import atomic_write_text, dumps, read_jsonl
from probe.store.provenance import provenance
from probe.store.run_schema import ADDED_KEYS
from probe.store.runlock import run_lock
from probe.store.runs import RunFolder

log = logging.getLogger(__name__)


@dataclass
class StudyResult:
    """What a finished run hands back to the caller."""

    folder: RunFolder
    metrics: dict[str, Any]
    reports: list[LoadReport]
    n_rows: int


def load_items(cfg: RunConfig) -> tuple[list[Item], list[LoadReport]]:
    """Every benchmark's items, limited and sharded as configured."""
    items: list[Item] = []
    reports = []
    for name in cfg.benchmarks:
        kwargs: dict[str, Any] = {"limit": cfg.limit, "seed": cfg.seed}
        if name == "bbq":
            kwargs["categories"] = cfg.categories
        found, report = get_benchmark(name).load(Path(cfg.data_dir), **kwargs)
        items += [it for it in found if in_shard(it.item_id, cfg.shard_index())]
        reports.append(report)
    return items, reports


def resolve_conditions(cfg: RunConfig, from_file: list[str] | None = None) -> list[str]:
    """The configured conditions (validated), or every one that applies to the benchmarks:
    the built-in ones and those of the run's conditions file (``from_file``), never others
    that happen to be registered in this process (a notebook may hold another run's)."""
    if cfg.conditions:
        for name in cfg.conditions:
            get_condition(name)
        return list(cfg.conditions)
    from probe.conditions.files import builtin_names

    allowed = {*builtin_names(), *(from_file or [])}
    names: list[str] = []
    for bench in cfg.benchmarks:
        names += [n for n in conditions_for(bench) if n in allowed and n not in names]
    return names


def model_facts(loaded: LoadedModel) -> dict[str, Any]:
    """What compare and report need to know of the model: size, chat or base, shape."""
    return {"name": loaded.name, "source": loaded.source, "chat": loaded.chat,
            "n_params": sum(p.numel() for p in loaded.hf_model.parameters()),
            "n_layers": loaded.n_layers, "d_model": loaded.d_model}


def data_files(cfg: RunConfig) -> dict[str, Path]:
    """The benchmark files of the configured benchmarks that exist, by relative path."""
    files = {}
    for bench in cfg.benchmarks:
        for rel in get_benchmark(bench).files:
            path = Path(cfg.data_dir) / rel
            if path.is_file():
                files[rel] = path
    return files


def _done_batches(folder: RunFolder, batches: list[list[Unit]],
                  writers: ActWriters | None) -> list[bool]:
    """Which batches are complete; rows of incomplete ones are removed from the file."""
    done_rows = folder.done_keys()
    done_acts = acts_done(writers, folder) if writers is not None else None
    flags = []
    for batch in batches:
        keys = {u.key for u in batch}
        flags.append(keys <= done_rows and (done_acts is None or keys <= done_acts))
    keep = {u.key for batch, ok in zip(batches, flags, strict=True) if ok for u in batch}
    if done_rows - keep:
        rows = [r for r in folder.rows() if (r["item_id"], r["condition"]) in keep]
        atomic_write_text(folder.generations, "".join(dumps(r, indent=None) + "\n"
                                                      for r in rows))
    return flags


def run_study(cfg: RunConfig, out: Path, loaded: LoadedModel | None = None) -> StudyResult:
    """Run (or resume) the study described by ``cfg`` into the folder ``out``.

    The folder is locked (:func:`probe.store.runlock.run_lock`) from before the model loads until
    the metrics are written: a second process on the same ``out`` is refused at once.
    """
    cfg.validate()
    from probe.conditions.files import load_conditions_file

    record = None
    if cfg.conditions_file is not None:
        record = load_conditions_file(cfg.conditions_file)
    conditions = resolve_conditions(cfg, [c["name"] for c in (record or {}).get("conditions", [])])
    items, reports = load_items(cfg)
    # A shard may hold no items when there are more shards than items: it finishes empty.
    if not items and cfg.shard is None:
        raise ConfigError("no items to run: check --benchmark, --category and the data dir")
    with run_lock(out, "run"):
        return _run_locked(cfg, Path(out), loaded, conditions, items, reports, record)


def _run_locked(cfg: RunConfig, out: Path, loaded: LoadedModel | None, conditions: list[str],
                items: list[Item], reports: list[LoadReport],
                record: dict[str, Any] | None) -> StudyResult:
    loaded = loaded or load_model(cfg.model, cfg.device, cfg.dtype, cfg.trust_remote_code,
                                 cfg.device_map, cfg.allow_pickle)
    from probe.conditions.files import RECORD_KEY, conditions_used

    cfg = replace(cfg, attention=run_kernel(cfg.attention, out, loaded))
    extra = {**data_files(cfg), "model": Path(loaded.source)}
    if record is not None:  # its hash under "files" makes a resume with an edited file fail
        extra[RECORD_KEY] = Path(record["path"])
    facts = provenance({k: v for k, v in extra.items() if v.exists()})
    facts["model"] = model_facts(loaded)
    if record is not None:
        facts[RECORD_KEY] = record
    facts["conditions"] = conditions_used(conditions, record)
    if cfg.cache_acts and cfg.act_positions > loaded.n_ctx:
        raise ConfigError(f"--act-positions {cfg.act_positions} is more than the model's "
                          f"{loaded.n_ctx} positions")
    folder = RunFolder.create_or_resume(out, cfg.to_dict(), facts)
    # A resumed run starts at the size that fitted before instead of failing again first.
    start = min(cfg.batch_size, folder.fitting_batch_size(loaded.device) or cfg.batch_size)
    engine = Engine(loaded, start, cfg.attention)
    units = plan_units(items, conditions)
    batches = plan_batches(units, cfg.batch_size)
    writers = open_writers(cfg, folder, loaded, units) if cfg.cache_acts else None
    flags = _done_batches(folder, batches, writers)
    todo = [b for b, ok in zip(batches, flags, strict=True) if not ok]
    _run_batches(engine, todo, cfg, folder, writers, len(batches))
    return finish(folder, units, reports)


def run_kernel(requested: str, out: Path, loaded: LoadedModel) -> str:
    """The attention kernel a run uses, which run.json records (never "auto"), so that
    re-running its config runs the same one. "auto" resuming a folder takes the kernel the
    folder ran with (eager for runs from before "auto" was the default, or before the option
    existed), so the same command still resumes; otherwise it resolves for the model."""
    if requested == "auto":
        try:
            stored = {**ADDED_KEYS, **RunFolder.open(out).config}["attention"]
        except ConfigError:
            stored = None  # no run there yet; create_or_resume reports a broken one
        if stored in ("eager", "sdpa"):
            requested = stored
    return resolve_attention(requested, loaded.hf_model)


def _run_batches(engine: Engine, todo: list[list[Unit]], cfg: RunConfig, folder: RunFolder,
                 writers: ActWriters | None, total: int) -> None:
    already = writers.main.written_keys() if writers is not None else set()
    already_rounds = writers.rounds.written_keys() if writers and writers.rounds else set()
    capture = writers.capture if writers is not None else None
    n_cols = writers.n_cols if writers is not None else 0
    with folder.appender() as appender, tqdm(total=total, initial=total - len(todo),
                                             desc="batches", unit="batch") as bar:
        for batch in todo:
            size = engine.batch_size
            rows, acts = run_batch_safe(engine, batch, cfg, capture, n_cols)
            if engine.batch_size < size:
                folder.note_fitting_batch_size(engine.loaded.device, engine.batch_size)
            if writers is not None:
                write_acts(writers, rows, acts, already, already_rounds)
                faults.point("batch-acts", before=writers.drain)
            for row in rows:
                appender.append(row.to_json())
            faults.point("batch-rows")
            bar.update(1)
    if writers is not None:
        writers.close()


def finish(folder: RunFolder, units: list[Unit], reports: list[LoadReport]) -> StudyResult:
    """Rewrite rows in canonical order and compute metrics (no model needed)."""
    from probe.scoring.metrics import compute_metrics

    order = {u.key: i for i, u in enumerate(units)}
    rows = sorted(read_jsonl(folder.generations),
                  key=lambda r: order.get((r["item_id"], r["condition"]), len(order)))
    atomic_write_text(folder.generations, "".join(dumps(r, indent=None) + "\n" for r in rows))
    metrics = compute_metrics(rows)
    faults.point("metrics")
    folder.write_metrics(metrics)
    folder.mark_stage_done("generate", n_rows=len(rows))
    return StudyResult(folder, metrics, reports, len(rows))
