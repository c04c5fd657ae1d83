"""Sharded runs merged back equal the unsharded run; the torchrun launcher's logic.

Runs use batch size 1: a shard's batches hold other prompts than the unsharded run's, and
with other padding the floats of a batched forward can differ in the last bit.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from probe.activations import ActivationStore
from probe.cli import ProbeGroup
from probe.commands.scale import merge_cmd
from probe.config import RunConfig
from probe.engine.study import run_study
from probe.errors import ConfigError, DataError
from probe.store.merge import merge_runs

REPO = Path(__file__).resolve().parents[1]
N = 3
RUN_ARGS = ["--model", "tiny-random", "--limit", "3", "--category", "Age", "--category",
            "Religion", "--condition", "baseline", "--condition", "instruct-1",
            "--cache-acts", "--batch-size", "1"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(data_dir: Path, shard: str | None = None) -> RunConfig:
    # The same settings as RUN_ARGS on the command line (whose defaults fill the rest).
    return RunConfig(model="tiny-random", limit=3, categories=["Age", "Religion"],
                     conditions=["baseline", "instruct-1"], cache_acts=True, batch_size=1,
                     data_dir=str(data_dir), shard=shard)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny, data_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    out = {"full": root / "full"}
    run_study(_cfg(data_dir), out["full"], loaded=tiny)
    for i in range(N):
        out[f"s{i}"] = root / f"s{i}"
        run_study(_cfg(data_dir, f"{i}/{N}"), out[f"s{i}"], loaded=tiny)
    return out


def _rows(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "generations.jsonl").read_text().splitlines()]


def _assert_same_run(merged: Path, full: Path) -> None:
    assert _rows(merged) == _rows(full)
    assert (merged / "metrics.json").read_bytes() == (full / "metrics.json").read_bytes()
    a, b = ActivationStore(merged / "activations"), ActivationStore(full / "activations")
    assert a.rows == b.rows
    assert [s["sha256"] for s in a.shards] == [s["sha256"] for s in b.shards]
    for hook in b.hook_names:
        assert torch.equal(a.load(hook, position=None), b.load(hook, position=None))


def test_merged_shards_equal_unsharded_run(runs, tmp_path):
    sizes = [len(_rows(runs[f"s{i}"])) for i in range(N)]
    assert all(sizes) and sum(sizes) == len(_rows(runs["full"])), "every shard needs rows"
    folder = merge_runs([runs["s2"], runs["s0"], runs["s1"]], tmp_path / "merged")
    _assert_same_run(folder.path, runs["full"])
    assert folder.config["shard"] is None
    assert folder.config == {**json.loads((runs["full"] / "run.json").read_text())["config"]}
    assert [s["shard"] for s in folder.info["merged_from"]] == [f"{i}/{N}" for i in range(N)]
    assert folder.stage_done("generate")


def _copy(src: Path, dst: Path, **config: object) -> Path:
    shutil.copytree(src, dst)
    info = json.loads((dst / "run.json").read_text())
    info["config"].update(config)
    (dst / "run.json").write_text(json.dumps(info))
    return dst


def test_shards_must_share_config_but_device_may_differ(runs, tmp_path):
    odd = _copy(runs["s1"], tmp_path / "odd", max_new_tokens=7, seed=3)
    with pytest.raises(ConfigError, match="max_new_tokens, seed"):
        merge_runs([runs["s0"], odd, runs["s2"]], tmp_path / "m1")
    gpu = _copy(runs["s1"], tmp_path / "gpu", device="cuda:1", batch_size=8)
    folder = merge_runs([runs["s0"], gpu, runs["s2"]], tmp_path / "m2")
    assert _rows(folder.path) == _rows(runs["full"])


def test_shard_indices_must_cover_0_to_n_once(runs, tmp_path):
    with pytest.raises(ConfigError, match="missing shards of 3: 2/3"):
        merge_runs([runs["s0"], runs["s1"]], tmp_path / "m")
    with pytest.raises(ConfigError, match="given twice"):
        merge_runs([runs["s0"], runs["s1"], runs["s1"], runs["s2"]], tmp_path / "m")
    with pytest.raises(ConfigError, match="not a shard"):
        merge_runs([runs["full"], runs["s0"]], tmp_path / "m")


def test_duplicate_rows_and_unfinished_shards_are_refused(runs, tmp_path):
    dup = _copy(runs["s0"], tmp_path / "dup", shard=f"1/{N}")
    with pytest.raises(ConfigError, match="is in both"):
        merge_runs([runs["s0"], dup, runs["s2"]], tmp_path / "m")
    unfinished = _copy(runs["s1"], tmp_path / "unfinished")
    info = json.loads((unfinished / "run.json").read_text())
    info["stages"] = {}
    (unfinished / "run.json").write_text(json.dumps(info))
    with pytest.raises(ConfigError, match="has not finished"):
        merge_runs([runs["s0"], unfinished, runs["s2"]], tmp_path / "m")


def _edited_data(data_dir: Path, dst: Path) -> Path:
    """A copy of the two categories the runs use, every context changed, ids unchanged."""
    for cat in ("Age", "Religion"):
        rows = [json.loads(x) for x in (data_dir / "bbq" / f"{cat}.jsonl").open()]
        for row in rows:
            row["context"] += " It was raining."
        (dst / "bbq").mkdir(parents=True, exist_ok=True)
        (dst / "bbq" / f"{cat}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    shutil.copytree(data_dir / "winogender", dst / "winogender")
    return dst


def test_shards_run_on_different_data_are_refused(runs, tmp_path, tiny, data_dir):
    other = _edited_data(data_dir, tmp_path / "data2")
    s1 = tmp_path / "s1-other-data"
    run_study(_cfg(other, f"1/{N}"), s1, loaded=tiny)  # same ids and config, other text
    with pytest.raises(ConfigError, match=r"different data or model files .*bbq/Age\.jsonl"):
        merge_runs([runs["s0"], s1, runs["s2"]], tmp_path / "m")
    assert not (tmp_path / "m").exists()
    # The data the merge reloads must also be what the shards ran on.
    moved = _copy(runs["s0"], tmp_path / "s0-moved", data_dir=str(other))
    with pytest.raises(ConfigError, match="changed since the shards ran"):
        merge_runs([moved, runs["s1"], runs["s2"]], tmp_path / "m")
    # Other weights under the same model name.
    info = json.loads((runs["s2"] / "run.json").read_text())
    info["provenance"]["files"]["model"] = {"path": "m", "sha256": "0" * 64}
    odd = _copy(runs["s2"], tmp_path / "s2-odd-model")
    (odd / "run.json").write_text(json.dumps(info))
    with pytest.raises(ConfigError, match="model"):
        merge_runs([runs["s0"], runs["s1"], odd], tmp_path / "m")


def test_corrupt_activation_shard_and_busy_out_are_refused(runs, tmp_path):
    bad = _copy(runs["s2"], tmp_path / "bad")
    shard = next((bad / "activations").glob("shard-*.safetensors"))
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match="sha256"):
        merge_runs([runs["s0"], runs["s1"], bad], tmp_path / "m")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        merge_runs([runs["s0"], runs["s1"], runs["s2"]], busy)


def test_merge_command(runs, tmp_path):
    group = ProbeGroup(name="probe")
    group.add_command(merge_cmd)
    dirs = [str(runs[f"s{i}"]) for i in range(N)]
    ok = CliRunner().invoke(group, ["merge", *dirs, "--out", str(tmp_path / "m")])
    assert ok.exit_code == 0, ok.output
    assert "3 shards" in ok.output and _rows(tmp_path / "m") == _rows(runs["full"])
    bad = CliRunner().invoke(group, ["merge", *dirs[:2], "--out", str(tmp_path / "m2")])
    assert bad.exit_code == 2 and "missing shards" in bad.output


def _launcher():
    spec = importlib.util.spec_from_file_location("launch_torchrun",
                                                  REPO / "scripts" / "launch_torchrun.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launcher_ranks_run_shards_and_rank0_merges(runs, tmp_path, monkeypatch, data_dir):
    launch = _launcher()
    argv = ["--out", str(tmp_path), "--device-template", "cpu", "--poll", "0.01", "--",
            *RUN_ARGS, "--data-dir", str(data_dir)]
    # Rank 1 first: rank 0 would otherwise wait for it (torchrun runs them concurrently).
    for rank in (1, 0):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert launch.main(argv) == 0
    assert json.loads((tmp_path / "shard-1" / "run.json").read_text())["config"]["shard"] == "1/2"
    _assert_same_run(tmp_path / "merged", runs["full"])


def test_launcher_reports_a_failed_rank(tmp_path, monkeypatch):
    launch = _launcher()
    with pytest.raises(SystemExit, match="do not pass --shard"):
        launch.shard_argv(["--shard", "0/2"], 0, 2, 0, tmp_path)
    argv = launch.shard_argv(["--model", "tiny-random", "--data-dir", str(tmp_path / "none")],
                             1, 2, 1, tmp_path, "cuda:{local_rank}")
    assert argv[-6:] == ["--shard", "1/2", "--device", "cuda:1", "--out",
                         str(tmp_path / "shard-1")]
    argv[argv.index("--device") + 1] = "cpu"
    assert launch.run_shard(argv, tmp_path, 1) == 2  # no data: a ProbeError, exit code 2
    assert (tmp_path / "shard-1.failed").is_file()
    with pytest.raises(SystemExit, match="shard 1 failed"):
        launch.wait_for_shards(tmp_path, 2, since=0.0, timeout=5, poll=0.01)
    with pytest.raises(SystemExit, match="not done after"):
        launch.wait_for_shards(tmp_path, 2, since=1e12, timeout=0.05, poll=0.01)


def test_slurm_script_submits_shard_array_then_merge(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("bash not available")
    fake = tmp_path / "bin"
    fake.mkdir()
    # A stand-in sbatch: records its arguments, answers with a job id as --parsable does.
    (fake / "sbatch").write_text(
        '#!/usr/bin/env bash\nc=$(ls "$LOG".* 2>/dev/null | wc -l); c=$((c + 1))\n'
        'printf "%s\\n" "$@" > "$LOG.$c"; echo "70$c;cluster"\n')
    (fake / "sbatch").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "LOG": str(tmp_path / "call")}
    out = tmp_path / "my run"
    done = subprocess.run(["bash", str(REPO / "scripts" / "slurm_array.sh"), "3", str(out), "--",
                           "--model", "tiny-random", "--condition", "baseline"],
                          env=env, capture_output=True, text=True, check=True)
    shard_job = (tmp_path / "call.1").read_text().splitlines()
    merge_job = (tmp_path / "call.2").read_text().splitlines()
    assert "--array=0-2" in shard_job and "--dependency=afterok:701" in merge_job
    wrap = next(a for a in shard_job if a.startswith("--wrap="))
    assert "--shard ${SLURM_ARRAY_TASK_ID}/3 --device cuda" in wrap
    assert "--model tiny-random" in wrap
    merge = next(a for a in merge_job if a.startswith("--wrap="))
    assert merge.count("shard-") == 3 and "merged" in merge and "job 701" in done.stdout
    refused = subprocess.run(["bash", str(REPO / "scripts" / "slurm_array.sh"), "2", str(out),
                              "--", "--shard", "0/2"], env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "--shard" in refused.stderr


def test_more_shards_than_items_finish_empty_and_merge(tmp_path, tiny, data_dir):
    def cfg(shard: str | None) -> RunConfig:
        return RunConfig(model="tiny-random", benchmarks=["bbq"], categories=["Age"], limit=1,
                         conditions=["baseline"], mode="letter", batch_size=1,
                         data_dir=str(data_dir), shard=shard)

    full = run_study(cfg(None), tmp_path / "full", loaded=tiny)
    shards = [run_study(cfg(f"{i}/4"), tmp_path / f"s{i}", loaded=tiny) for i in range(4)]
    assert sorted(s.n_rows for s in shards) == [0, 0, 0, full.n_rows]
    merged = merge_runs([tmp_path / f"s{i}" for i in range(4)], tmp_path / "merged")
    assert _rows(merged.path) == _rows(tmp_path / "full")
