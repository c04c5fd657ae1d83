"""A finished run folder as Python objects: :class:`Run`, returned by ``probe.open_run``.

Everything is read from the folder on first use and kept: the config, ``metrics.json``,
the rows of ``generations.jsonl`` (plain dicts, in the file's order), the conditions with
their descriptions (a conditions file's come from run.json), the analysis JSON files, and
the activations as a row-aligned :class:`~probe.store.act_cache.ActivationCache`.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from probe.config import RunConfig
from probe.errors import DataError
from probe.store.act_cache import ActivationCache
from probe.store.run_schema import ADDED_KEYS
from probe.store.runs import RunFolder


class Run:
    """One run folder. ``run.rows[i]`` and ``run.cache[hook][i]`` are the same row."""

    def __init__(self, path: str | Path):
        from probe.conditions.files import register_run_conditions

        self.folder = RunFolder.open(path)
        self.path = self.folder.path
        #: names of conditions this run got from a conditions file (registered on open)
        self.user_conditions = register_run_conditions(self.path)
        self.reports: list[Any] = []  # data load reports, set by probe.run_study

    def __repr__(self) -> str:
        return (f"Run({str(self.path)!r}: {len(self.rows)} rows, "
                f"conditions {', '.join(self.conditions)})")

    @property
    def info(self) -> dict[str, Any]:
        """run.json as a dict (config, provenance, stages, resumes)."""
        return self.folder.info

    @cached_property
    def config(self) -> RunConfig:
        """The run's settings; keys added since the run was written take the value their
        absence means (:data:`~probe.store.run_schema.ADDED_KEYS`: an old run ran eager)."""
        return RunConfig.from_dict({**ADDED_KEYS, **self.folder.config})

    @cached_property
    def metrics(self) -> dict[str, Any]:
        """metrics.json."""
        return self.folder.read_metrics()

    @cached_property
    def rows(self) -> list[dict[str, Any]]:
        """generations.jsonl, one dict per (item_id, condition), in the file's order."""
        return self.folder.rows()

    def where(self, **fields: Any) -> list[int]:
        """Indices of the rows whose fields equal the given values, e.g.
        ``run.where(condition="instruct-1", context_condition="ambig")``."""
        return [i for i, r in enumerate(self.rows)
                if all(r.get(k) == v for k, v in fields.items())]

    def dataframe(self) -> Any:
        """The rows as a pandas DataFrame (needs pandas, which probe does not require)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError("Run.dataframe() needs pandas (pip install pandas); "
                              "run.rows is the same data as dicts") from exc
        return pd.DataFrame(self.rows)

    @property
    def conditions(self) -> list[str]:
        """Condition names, in the order the rows have them."""
        return list(dict.fromkeys(str(r["condition"]) for r in self.rows))

    def condition_info(self) -> dict[str, dict[str, Any]]:
        """Per condition: description, source, benchmarks, and whether a file defined it;
        as run.json recorded them (runs before that record: from the registry)."""
        from probe.conditions.registry import CONDITIONS

        recorded = self.folder.provenance.get("conditions") or {}
        out = {}
        for name in self.conditions:
            cond = CONDITIONS.get(name)
            meta = recorded.get(name) or ({} if cond is None else {
                "description": cond.description, "source": cond.source,
                "benchmarks": list(cond.benchmarks)})
            out[name] = {"description": meta.get("description"), "source": meta.get("source"),
                         "benchmarks": meta.get("benchmarks"),
                         "from_file": name in self.user_conditions}
        return out

    @cached_property
    def cache(self) -> ActivationCache:
        """Stored activations by hook name, aligned with :attr:`rows` (runs with
        ``--cache-acts``)."""
        from probe.analysis.targets import open_store

        return ActivationCache(open_store(self.path), self.rows)

    def result(self, name: str) -> dict[str, Any]:
        """An analysis file by name: probes, patching, steering, lens or directions."""
        from probe.store.io import read_json

        stem = name.removesuffix(".json")
        path = self.path / f"{stem}.json"
        if not path.is_file():
            made_by = {"patching": "patch", "steering": "steer", "directions": "probes"}
            raise DataError(f"no {path.name} in this run yet (make it with "
                            f"probe.{made_by.get(stem, stem)}(run, ...))", str(self.path))
        data = read_json(path)
        if not isinstance(data, dict):
            raise DataError("expected a JSON object", str(path))
        return data
