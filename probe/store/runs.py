"""Run folders: one ``--out`` directory per run, resumable and self-describing.

Layout::

    run.json            schema_version, config, provenance, created, stages, resumes
    generations.jsonl   one GenerationRow per (item_id, condition), append-only
    metrics.json        scoring output
    activations/        ShardWriter shards + index.json (see probe.activations); rounds/
                        the same for multi-turn rows' earlier rounds
    plots/              figures
    probes.json, patching.json, steering.json, lens.json   analysis results

A folder is only ever resumed with the config it was created with (up to the keys in
:data:`~probe.store.run_schema.RESUME_IGNORED`), so rows computed under two configs can never
be mixed.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from probe.errors import ConfigError, DataError, UnknownNameError
from probe.store.io import (
    JsonlAppender,
    atomic_write_json,
    read_json,
    read_jsonl_numbered,
    repair_jsonl,
    to_jsonable,
)
from probe.store.run_schema import (
    SCHEMA_VERSION,
    changed_files,
    config_diff,
    ignored,
    schema_error,
)
from probe.store.runlock import LOCK_NAME

ANALYSIS_FILES: dict[str, str] = {
    "probes": "probes.json",
    "patching": "patching.json",
    "steering": "steering.json",
    "lens": "lens.json",
}

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def unique_rows(numbered: list[tuple[int, dict[str, Any]]], path: Path) -> list[dict[str, Any]]:
    """The rows of a generations file, checked: each (item_id, condition) at most once.

    Two rows for one key mean two writers shared the folder (or files were concatenated);
    keeping either would count an item twice or pick one arbitrarily, so it is an error
    naming both lines.
    """
    first: dict[tuple[str, str], int] = {}
    rows = []
    for line_no, row in numbered:
        if "item_id" not in row or "condition" not in row:
            raise DataError("row lacks item_id or condition", str(path), line_no)
        key = (str(row["item_id"]), str(row["condition"]))
        if key in first:
            raise DataError(f"row {key} is also on line {first[key]}: two processes wrote this "
                            f"folder, or files were joined; rerun into a new --out", str(path),
                            line_no)
        first[key] = line_no
        rows.append(row)
    return rows


class RunFolder:
    """A run's output directory; build with :meth:`create_or_resume` or :meth:`open`."""

    def __init__(self, path: str | Path, info: dict[str, Any]):
        self.path = Path(path)
        self.info = info

    # -- paths ---------------------------------------------------------------------------
    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def generations(self) -> Path:
        return self.path / "generations.jsonl"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def acts_dir(self) -> Path:
        return self.path / "activations"

    @property
    def plots_dir(self) -> Path:
        return self.path / "plots"

    def path_for(self, name: str) -> Path:
        """Path of an analysis file by name ("probes" or "probes.json")."""
        stem = name.removesuffix(".json")
        if stem not in ANALYSIS_FILES:
            raise UnknownNameError("analysis file", name, ANALYSIS_FILES)
        return self.path / ANALYSIS_FILES[stem]

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.info.get("config", {}))

    @property
    def provenance(self) -> dict[str, Any]:
        return dict(self.info.get("provenance", {}))

    # -- opening -------------------------------------------------------------------------
    @staticmethod
    def _read_info(path: Path) -> dict[str, Any]:
        """Load and check run.json; any problem is a ConfigError naming the folder."""
        run_json = path / "run.json"
        if not run_json.is_file():
            raise ConfigError(f"{path} is not a run folder (no run.json); use a new --out")
        try:
            info = read_json(run_json)
        except DataError as exc:
            raise ConfigError(f"{run_json} is corrupt ({exc}); use a new --out") from exc
        if not isinstance(info, dict) or not isinstance(info.get("config"), dict):
            raise ConfigError(f"{run_json} is corrupt (no config); use a new --out")
        version = info.get("schema_version")
        if version != SCHEMA_VERSION:
            raise schema_error(path, version, info["config"])
        return info

    @classmethod
    def open(cls, path: str | Path) -> RunFolder:
        """Open an existing run for analysis; a missing or foreign folder is a ConfigError."""
        path = Path(path)
        if not path.is_dir():
            raise ConfigError(f"run folder {path} does not exist")
        return cls(path, cls._read_info(path))

    @classmethod
    def create_or_resume(cls, path: str | Path, config: dict[str, Any],
                         provenance: dict[str, Any]) -> RunFolder:
        """Start a run in ``path`` or resume the one there if its config matches.

        A resume with differing :data:`~probe.store.run_schema.RESUME_IGNORED` keys, or under
        other provenance (a new commit), is allowed and recorded in run.json's "resumes" list.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--out {path} is a file, not a folder")
        if not path.is_dir() or not any(p.name != LOCK_NAME for p in path.iterdir()):
            return cls._start(path, config, provenance)
        info = cls._read_info(path)
        diff = config_diff(info["config"], config)
        blocking = {k: v for k, v in diff.items() if not ignored(k)}
        if blocking and cls._nothing_computed(path):
            # A start that failed before its first row (bad flag, no GPU) must not pin the
            # folder to its config: nothing is lost by starting again with the new one.
            log.info("run folder %s holds no results yet; starting it with the new config",
                     path)
            return cls._start(path, config, provenance)
        if blocking:
            detail = "; ".join(f"key {k}: {o!r} -> {n!r}" for k, (o, n) in blocking.items())
            raise ConfigError(f"run folder {path} was written with another config: {detail}; "
                              f"use a new --out")
        changed = changed_files(info.get("provenance", {}), provenance)
        if changed:
            raise ConfigError(f"run folder {path} was written from other data or model files "
                              f"(sha256 differs: {', '.join(changed)}); use a new --out")
        folder = cls(path, info)
        folder._remove_temp_files()
        folder.info.setdefault("resumes", []).append(
            {"at": _now(), "provenance": to_jsonable(provenance),
             "changed": {k: list(v) for k, v in diff.items()}})
        folder._save()
        return folder

    @classmethod
    def _start(cls, path: Path, config: dict[str, Any],
               provenance: dict[str, Any]) -> RunFolder:
        info = {"schema_version": SCHEMA_VERSION, "config": to_jsonable(config),
                "provenance": to_jsonable(provenance), "created": _now(), "stages": {}}
        folder = cls(path, info)
        folder._save()
        return folder

    @staticmethod
    def _nothing_computed(path: Path) -> bool:
        """No rows, activation shards or analyses: run.json, the lock, temp files, and an
        empty generations.jsonl or shard-less activations/ that a failed start opened."""
        for p in path.iterdir():
            empty = ((p.name == "generations.jsonl" and p.stat().st_size == 0)
                     or (p.name == "activations" and not any(p.rglob("shard-*"))))
            if not (empty or p.name in ("run.json", LOCK_NAME) or p.name.endswith(".tmp")):
                return False
        return True

    def _save(self) -> None:
        atomic_write_json(self.run_json, self.info)

    def _remove_temp_files(self) -> None:
        """Delete ``.<name>.<random>.tmp`` files: atomic writes a kill interrupted (their
        targets are intact: the rename never happened). activations/ cleans its own."""
        for tmp in self.path.glob(".*.tmp"):
            if tmp.is_file():
                log.info("removing unfinished write %s", tmp)
                tmp.unlink()

    # -- generations ---------------------------------------------------------------------
    def _load_rows(self) -> list[dict[str, Any]]:
        """Rows of generations.jsonl; a key written twice is an error (see :func:`unique_rows`)."""
        if not self.generations.exists():
            return []
        return unique_rows(read_jsonl_numbered(self.generations), self.generations)

    def rows(self) -> list[dict[str, Any]]:
        """All generation rows (a torn last line is skipped); duplicated keys raise DataError."""
        return self._load_rows()

    def done_keys(self) -> set[tuple[str, str]]:
        """(item_id, condition) pairs already generated; repairs a torn tail first."""
        repair_jsonl(self.generations)
        return {(str(r["item_id"]), str(r["condition"])) for r in self._load_rows()}

    def appender(self, fsync_every: int = 16) -> JsonlAppender:
        """A :class:`JsonlAppender` on generations.jsonl (use as a context manager)."""
        return JsonlAppender(self.generations, fsync_every=fsync_every)

    # -- results and stages --------------------------------------------------------------
    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """Write metrics.json atomically."""
        atomic_write_json(self.metrics, metrics)

    def read_metrics(self) -> dict[str, Any]:
        """Read metrics.json (DataError if scoring has not run)."""
        data = read_json(self.metrics)
        if not isinstance(data, dict):
            raise DataError("expected a JSON object", str(self.metrics))
        return data

    def mark_stage_done(self, name: str, **details: Any) -> None:
        """Record in run.json that stage ``name`` finished (with optional details)."""
        # Re-read first so a stage that ran meanwhile in another process is not lost.
        self.info = self._read_info(self.path)
        self.info.setdefault("stages", {})[name] = {"done": _now(), **to_jsonable(details)}
        self._save()

    def fitting_batch_size(self, device: str) -> int | None:
        """The batch size out-of-memory backoff settled on, on this device, in an earlier
        session of this run (None if it never had to back off)."""
        fits = self.info.get("batch_size_fits")
        return int(fits["size"]) if isinstance(fits, dict) and fits.get("device") == device \
            else None

    def note_fitting_batch_size(self, device: str, size: int) -> None:
        """Remember (in run.json) that batches above ``size`` ran out of memory here."""
        self.info["batch_size_fits"] = {"device": device, "size": size}
        self._save()

    def stage_done(self, name: str) -> bool:
        """Whether :meth:`mark_stage_done` was called for ``name``."""
        return name in self.info.get("stages", {})
