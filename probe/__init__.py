"""probe: mechanistic interpretability of moral self-correction in language models.

The Python API (see docs/api.md) is imported lazily, so ``import probe`` stays fast::

    import probe
    run = probe.open_run("artifacts/runs/my-run")
    run.rows[0], run.metrics, run.cache["blocks.3.hook_resid_post"]
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# Public name -> the module that defines it (imported on first use).
_EXPORTS: dict[str, str] = {
    "open_run": "probe.api", "run_study": "probe.api", "score": "probe.api",
    "probes": "probe.api", "patch": "probe.api", "steer": "probe.api", "lens": "probe.api",
    "superficial": "probe.api",
    # Not "report", "compare", "plots": those names are submodules of the package.
    "plot_run": "probe.api", "write_report": "probe.api", "compare_runs": "probe.api",
    "Run": "probe.store.opened_run", "ActivationCache": "probe.store.act_cache",
    "RunConfig": "probe.config", "load_model": "probe.engine.models",
    "Condition": "probe.conditions.registry", "PromptPlan": "probe.conditions.registry",
    "Turn": "probe.conditions.registry", "register_condition": "probe.conditions.registry",
    "load_conditions_file": "probe.conditions.files",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'probe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
