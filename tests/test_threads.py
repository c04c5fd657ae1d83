"""The torch thread rule: a pure function of cores, load average and --threads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from probe.engine.threads import choose_threads
from probe.errors import ConfigError
from tests.conftest import REPO


@pytest.mark.parametrize(("cores", "load", "want"), [
    (16, 0.0, None),    # idle: torch's default
    (16, 0.5, 15),      # half a core busy: floor leaves it to its owner
    (16, 0.0001, 15),
    (16, 4.0, 12),      # the free cores
    (16, 4.5, 11),      # floor: never more threads than free cores
    (2, 1.5, 1),        # half a core free: one thread, not two
    (2, 6.0, 1),        # oversubscribed: one thread
    (16, 40.0, 1),
    (4, None, None),    # no load average on this platform
])
def test_choice(cores: int, load: float | None, want: int | None) -> None:
    n, why = choose_threads(cores, load)
    assert n == want
    assert (why is None) == (want is None)
    if n is not None:
        assert 1 <= n < cores and n <= max(1, cores - (load or 0))


def test_override_wins_and_is_checked() -> None:
    assert choose_threads(16, 40.0, 8) == (8, "--threads 8")
    assert choose_threads(2, 0.0, 3)[0] == 3
    with pytest.raises(ConfigError, match="--threads 0"):
        choose_threads(2, 0.0, 0)


def test_cli_sets_threads() -> None:
    # OMP_NUM_THREADS=1 makes torch's default 1, so a 2 can only come from --threads.
    code = ("import torch, probe.cli as c; from click.testing import CliRunner;"
            "r = CliRunner().invoke(c.cli, ['--threads', '2', 'conditions']);"
            "assert r.exit_code == 0, r.output; print(torch.get_num_threads())")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.stdout.strip().splitlines()[-1] == "2", out.stderr[-1000:]
