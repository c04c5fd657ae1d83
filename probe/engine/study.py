"""The output study end to end: items -> units -> batches -> rows (+ activations) -> metrics.

Resumable by construction. A batch is the unit of work: its activations go to the shard
writer, then its rows are appended to ``generations.jsonl``. On restart, a batch counts as
done only if every row is in ``generations.jsonl`` (and, with ``cache_acts``, in a complete
activation shard); rows of unfinished batches are dropped and the batch re-run. Batches are
fixed by the item list, so a resumed run computes the same numbers in the same order, and
the finished folder equals an uninterrupted run's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from probe.activations import ShardWriter
from probe.conditions.registry import conditions_for, get_condition
from probe.config import RunConfig
from probe.data.items import Item
from probe.data.registry import LoadReport, get_benchmark
from probe.engine.hooks import STEPS_KEY, Capture, cache_hook_names
from probe.engine.inference import Engine
from probe.engine.models import LoadedModel, load_model
from probe.engine.pipeline import Unit, in_shard, plan_batches, plan_units, run_batch_safe
from probe.errors import ConfigError
from probe.store import faults
from probe.store.io import atomic_write_text, dumps, read_jsonl
from probe.store.provenance import provenance
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
                  writer: ShardWriter | None) -> list[bool]:
    """Which batches are complete; rows of incomplete ones are removed from the file."""
    done_rows = folder.done_keys()
    done_acts = writer.written_keys() if writer is not None else None
    if done_acts is not None:
        # Refused (too long) rows never get activations; they must not keep a batch open.
        done_acts |= {(r["item_id"], r["condition"]) for r in folder.rows() if r.get("truncated")}
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
    writer = capture = None
    if cfg.cache_acts:
        hooks = cache_hook_names(loaded.n_layers, cfg.cache_components)
        capture = Capture(hooks, cfg.act_positions, cfg.act_steps)
        # Shards are written in the background: the next batch runs while one is saved.
        writer = ShardWriter(folder.acts_dir, hooks, len(capture.positions), loaded.d_model,
                             cfg.act_dtype, cfg.act_rows_per_shard,
                             positions=capture.positions, background=True)
    flags = _done_batches(folder, batches, writer)
    todo = [b for b, ok in zip(batches, flags, strict=True) if not ok]
    _run_batches(engine, todo, cfg, folder, writer, capture, len(batches))
    return finish(folder, units, reports)


def _run_batches(engine: Engine, todo: list[list[Unit]], cfg: RunConfig, folder: RunFolder,
                 writer: ShardWriter | None, capture: Capture | None, total: int) -> None:
    already = writer.written_keys() if writer is not None else set()
    with folder.appender() as appender, tqdm(total=total, initial=total - len(todo),
                                             desc="batches", unit="batch") as bar:
        for batch in todo:
            size = engine.batch_size
            rows, acts = run_batch_safe(engine, batch, cfg, capture)
            if engine.batch_size < size:
                folder.note_fitting_batch_size(engine.loaded.device, engine.batch_size)
            if writer is not None:
                _write_acts(writer, rows, acts, already)
                faults.point("batch-acts", before=writer.drain)
            for row in rows:
                appender.append(row.to_json())
            faults.point("batch-rows")
            bar.update(1)
    if writer is not None:
        writer.close()


def _write_acts(writer: ShardWriter, rows: list, acts: dict, already: set) -> None:
    """Add a batch's activations, skipping rows a complete shard already holds."""
    ran = [r for r in rows if not r.truncated]
    keep = [i for i, r in enumerate(ran) if r.key not in already]
    if not keep:
        return
    steps = acts.pop(STEPS_KEY, None)
    k = sum(1 for p in writer.positions if p < 0)
    # A prompt shorter than k tokens: its first columns hold padding (or nothing), not
    # prompt positions. Store zeros there and record how many prompt columns are real.
    real = [min(k, int(ran[i].n_prompt_tokens or k)) for i in keep]
    metas = [{"item_id": ran[i].item_id, "condition": ran[i].condition,
              "benchmark": ran[i].benchmark, "group": ran[i].group,
              "positions": writer.positions, "n_prompt_positions": n,
              **({} if steps is None else {"n_steps": int(steps[i])})}
             for i, n in zip(keep, real, strict=True)]
    tensors = {name: t[keep] for name, t in acts.items()}
    for row, n in enumerate(real):
        if n < k:
            for t in tensors.values():
                t[row, :k - n] = 0
    writer.add(metas, tensors)


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
