"""Merge the run folders of ``probe run --shard i/N`` into one folder, as if run unsharded.

Shards split items by a hash of the item id (:func:`probe.engine.pipeline.in_shard`), so the
union of N shards is the unsharded item set. The merge checks the shards belong together
(same config up to ``shard`` and the keys that never change results), that indices
0..N-1 each appear once and that no (item_id, condition) row appears twice, then:

* rows are joined and put in the unsharded run's order, and metrics computed, by the
  study's own :func:`probe.engine.study.finish` (same code as an unsharded run);
* activations are checked (sha256), then re-written through a
  :class:`~probe.activations.ShardWriter` in the order an unsharded run writes them, so
  the merged ``activations/`` (and its ``rounds/``) matches an unsharded run's file for file;
* ``run.json`` holds the merged config (``shard: null``) and a ``merged_from`` list.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from probe.activations import INDEX, ActivationStore, ShardWriter
from probe.activations.layout import ROUNDS_DIR
from probe.config import RunConfig
from probe.engine.pipeline import Unit, plan_batches, plan_units
from probe.engine.study import data_files, finish, load_items, resolve_conditions
from probe.errors import ConfigError
from probe.store.io import atomic_write_json, atomic_write_text, dumps, read_json
from probe.store.provenance import file_record
from probe.store.run_schema import RESUME_IGNORED, config_diff
from probe.store.runlock import LOCK_NAME, run_lock
from probe.store.runs import RunFolder

log = logging.getLogger(__name__)

# Keys that may differ between shards: the shard itself, and what RunFolder lets a resume
# change because it does not change results (each GPU has its own device string).
MAY_DIFFER = frozenset({"shard", *RESUME_IGNORED})
Key = tuple[str, str]


def merge_runs(shard_dirs: Sequence[str | Path], out: str | Path) -> RunFolder:
    """Merge finished shard run folders into a new run folder ``out``; returns it."""
    shards = _open_shards(shard_dirs)
    cfg = RunConfig.from_dict({**shards[0].config, "shard": None})
    _check_data_unchanged(cfg, shards[0])
    items, reports = load_items(cfg)
    from probe.conditions.files import RECORD_KEY, register_record

    record = shards[0].provenance.get(RECORD_KEY)
    from_file = register_record(record, str(shards[0].run_json)) if record else []
    units = plan_units(items, resolve_conditions(cfg, from_file))
    rows = _collect_rows(shards, {u.key for u in units})
    with run_lock(out, "merge"):
        folder = _create(Path(out), cfg, shards)
        atomic_write_text(folder.generations,
                          "".join(dumps(r, indent=None) + "\n" for r in rows))
        if cfg.cache_acts:
            _merge_acts(shards, folder, _act_order(units))
            # Multi-turn rows' earlier rounds: a store of its own, merged the same way.
            _merge_acts(shards, folder, _act_order(units), ROUNDS_DIR)
        finish(folder, units, reports)
        return RunFolder.open(folder.path)


def _open_shards(shard_dirs: Sequence[str | Path]) -> list[RunFolder]:
    """Open, check and sort (by shard index) the shard folders."""
    if not shard_dirs:
        raise ConfigError("merge needs at least one shard folder")
    shards = [RunFolder.open(d) for d in shard_dirs]
    first = shards[0]
    for other in shards[1:]:
        diff = {k for k in config_diff(first.config, other.config)
                if k.split(".")[0] not in MAY_DIFFER}
        if diff:
            raise ConfigError(f"{other.path} and {first.path} were run with different "
                              f"configs; differing keys: {', '.join(sorted(diff))}")
        _check_same_inputs(first, other)
    indices = []
    for folder in shards:
        spec = folder.config.get("shard")
        if spec is None:
            raise ConfigError(f"{folder.path} is not a shard (config shard is null)")
        indices.append(RunConfig(shard=spec).shard_index() or (0, 1))
        if not folder.stage_done("generate"):
            raise ConfigError(f"{folder.path} has not finished; rerun its `probe run` "
                              f"command to resume it, then merge")
    _check_indices(indices, [s.path for s in shards])
    return [s for _, s in sorted(zip(indices, shards, strict=True), key=lambda p: p[0])]


def _file_hashes(folder: RunFolder) -> dict[str, str | None]:
    """Role or data file name -> sha256, as recorded in the folder's run.json."""
    files = folder.provenance.get("files") or {}
    return {name: (rec or {}).get("sha256") for name, rec in files.items()}


