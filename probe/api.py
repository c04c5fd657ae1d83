"""The public Python API: ``probe.open_run``, ``probe.run_study``, ``probe.patch``...

Each function is what the matching ``probe`` command calls (the CLI only parses options and
prints), so a notebook and the command line write the same files and get the same numbers.
Every function takes a run folder or a :class:`~probe.store.opened_run.Run` and returns what it
wrote (the JSON file's content, or a path). See docs/api.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from probe.config import RunConfig
from probe.store.opened_run import Run

RunLike = str | Path | Run


def _path(run: RunLike) -> Path:
    return run.path if isinstance(run, Run) else Path(run)


def open_run(path: RunLike) -> Run:
    """Open a run folder: config, rows, metrics, conditions, activations (``run.cache``)."""
    return path if isinstance(path, Run) else Run(path)


def default_out(cfg: RunConfig) -> Path:
    """``artifacts/runs/<timestamp>_<model>_<benchmarks>/``."""
    import time

    stamp = time.strftime("%Y%m%d-%H%M%S")
    model = cfg.model.replace("/", "--")
    return Path("artifacts") / "runs" / f"{stamp}_{model}_{'+'.join(cfg.benchmarks)}"


def run_study(config: RunConfig | None = None, out: str | Path | None = None, *,
              loaded: Any = None, **options: Any) -> Run:
    """Run (or resume) the study into ``out``, as ``probe run``; returns the opened run.

    Give a :class:`RunConfig` or its fields as keywords (``model=``, ``benchmarks=``,
    ``conditions=``, ``limit=`` items per category, ``cache_acts=``...). ``data_dir``
    defaults to ``$PROBE_DATA_DIR`` or ``./data`` as on the command line. ``loaded`` reuses
    a model from :func:`probe.engine.models.load_model`. ``run.reports`` says what data loaded.
    """
    from probe.data.registry import default_data_dir
    from probe.engine.study import run_study as study
    from probe.errors import ConfigError

    if config is not None and options:
        raise ConfigError("give a RunConfig or keyword options, not both")
    if config is None:
        options.setdefault("data_dir", str(default_data_dir()))
        # from_dict names unknown keywords in one line instead of a TypeError.
        config = RunConfig.from_dict({k: str(v) if isinstance(v, Path) else v
                                      for k, v in options.items()})
    config.validate()
    result = study(config, Path(out) if out is not None else default_out(config), loaded)
    run = Run(result.folder.path)
    run.reports = list(result.reports)
    return run


def score(files: RunLike | Sequence[str | Path], pred_field: str | None = None,
          condition: str | None = None, out: str | Path | None = None,
          data_dir: str | Path | None = None) -> dict[str, Any]:
    """Metrics from a run's rows (no model) or from external prediction files, as
    ``probe score``; writes and returns metrics.json's content."""
    from probe.commands.score import score_files

    paths = [_path(files)] if isinstance(files, (str, Path, Run)) else [Path(f) for f in files]
    _, metrics, _ = score_files(paths, pred_field, condition, None if out is None else Path(out),
                                None if data_dir is None else Path(data_dir))
    return metrics


def probes(run: RunLike, targets: Sequence[str] | None = None,
           kinds: Sequence[str] | None = None, *, layers: Sequence[int] | None = None,
           seed: int = 0, position: int = -1, progress: bool = True,
           n_draws: int = 100) -> dict[str, Any]:
    """Probes per layer, self-correction directions and their plots, as ``probe probes``;
    returns probes.json's content (directions: ``open_run(run).result("directions")``).
    ``n_draws``: control-task draws of the permutation null."""
    return probes_and_directions(run, targets, kinds, layers=layers, seed=seed,
                                 position=position, progress=progress, n_draws=n_draws)[0]


