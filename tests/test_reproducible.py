"""Reproducibility: the same config and seed give the same bytes, and run.json says what
produced them (model, data file hashes, package versions, git commit and dirty flag)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.conftest_data import shared_data_dir


def _command(out: Path, data: Path) -> list[str]:
    return [sys.executable, "-m", "probe.cli", "run", "--model", "tiny-random",
            "--data-dir", str(data), "--limit", "2", "--category", "Age",
            "--category", "Religion", "--condition", "baseline", "--condition", "instruct-1",
            "--batch-size", "3", "--cache-acts", "--seed", "5", "--out", str(out)]


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)


HEADS: list[str] = []  # HEAD before and after the runs (others may commit meanwhile)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two fresh runs of one config in two separate processes, side by side."""
    data = shared_data_dir()
    HEADS.append(_git("rev-parse", "HEAD").stdout.strip())
    root = tmp_path_factory.mktemp("repro")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(_command(root / name, data), cwd=REPO, env=env, text=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for name in ("a", "b")]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    HEADS.append(_git("rev-parse", "HEAD").stdout.strip())
    return root / "a", root / "b"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "run.json"}


def test_same_config_same_bytes(two_runs: tuple[Path, Path]) -> None:
    a, b = (_files(f) for f in two_runs)
    assert {"generations.jsonl", "metrics.json", "activations/index.json"} <= set(a)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name] == b[name], f"{name} differs between two identical runs"
    assert json.loads(a["metrics.json"])["conditions"]  # not trivially empty


def _run_json(folder: Path) -> dict[str, Any]:
    return dict(json.loads((folder / "run.json").read_text()))


def test_run_json_records_data_hashes(two_runs: tuple[Path, Path]) -> None:
    files = _run_json(two_runs[0])["provenance"]["files"]
    data = shared_data_dir()
    for rel in ("bbq/Age.jsonl", "bbq/Religion.jsonl", "winogender/templates.tsv"):
        want = hashlib.sha256((data / rel).read_bytes()).hexdigest()
        assert files[rel]["sha256"] == want, rel


def test_run_json_records_packages_and_git(two_runs: tuple[Path, Path]) -> None:
    prov = _run_json(two_runs[0])["provenance"]
    import torch
    import transformers

    assert prov["packages"]["torch"] == torch.__version__
    assert prov["packages"]["transformers"] == transformers.__version__
    assert prov["packages"]["transformer_lens"] == metadata.version("transformer-lens")
    if not all(HEADS):
        pytest.skip("not a git checkout")
    commit = prov["git"]["commit"]
    # The recorded commit lies between HEAD before the run and HEAD after it.
    assert _git("merge-base", "--is-ancestor", HEADS[0], commit).returncode == 0, commit
    assert _git("merge-base", "--is-ancestor", commit, HEADS[1]).returncode == 0, commit
    assert isinstance(prov["git"]["dirty"], bool)


def test_run_json_records_the_model(two_runs: tuple[Path, Path]) -> None:
    info = _run_json(two_runs[0])
    assert info["config"]["model"] == "tiny-random" and info["config"]["seed"] == 5


def test_local_model_folder_is_hashed(tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    from probe.config import RunConfig
    from probe.engine.study import run_study
    from probe.testing import tiny_tokenizer

    folder = tmp_path / "model"
    tokenizer = tiny_tokenizer()
    config = AutoConfig.for_model(
        "llama", vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    cfg = RunConfig(model=str(folder), data_dir=str(shared_data_dir()), limit=1,
                    benchmarks=["bbq"], categories=["Age"], conditions=["baseline"])
    run_study(cfg, tmp_path / "out")
    files = _run_json(tmp_path / "out")["provenance"]["files"]
    assert "model" in files and files["model"].get("sha256")
