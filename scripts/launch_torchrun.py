"""Run ``probe run`` on every GPU with torchrun: one item shard per process, then a merge.

    torchrun --nproc-per-node 4 scripts/launch_torchrun.py --out runs/llama -- \\
        --model meta-llama/Llama-2-7b-chat-hf --benchmark bbq --mode text --cache-acts

Process RANK of WORLD_SIZE runs ``probe run ARGS --shard RANK/WORLD_SIZE --device
cuda:LOCAL_RANK --out OUT/shard-RANK``. No collective is used (the shards never talk):
rank 0 then waits until every shard folder records its ``generate`` stage done and
merges them into ``OUT/merged`` (``--no-merge`` leaves that to ``probe merge``). A failed
rank writes ``OUT/shard-RANK.failed`` so rank 0 stops waiting. Rerunning the same command
resumes every shard. ``--device-template cpu`` runs the same logic without GPUs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def shard_dir(out: Path, rank: int) -> Path:
    """Run folder of one rank."""
    return out / f"shard-{rank}"


def shard_argv(run_args: list[str], rank: int, world: int, local_rank: int, out: Path,
               device_template: str = "cuda:{local_rank}") -> list[str]:
    """The ``probe`` argv of one rank; shard, device and out are the launcher's to set."""
    for owned in ("--shard", "--device", "--out"):
        if any(a == owned or a.startswith(owned + "=") for a in run_args):
            raise SystemExit(f"launch_torchrun: do not pass {owned}; the launcher sets it")
    device = device_template.format(local_rank=local_rank, rank=rank)
    return ["run", *run_args, "--shard", f"{rank}/{world}", "--device", device,
            "--out", str(shard_dir(out, rank))]


def shard_finished(folder: Path) -> bool:
    """Whether a shard's run folder records its generate stage as done."""
    from probe.errors import ProbeError
    from probe.store.runs import RunFolder

    try:
        return RunFolder.open(folder).stage_done("generate")
    except ProbeError:
        return False  # not created yet


def wait_for_shards(out: Path, world: int, since: float, timeout: float,
                    poll: float = 5.0) -> None:
    """Block until all ``world`` shards are done; a failure marker newer than ``since``
    (this launch) or the timeout ends the wait with SystemExit."""
    deadline = time.monotonic() + timeout
    while True:
        pending = [r for r in range(world) if not shard_finished(shard_dir(out, r))]
        if not pending:
            return
        for rank in pending:
            marker = out / f"shard-{rank}.failed"
            if marker.is_file() and marker.stat().st_mtime >= since:
                raise SystemExit(f"launch_torchrun: shard {rank} failed: {marker.read_text()}")
        if time.monotonic() > deadline:
            raise SystemExit(f"launch_torchrun: shards {pending} not done after {timeout:.0f} s")
        time.sleep(poll)


def run_shard(argv: list[str], out: Path, rank: int) -> int:
    """Run one ``probe`` command in this process; on failure leave a marker for rank 0."""
    from probe.cli import cli

    marker = out / f"shard-{rank}.failed"
    marker.unlink(missing_ok=True)
    try:
        cli.main(argv, prog_name="probe", standalone_mode=False)
        code = 0
    except SystemExit as err:  # ProbeError is turned into sys.exit(2) by the CLI group
        code = err.code if isinstance(err.code, int) else 1
    except Exception as err:
        marker.write_text(f"{type(err).__name__}: {err}")
        raise
    if code:
        marker.write_text(f"exit code {code}")
    return code


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Launcher options before ``--``, ``probe run`` options after it."""
    if "--" in argv:
        cut = argv.index("--")
        argv, run_args = argv[:cut], argv[cut + 1:]
    else:
        run_args = []
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Folder for shard-* and merged.")
    parser.add_argument("--device-template", default="cuda:{local_rank}")
    parser.add_argument("--no-merge", action="store_true", help="Leave merging to probe merge.")
    parser.add_argument("--timeout", type=float, default=7 * 24 * 3600.0,
                        help="Seconds rank 0 waits for the other shards.")
    parser.add_argument("--poll", type=float, default=5.0, help=argparse.SUPPRESS)
    return parser.parse_args(argv), run_args


def main(argv: list[str] | None = None) -> int:
    """Entry point of one torchrun worker (reads RANK, WORLD_SIZE, LOCAL_RANK)."""
    opts, run_args = parse(sys.argv[1:] if argv is None else argv)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    opts.out.mkdir(parents=True, exist_ok=True)
    started = time.time() - 1.0  # mtime resolution: a marker from this launch is never older
    code = run_shard(shard_argv(run_args, rank, world, local_rank, opts.out,
                                opts.device_template), opts.out, rank)
    if code or rank != 0 or opts.no_merge:
        return code
    wait_for_shards(opts.out, world, started, opts.timeout, opts.poll)
    from probe.errors import ProbeError
    from probe.store.merge import merge_runs

    try:
        merged = merge_runs([shard_dir(opts.out, r) for r in range(world)], opts.out / "merged")
    except ProbeError as err:
        print(f"probe: error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"merged {world} shards into {merged.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