def probes_and_directions(run: RunLike, targets: Sequence[str] | None = None,
                          kinds: Sequence[str] | None = None, *,
                          layers: Sequence[int] | None = None, seed: int = 0,
                          position: int = -1, progress: bool = True, n_draws: int = 100
                          ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """:func:`probes`, also returning each direction's entry (what the command prints)."""
    from probe.analysis import targets as tg
    from probe.analysis.directions import compute_directions, paired_rows, plot_cosines
    from probe.analysis.probe_plots import plot_probes
    from probe.analysis.probe_run import KINDS, run_probes
    from probe.store.runlock import run_lock

    path = _path(run)
    with run_lock(path, "probes"):  # one writer: probes.json, directions, plots
        store = tg.open_store(path)
        store.load(store.hook_names[0], rows=[], position=position)  # unknown position: fail
        chosen = list(layers) if layers else None
        result = run_probes(path, list(targets) if targets else None,
                            tuple(kinds) if kinds else KINDS, seed=seed, layers=chosen,
                            position=position, progress=progress, n_draws=n_draws)
        plot_probes(result, path / "plots" / "probes.png")
        rows = tg.read_rows(path / "generations.jsonl")
        entries = []
        for cond in tg.instruction_conditions(rows):
            if paired_rows(store.rows, cond, position=position)[0]:
                entries.append({"condition": cond, **compute_directions(
                    path, cond, store=store, layers=chosen, position=position)})
        if entries:
            plot_cosines(path / "directions.json", path / "plots" / "directions.png")
    return result, entries


def patch(run: RunLike, instruction: str, baseline: str = "baseline", *,
          positions: int | None = None,
          limit: int | None = None, data_dir: str | Path | None = None,
          loaded: Any = None, control: str | None = None) -> dict[str, Any]:
    """Activation patching of ``instruction`` into ``baseline`` (and back), as ``probe
    patch``; ``limit`` is items per category. Returns patching.json's content."""
    from probe.analysis.patch_study import run_patching

    return run_patching(str(_path(run)), instruction, baseline, positions, limit,
                        loaded=loaded, data_dir=None if data_dir is None else str(data_dir),
                        control=control)


def steer(run: RunLike, instruction: str, *, layers: Sequence[int] | None = None,
          alphas: Sequence[float] | None = None, seed: int = 0, limit: int | None = None,
          data_dir: str | Path | None = None, loaded: Any = None,
          n_random: int = 20) -> dict[str, Any]:
    """Steer the baseline along ``instruction`` minus baseline, as ``probe steer``; returns
    steering.json's content."""
    from probe.analysis.steering import run_steering

    return run_steering(str(_path(run)), instruction,
                        None if layers is None else list(layers),
                        None if alphas is None else list(alphas), seed=seed, limit=limit,
                        loaded=loaded, data_dir=None if data_dir is None else str(data_dir),
                        n_random=n_random)


def superficial(run: RunLike, *, contrast: str = "anti", seed: int = 0, n_boot: int = 1000,
                limit: int | None = None, data_dir: str | Path | None = None,
                loaded: Any = None, controls: dict[str, str] | None = None,
                causal_layers: Sequence[int] | None = None,
                alphas: Sequence[float] | None = None, n_random: int = 20) -> dict[str, Any]:
    """Concept directions, trajectories, the superficial test and shift alignment (and, with
    ``causal_layers``, the causal check), as ``probe superficial``; returns
    superficial.json's content."""
    from probe.analysis.superficial.run import run_superficial

    return run_superficial(str(_path(run)), contrast=contrast, seed=seed, n_boot=n_boot,
                           limit=limit, data_dir=None if data_dir is None else str(data_dir),
                           loaded=loaded, controls=controls,
                           causal_layers=None if causal_layers is None else list(causal_layers),
                           alphas=None if alphas is None else list(alphas), n_random=n_random)


def lens(run: RunLike, instructions: Sequence[str] | None = None, *, limit: int | None = None,
         data_dir: str | Path | None = None, loaded: Any = None) -> dict[str, Any]:
    """Logit lens of the baseline and ``instructions`` (default: every condition), as
    ``probe lens``; returns lens.json's content."""
    from probe.analysis.lens import run_lens

    conditions = ["baseline", *instructions] if instructions else None
    return run_lens(str(_path(run)), conditions, limit=limit, loaded=loaded,
                    data_dir=None if data_dir is None else str(data_dir))


def plot_run(run: RunLike) -> list[Path]:
    """(Re)draw the output-study figures, as ``probe plots``; their paths."""
    from probe.presentation import plots

    return plots.plot_run(_path(run))


def write_report(run: RunLike, redraw: bool = True) -> Path:
    """Write report.html (redrawing the output-study figures first), as ``probe report``;
    its path."""
    from probe.presentation import report

    if redraw:
        plot_run(run)
    return report.write_report(_path(run))


def compare_runs(runs: Sequence[RunLike], sizes: dict[str, int] | None = None,
                 out: str | Path | None = None) -> dict[str, Any]:
    """Self-correction gain across runs, as ``probe compare``; writes compare.json etc. to
    ``out`` when given, and returns the comparison."""
    from probe.presentation import compare

    result = compare.compare_runs([_path(r) for r in runs], sizes or {})
    if out is not None:
        compare.write_compare(result, out)
    return result
