"""``probe bench`` (engine speed and memory against plain Hugging Face) and ``probe merge``
(shard run folders into one)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from probe.engine.models import DEFAULT_MODEL


@click.command("bench")
@click.option("--model", default=DEFAULT_MODEL, show_default=True,
              help="Model to measure (tiny-random for a smoke test).")
@click.option("--shape", type=click.Choice(["llama-7b", "smollm2-135m"]), default=None,
              help="Build this architecture with random weights instead (llama-7b: GPU, or "
                   "--force).")
@click.option("--force", is_flag=True, help="Allow --shape on a CPU.")
@click.option("--items", "n_items", type=int, default=8, show_default=True)
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--new-tokens", type=int, default=8, show_default=True)
@click.option("--repeats", type=int, default=3, show_default=True, help="Timed runs per row.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's).")
@click.option("--clock", type=click.Choice(["wall", "process"]), default="wall",
              show_default=True,
              help="process: CPU seconds of this process instead of wall time; steadier on a "
                   "CPU that other jobs share (use with --threads 1; not on a GPU).")
@click.option("--dtype", default=None, help="Default float32 (bfloat16 with --shape).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Benchmark files (default: $PROBE_DATA_DIR or ./data).")
@click.option("--memory-limit", "memory_limits", type=int, multiple=True,
              help="BBQ items per category of the caching-memory runs (default 1 and 4).")
@click.option("--no-memory", is_flag=True, help="Skip the caching-memory runs.")
@click.option("--project-condition", "project_conditions", multiple=True,
              help="Conditions of the full-BBQ time projection (default: baseline, "
                   "instruct-1..3).")
@click.option("--no-projection", is_flag=True, help="Skip the full-BBQ time projection.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="Also write the numbers to this JSON file.")
def bench_cmd(data_dir: Path | None, dtype: str | None, memory_limits: tuple[int, ...],
              no_memory: bool, project_conditions: tuple[str, ...], no_projection: bool,
              json_out: Path | None, **opts: Any) -> None:
    """Throughput and memory of probe generation, caching and likelihoods vs plain HF."""
    from probe.bench import BenchConfig, run_bench
    from probe.bench.report import format_bench
    from probe.conditions.registry import get_condition
    from probe.data.registry import default_data_dir
    from probe.errors import ConfigError
    from probe.store.io import atomic_write_json

    for name in ("n_items", "batch_size", "new_tokens", "repeats"):
        if opts[name] <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive")
    if opts["clock"] == "process" and not str(opts["device"]).startswith("cpu"):
        raise ConfigError("--clock process measures CPU time: use it with --device cpu")
    cfg = BenchConfig(data_dir=str(data_dir or default_data_dir()),
                      dtype=dtype or ("bfloat16" if opts["shape"] else "float32"), **opts)
    if memory_limits:
        cfg.memory_limits = list(memory_limits)
    if project_conditions:
        for name in project_conditions:
            get_condition(name)  # unknown names fail now, not after the measurements
        cfg.project_conditions = list(project_conditions)
    if no_projection:
        cfg.project_conditions = None
    result = run_bench(cfg, memory=not no_memory)
    click.echo(format_bench(result))
    if json_out is not None:
        atomic_write_json(json_out, result)
        click.echo(f"\nwrote {json_out}")


@click.command("merge")
@click.argument("shard_dirs", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="New run folder for the merged run.")
def merge_cmd(shard_dirs: tuple[Path, ...], out: Path) -> None:
    """Merge the run folders of `probe run --shard i/N` (all N of them) into one run."""
    from probe.scoring.metrics import format_table
    from probe.store.merge import merge_runs

    folder = merge_runs(list(shard_dirs), out)
    click.echo(format_table(json.loads(folder.metrics.read_text())))
    click.echo(f"\nmerged {len(shard_dirs)} shards into {folder.path}  "
               f"({len(folder.rows())} rows)")
