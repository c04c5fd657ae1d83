"""Benchmarks the engine knows, as specs: add one here (or call :func:`register_benchmark`)
and every command can run it without engine changes.

The built-in loaders are imported lazily so that the loader modules can import
:class:`LoadReport` from here without a cycle.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probe.data.items import Item
from probe.errors import UnknownNameError

DATA_DIR_ENV = "PROBE_DATA_DIR"


def default_data_dir() -> Path:
    """The data folder: env ``PROBE_DATA_DIR`` if set, else ``./data``."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else Path("data")


@dataclass
class LoadReport:
    """What a loader found: items per category, what was missing or left out of scoring."""

    benchmark: str
    counts: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    no_target: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def n_items(self) -> int:
        """Total items loaded."""
        return sum(self.counts.values())

    def summary(self) -> str:
        """One human-readable line per fact, for the CLI."""
        lines = [f"{self.benchmark}: {self.n_items} items"]
        lines += [f"  {cat}: {n}" for cat, n in sorted(self.counts.items())]
        if self.missing:
            lines.append(f"  missing (not downloaded): {', '.join(self.missing)}")
        no_target = {k: v for k, v in sorted(self.no_target.items()) if v}
        if no_target:
            parts = ", ".join(f"{k}={v}" for k, v in no_target.items())
            lines.append(f"  items with no single biased answer (excluded from bias): {parts}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


Loader = Callable[..., tuple[list[Item], LoadReport]]


@dataclass(frozen=True)
class BenchmarkSpec:
    """A benchmark: its name, what it is, the data files it reads (relative to the data
    dir) and the loader that turns them into items."""

    name: str
    description: str
    files: tuple[str, ...]
    load: Loader


BENCHMARKS: dict[str, BenchmarkSpec] = {}


def register_benchmark(spec: BenchmarkSpec) -> BenchmarkSpec:
    """Add (or replace) a benchmark spec; returns it so it can be used as a value."""
    BENCHMARKS[spec.name] = spec
    return spec


def get_benchmark(name: str) -> BenchmarkSpec:
    """The spec called ``name``; raises :class:`UnknownNameError` listing valid names."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise UnknownNameError("benchmark", name, BENCHMARKS) from None


def _lazy(module: str, attr: str) -> Loader:
    """A loader that imports its module on first call (avoids an import cycle)."""

    def load(*args: Any, **kwargs: Any) -> tuple[list[Item], LoadReport]:
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    load.__name__ = attr
    return load


BBQ_CATEGORIES: tuple[str, ...] = (
    "Age", "Disability_status", "Gender_identity", "Nationality", "Physical_appearance",
    "Race_ethnicity", "Race_x_SES", "Race_x_gender", "Religion", "SES", "Sexual_orientation",
)
WINOGENDER_FILES: tuple[str, ...] = (
    "winogender/templates.tsv", "winogender/occupations-stats.tsv",
)

register_benchmark(BenchmarkSpec(
    name="bbq",
    description="BBQ: bias benchmark for QA (Parrish et al. 2022), 11 categories",
    files=tuple(f"bbq/{cat}.jsonl" for cat in BBQ_CATEGORIES),
    load=_lazy("probe.data.bbq", "load_bbq"),
))
register_benchmark(BenchmarkSpec(
    name="winogender",
    description="Winogender schemas (Rudinger et al. 2018): occupation pronoun templates",
    files=WINOGENDER_FILES,
    load=_lazy("probe.data.winogender", "load_winogender"),
))
