"""Resumable runs, proven by killing a real ``probe run`` process at exact points.

Each scenario kills the process (``PROBE_FAULT``, see probe/store/faults.py), damages what a kill
can leave behind (a torn last line, a torn shard file), reruns the same command and checks
the folder equals an uninterrupted run's: generations.jsonl, metrics.json, the activation
index and every shard, byte for byte.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO
from tests.conftest_data import shared_data_dir

# 7 BBQ categories x 17 + 17 Winogender items, 2 conditions: 272 rows in 18 batches of 16,
# so the activations fill one full 256-row shard (ShardWriter's fixed size) and a second.
LIMIT, BATCH = 17, 16
ROWS_PER_SHARD = 256  # the default of probe run --rows-per-shard
COMPARED = ("generations.jsonl", "metrics.json")


def _command(out: Path) -> list[str]:
    return [sys.executable, "-m", "probe.cli", "run", "--model", "tiny-random",
            "--data-dir", str(shared_data_dir()), "--limit", str(LIMIT),
            "--condition", "baseline", "--condition", "instruct-1", "--cache-acts",
            "--batch-size", str(BATCH), "--out", str(out)]


def _env(fault: str | None) -> dict[str, str]:
    # One thread each: the machine has 2 cores and the reference runs beside the scenario.
    env = {k: v for k, v in os.environ.items() if k != "PROBE_FAULT"}
    env["OMP_NUM_THREADS"] = "1"
    if fault:
        env["PROBE_FAULT"] = fault
    return env


def _default_sigint() -> None:
    # A shell starts background jobs with SIGINT ignored, and Python then never raises
    # KeyboardInterrupt; give the child what a terminal gives it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def probe_run(out: Path, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    """``probe run`` in a subprocess, optionally with a fault injected."""
    return subprocess.run(_command(out), cwd=REPO, env=_env(fault), capture_output=True,
                          text=True, timeout=300, preexec_fn=_default_sigint)


def killed(out: Path, fault: str) -> None:
    """Run with a SIGKILL fault and check the process really died of it."""
    done = probe_run(out, fault)
    assert done.returncode == -signal.SIGKILL, (fault, done.returncode, done.stderr[-2000:])


def completed(out: Path) -> None:
    done = probe_run(out)
    assert done.returncode == 0, done.stderr[-3000:]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file that must match an uninterrupted run (run.json records resumes, so not it)."""
    files = {name: (folder / name).read_bytes() for name in COMPARED}
    for path in sorted((folder / "activations").iterdir()):
        files[f"activations/{path.name}"] = path.read_bytes()
    return files


def assert_same_folder(got: Path, want: Path) -> None:
    a, b = snapshot(got), snapshot(want)
    assert sorted(a) == sorted(b), "different files"
    for name in b:
        assert a[name] == b[name], f"{name} differs from the uninterrupted run"


def keys(folder: Path) -> list[tuple[str, str]]:
    import json

    lines = (folder / "generations.jsonl").read_text().splitlines()
    return [(r["item_id"], r["condition"]) for r in map(json.loads, lines)]


def start_reference(out: Path) -> subprocess.Popen[str]:
    """An uninterrupted run, in the background: the folder every resumed run must equal."""
    return subprocess.Popen(_command(out), cwd=REPO, env=_env(None), text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish_reference(proc: subprocess.Popen[str], out: Path) -> Path:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    index = (out / "activations" / "index.json").read_text()
    assert index.count('"file": "shard-') >= 2, "scenario needs more than one shard"
    rows = keys(out)
    assert len(rows) == len(set(rows)) > ROWS_PER_SHARD
    return out


def shard_filling_batch() -> int:
    """1-based number of the batch whose activations complete the first shard."""
    from probe.config import RunConfig
    from probe.engine.pipeline import plan_batches, plan_units
    from probe.engine.study import load_items

    cfg = RunConfig(model="tiny-random", data_dir=str(shared_data_dir()), limit=LIMIT,
                    conditions=["baseline", "instruct-1"], batch_size=BATCH)
    items, _ = load_items(cfg)
    batches = plan_batches(plan_units(items, ["baseline", "instruct-1"]), BATCH)
    total = 0
    for number, batch in enumerate(batches, start=1):
        total += len(batch)
        if total >= ROWS_PER_SHARD:
            return number
    raise AssertionError("never fills a shard")


def test_kills_at_every_stage_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    ref_proc = start_reference(tmp_path / "ref")
    out = tmp_path / "run"
    # 1. Ctrl-C during generation after 3 batches: one line, exit 130, finished rows kept
    #    (their activations were still in memory, so no shard exists yet).
    done = probe_run(out, "batch-rows:3:INT")
    assert done.returncode == 130, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("probe: interrupted") and "rerun" in last
    assert len(keys(out)) == 3 * BATCH
    assert not list((out / "activations").glob("shard-*"))

    # 2. SIGKILL right after the batch that completed shard 0, before its rows were
    #    appended: the shard holds rows that generations.jsonl lacks.
    killed(out, f"batch-acts:{shard_filling_batch()}")
    assert (out / "activations" / "shard-00000.safetensors").is_file()
    assert len(keys(out)) < ROWS_PER_SHARD
    # What else a kill can leave: a torn last line, a torn (unindexed) shard, a temp file.
    gen = out / "generations.jsonl"
    data = gen.read_bytes()
    gen.write_bytes(data[: len(data) - 40])
    shard0 = (out / "activations" / "shard-00000.safetensors").read_bytes()
    (out / "activations" / "shard-00001.safetensors").write_bytes(shard0[: len(shard0) // 2])
    (out / "activations" / ".shard-00001.safetensors.x1.tmp").write_bytes(b"\0" * 100)

    # 3. SIGKILL after every row is written, before metrics.json.
    killed(out, "metrics:1")
    assert not (out / "metrics.json").exists()
    reference = finish_reference(ref_proc, tmp_path / "ref")
    assert sorted(keys(out)) == sorted(keys(reference))

    # 4. The same command finishes the run: same files, same bytes, no row twice or missing.
    completed(out)
    assert keys(out) == keys(reference)
    assert_same_folder(out, reference)
