"""Resumable analyses: kill a real ``probe patch|steer|lens|probes`` process after its second
unit (``PROBE_FAULT=analysis-unit:2``), rerun the same analysis, and check that the final JSON
equals an uninterrupted run's byte for byte (its ``seconds`` aside: two uninterrupted runs
differ there too) and that the partial file is gone. A partial file written under other
options is refused with a one-line error naming the option.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import probe
from probe.analysis.checkpoint import Checkpoint, pack_arrays, unpack_arrays
from probe.errors import ConfigError
from tests.conftest import REPO
from tests.test_resume import _default_sigint, _env

# name: (CLI arguments after RUN, the same call through the API, JSON written, partial name)
ANALYSES: dict[str, tuple[list[str], Callable[[Path], Any], str]] = {
    "patch": (["--instruction", "instruct-1", "--baseline", "negate-1"],
              lambda run: probe.patch(run, "instruct-1", "negate-1"), "patching"),
    "steer": (["--instruction", "instruct-1", "--layers", "0,1", "--alphas", "-2,0,2"],
              lambda run: probe.steer(run, "instruct-1", layers=[0, 1], alphas=[-2, 0, 2]),
              "steering"),
    "lens": ([], lambda run: probe.lens(run), "lens"),
    "probes": ([], lambda run: probe.probes(run, progress=False), "probes"),
    "superficial": (["--causal-layers", "0,1", "--alphas", "-2,0,2", "--n-random", "2",
                     "--n-boot", "200"],
                    lambda run: probe.superficial(run, causal_layers=[0, 1], alphas=[-2, 0, 2],
                                                  n_random=2, n_boot=200), "superficial"),
}


def _cli(args: list[str], fault: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "probe.cli", "--threads", "1", *args],
                          cwd=REPO, env=_env(fault), capture_output=True, text=True,
                          timeout=600, preexec_fn=_default_sigint)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A tiny-model BBQ run, batches of 2 (several units each)."""
    out = tmp_path_factory.mktemp("analysis_resume") / "run"
    done = _cli(["run", "--model", "tiny-random", "--data-dir", str(data_dir), "--limit", "2",
                 "--benchmark", "bbq", "--condition", "baseline", "--condition", "instruct-1",
                 "--condition", "negate-1", "--batch-size", "2", "--cache-acts",
                 "--out", str(out)])
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def _without_seconds(path: Path) -> bytes:
    return re.sub(rb'"seconds": [0-9.e+-]+', b'"seconds": _', path.read_bytes())


@pytest.mark.parametrize("name", list(ANALYSES))
def test_killed_analysis_resumes_to_the_same_json(name: str, tiny_run: Path, tmp_path: Path,
                                                  one_thread: None) -> None:
    args, call, stem = ANALYSES[name]
    ref, resumed = tmp_path / "ref", tmp_path / "resumed"
    shutil.copytree(tiny_run, ref)
    shutil.copytree(tiny_run, resumed)
    killed = _cli([name, str(resumed), *args], fault="analysis-unit:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    partial = resumed / f"{stem}.partial.jsonl"
    assert len(partial.read_text().splitlines()) == 3  # options + the two units done
    assert not (resumed / f"{stem}.json").exists()
    call(ref)
    call(resumed)  # the same options: continues from the two units
    assert not partial.exists()
    assert _without_seconds(resumed / f"{stem}.json") == _without_seconds(ref / f"{stem}.json")


def test_other_options_are_refused(tiny_run: Path, tmp_path: Path, one_thread: None) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    killed = _cli(["patch", str(run), *ANALYSES["patch"][0]], fault="analysis-unit:1")
    assert killed.returncode == -signal.SIGKILL
    done = _cli(["patch", str(run), "--instruction", "instruct-1", "--baseline", "baseline"])
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("probe: error: ")
    assert "--baseline 'negate-1', not 'baseline'" in done.stderr
    assert (run / "patching.partial.jsonl").exists()  # nothing computed is lost


def test_checkpoint_round_trip_and_torn_tail(tmp_path: Path) -> None:
    import numpy as np

    arrays = [np.array([0.1, np.nan, -np.inf, 1e-300]), np.array([1 / 3, 2.0, 0.0, -0.0])]
    back = unpack_arrays(pack_arrays(arrays))
    assert all(a.tobytes() == b.tobytes() for a, b in zip(arrays, back, strict=True))
    ck = Checkpoint(tmp_path, "x", {"--seed": 1}, progress=False)
    ck.put("a", 1)
    ck.close()
    with open(tmp_path / "x.partial.jsonl", "ab") as f:
        f.write(b'{"key": "b", "val')  # a kill mid-line
    again = Checkpoint(tmp_path, "x", {"--seed": 1}, progress=False)
    assert again.done == {"a": 1}
    assert again.unit("b", lambda: 2) == 2
    again.close()
    assert Checkpoint(tmp_path, "x", {"--seed": 1}, progress=False).done == {"a": 1, "b": 2}
    with pytest.raises(ConfigError, match="--seed 1, not 2"):
        Checkpoint(tmp_path, "x", {"--seed": 2})
