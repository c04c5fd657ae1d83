"""``probe bench`` (engine speed and memory against plain Hugging Face) and ``probe merge``
(shard run folders into one)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from probe.models import DEFAULT_MODEL


def format_bench(result: dict[str, Any]) -> str:
    """The benchmark as a plain-text table, with the caching-memory check below it."""
    meta = result["meta"]
    lines = [
        f"{meta['model']} ({meta['n_params'] / 1e6:.1f}M params, bridged attention "
        f"{meta['attn_bridged']}), {meta['device']} {meta['dtype']}, {meta['n_items']} BBQ "
        f"prompts (mean {meta['mean_prompt_tokens']:.0f} tokens), batch {meta['batch_size']}, "
        f"{meta['new_tokens']} new tokens, median of {meta['repeats']}",
        f"{meta['date']}; {meta['cpu']} x{meta['cpu_count']}"
        + (f"; {meta['gpu']}" if meta["gpu"] else "")
        + f"; torch {meta['torch']} ({meta['torch_threads']} threads); load avg "
        f"{meta['load_avg_1m']:.1f} -> {meta['load_avg_1m_after']:.1f}", "",
        f"{'row':30} {'items/s':>8} {'tok/s':>8} {'median s':>9} {'best s':>7} "
        f"{'peak MB':>8} {'ratio':>6} {'target':>6}  status  same out",
    ]
    for row in result["rows"]:
        ratio = "ref" if row["reference"] is None else f"{row['ratio']:.2f}"
        target = "" if row["target"] is None else f">={row['target']:.1f}"
        same = "" if row["same_output"] is None else ("yes" if row["same_output"] else "NO")
        lines.append(
            f"{row['name']:30} {row['items_per_s']:8.2f} {row['tokens_per_s']:8.1f} "
            f"{row['seconds']:9.3f} {row['best']:7.3f} {row['peak_mb']:8.1f} {ratio:>6} "
            f"{target:>6}  {row['status'] or '':6}  {same}")
    lines.append("tok/s: prompt tokens for forward/likelihood rows, new tokens for generate rows;"
                 " peak MB: above the level before the row")
    if result["memory"]:
        lines += ["", "caching memory: run_study(cache_acts=True), letter mode, fresh process each"]
        for m in result["memory"]:
            lines.append(f"  {m['rows']:5d} rows: study peak +{m['study_peak_mb']:.1f} MB, "
                         f"process max RSS {m['process_maxrss_mb']:.1f} MB")
    return "\n".join(lines)


@click.command("bench")
@click.option("--model", default=DEFAULT_MODEL, show_default=True,
              help="Model to measure (tiny-random for a smoke test).")
@click.option("--shape", type=click.Choice(["llama-7b"]), default=None,
              help="Build this architecture with random weights instead (GPU only).")
@click.option("--force", is_flag=True, help="Allow --shape on a CPU.")
@click.option("--items", "n_items", type=int, default=8, show_default=True)
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--new-tokens", type=int, default=8, show_default=True)
@click.option("--repeats", type=int, default=3, show_default=True, help="Timed runs per row.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's).")
@click.option("--dtype", default=None, help="Default float32 (bfloat16 with --shape).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Benchmark files (default: $PROBE_DATA_DIR or ./data).")
@click.option("--memory-limit", "memory_limits", type=int, multiple=True,
              help="BBQ items per category of the caching-memory runs (default 1 and 4).")
@click.option("--no-memory", is_flag=True, help="Skip the caching-memory runs.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="Also write the numbers to this JSON file.")
def bench_cmd(data_dir: Path | None, dtype: str | None, memory_limits: tuple[int, ...],
              no_memory: bool, json_out: Path | None, **opts: Any) -> None:
    """Throughput and memory of probe generation, caching and likelihoods vs plain HF."""
    from probe.bench import BenchConfig, run_bench
    from probe.data.registry import default_data_dir
    from probe.errors import ConfigError
    from probe.io import atomic_write_json

    for name in ("n_items", "batch_size", "new_tokens", "repeats"):
        if opts[name] <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive")
    cfg = BenchConfig(data_dir=str(data_dir or default_data_dir()),
                      dtype=dtype or ("bfloat16" if opts["shape"] else "float32"), **opts)
    if memory_limits:
        cfg.memory_limits = list(memory_limits)
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
    from probe.merge import merge_runs
    from probe.scoring.metrics import format_table

    folder = merge_runs(list(shard_dirs), out)
    click.echo(format_table(json.loads(folder.metrics.read_text())))
    click.echo(f"\nmerged {len(shard_dirs)} shards into {folder.path}  "
               f"({len(folder.rows())} rows)")