def _check_same_inputs(first: RunFolder, other: RunFolder) -> None:
    """Shards must have read the same data files and model weights, byte for byte.

    ``data_dir`` may be spelled differently per machine (it is not compared as config),
    so the hashes recorded at run time are what tells whether two shards saw one data set.
    """
    a, b = _file_hashes(first), _file_hashes(other)
    differ = sorted(n for n in set(a) | set(b) if a.get(n) != b.get(n))
    if differ:
        raise ConfigError(f"{other.path} and {first.path} ran on different data or model "
                          f"files (sha256 differs or is missing: {', '.join(differ)}); merge "
                          f"only the shards of one run")
    facts = ("n_params", "n_layers", "d_model")
    ma, mb = first.provenance.get("model") or {}, other.provenance.get("model") or {}
    if any(ma.get(f) != mb.get(f) for f in facts):
        raise ConfigError(f"{other.path} and {first.path} ran different models "
                          f"({', '.join(f'{f} {ma.get(f)} vs {mb.get(f)}' for f in facts)})")


def _check_data_unchanged(cfg: RunConfig, first: RunFolder) -> None:
    """The data files the merge reloads (for item order) are those the shards ran on."""
    recorded = _file_hashes(first)
    for rel, path in data_files(cfg).items():
        if rel in recorded and file_record(path)["sha256"] != recorded[rel]:
            raise ConfigError(f"{path} changed since the shards ran (sha256 differs from "
                              f"{first.path}/run.json); merge with the data they ran on")


def _check_indices(indices: list[tuple[int, int]], paths: list[Path]) -> None:
    """Every shard i of the same N, each of 0..N-1 exactly once."""
    counts = {n for _, n in indices}
    if len(counts) != 1:
        raise ConfigError(f"shards split into different N: {sorted(counts)}")
    n = counts.pop()
    seen: dict[int, Path] = {}
    for (i, _), path in zip(indices, paths, strict=True):
        if i in seen:
            raise ConfigError(f"shard {i}/{n} given twice: {seen[i]} and {path}")
        seen[i] = path
    missing = sorted(set(range(n)) - set(seen))
    if missing:
        raise ConfigError(f"missing shards of {n}: {', '.join(f'{i}/{n}' for i in missing)}")


def _collect_rows(shards: list[RunFolder], expected: set[Key]) -> list[dict[str, Any]]:
    """All shards' rows; a key twice, a missing key or a foreign key is an error."""
    rows: list[dict[str, Any]] = []
    owner: dict[Key, Path] = {}
    for folder in shards:
        for row in folder.rows():
            key = (str(row["item_id"]), str(row["condition"]))
            if key in owner:
                raise ConfigError(f"row {key} is in both {owner[key]} and {folder.path}")
            owner[key] = folder.path
            rows.append(row)
    missing, extra = expected - set(owner), set(owner) - expected
    if missing or extra:
        raise ConfigError(
            f"shard rows do not match the configured items: {len(missing)} missing "
            f"(e.g. {sorted(missing)[:2]}), {len(extra)} unexpected (e.g. {sorted(extra)[:2]});"
            f" are the data dir and every shard complete and unchanged?")
    return rows


