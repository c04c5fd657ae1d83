"""scripts/locate_self_correction.py prints each stage's result, in order, as it ends."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO
from tests.test_resume import _env


def test_each_stage_prints_its_result(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "locate"
    done = subprocess.run(
        [sys.executable, "scripts/locate_self_correction.py", "--model", "tiny-random",
         "--limit", "1", "--analysis-limit", "1", "--mode", "letter", "--batch-size", "4",
         "--data-dir", str(data_dir), "--out", str(out)],
        cwd=REPO, env=_env(None), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [ln for ln in done.stdout.splitlines()
             if re.match(r"(run|probes|patching|steering|lens|report): ", ln)]
    assert [ln.split(":")[0] for ln in lines] == ["run", "probes", "patching", "steering",
                                                  "lens", "report"]
    by = {ln.split(":")[0]: ln for ln in lines}
    assert "readout gap instruct-1 - baseline" in by["patching"] and "n=" in by["patching"]
    assert "readout at alpha 0" in by["steering"]
    assert "final-layer readout: baseline" in by["lens"]
    # nothing is left half-done: no partial files once the stages ended
    assert not list(out.glob("*.partial.jsonl"))