def _create(out: Path, cfg: RunConfig, shards: list[RunFolder]) -> RunFolder:
    """A fresh run folder with the merged config and the list of sources."""
    if out.exists() and (not out.is_dir() or any(p.name != LOCK_NAME for p in out.iterdir())):
        raise ConfigError(f"--out {out} exists and is not empty; merge into a new folder")
    commits = {str(s.provenance.get("git", {}).get("commit")) for s in shards}
    if len(commits) > 1:
        log.warning("shards ran at different commits: %s", sorted(commits))
    folder = RunFolder.create_or_resume(out, cfg.to_dict(), shards[0].provenance)
    folder.info["merged_from"] = [
        {"path": str(s.path.resolve()), "shard": s.config["shard"],
         "created": s.info.get("created"), "git": s.provenance.get("git"),
         "n_rows": len(s.rows())} for s in shards]
    atomic_write_json(folder.run_json, folder.info)
    return folder


def _act_order(units: list[Unit]) -> list[Key]:
    """Keys in the order an unsharded run writes activations: its batch plan, flattened.

    Within a condition the plan sorts by prompt length then position, so the order does not
    depend on the batch size. ``plan_batches`` does not use its engine argument.
    """
    batches = plan_batches(units, batch_size=max(1, len(units)))
    return [u.key for batch in batches for u in batch]


def _merge_acts(shards: list[RunFolder], folder: RunFolder, order: list[Key],
                sub: str = "") -> None:
    """Verify every shard's checksums, then re-write all rows in ``order`` into ``folder``
    (the store in the ``sub`` folder of each one's activations, when given)."""
    # A shard with no rows (more shards than items) has no index to read; nor has a shard
    # without multi-turn rows a rounds store.
    shards = [s for s in shards if (s.acts_dir / sub / INDEX).is_file() or
              (not sub and s.rows())]
    if not shards:
        return
    stores = [ActivationStore(s.acts_dir / sub) for s in shards]
    head = stores[0]
    for store, shard in zip(stores, shards, strict=True):
        store.verify()
        layout = (store.hook_names, store.positions, store.d_model, store.dtype)
        if layout != (head.hook_names, head.positions, head.d_model, head.dtype):
            raise ConfigError(f"{shard.acts_dir / sub} stores activations with another layout")
    where = {key: (s, row) for s, store in enumerate(stores)
             for key, row in store.key_to_row().items()}
    keys = [k for k in order if k in where]  # truncated prompts have no activations
    per_shard = int(read_json(shards[0].acts_dir / sub / INDEX).get("rows_per_shard", 256))
    writer = ShardWriter(folder.acts_dir / sub, head.hook_names, head.n_positions, head.d_model,
                         head.dtype, rows_per_shard=per_shard, positions=head.positions)
    for chunk in _chunks(keys, per_shard):
        metas, acts = _gather(stores, [where[k] for k in chunk])
        writer.add(metas, acts)
    writer.close()
    merged = ActivationStore(folder.acts_dir / sub)
    merged.verify()
    if len(merged) != len(where):
        raise ConfigError(f"merged {len(merged)} activation rows, shards hold {len(where)}")


def _chunks(keys: list[Key], size: int) -> Iterator[list[Key]]:
    for start in range(0, len(keys), size):
        yield keys[start:start + size]


def _gather(stores: list[ActivationStore], spots: list[tuple[int, int]]
            ) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    """Meta rows and (n, positions, d) tensors of the given (store, row) spots, in order."""
    metas = [{k: v for k, v in stores[s].rows[r].items() if k != "row"} for s, r in spots]
    acts: dict[str, torch.Tensor] = {}
    for hook in stores[0].hook_names:
        out = torch.empty((len(spots), stores[0].n_positions, stores[0].d_model))
        for s, store in enumerate(stores):
            mine = [i for i, (t, _) in enumerate(spots) if t == s]
            if mine:
                # Stored floats widen to float32 exactly and narrow back unchanged.
                out[mine] = store.load(hook, [spots[i][1] for i in mine], position=None)
        acts[hook] = out
    return metas, acts
