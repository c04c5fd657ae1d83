"""Shared fixtures: the data dir, a tiny random model, and the real embedded model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Every probe command the tests start uses one torch thread per core, whatever the
# machine's load (probe.engine.threads would otherwise choose by load average, and an in-process
# command would leave its choice on the whole session): results never depend on load.
os.environ.setdefault("PROBE_THREADS", str(os.cpu_count() or 1))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The benchmark data dir ($PROBE_DATA_DIR, else ../shared/data), or skip the test."""
    from tests.conftest_data import shared_data_dir

    return shared_data_dir()


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: on a busy shared CPU, threads wait on each other over the tiny
    model's small matrices, and one thread runs several times faster."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tiny():
    from probe.testing import tiny_model

    return tiny_model()


@pytest.fixture(scope="session")
def real_model():
    """The embedded SmolLM2-135M-Instruct, loaded once for the whole session."""
    from probe.engine.models import load_model

    return load_model()


@pytest.fixture()
def clean_registry():
    """Conditions a test registers must not leak into other tests' default condition lists."""
    from probe.conditions.registry import CONDITIONS

    before = dict(CONDITIONS)
    yield
    CONDITIONS.clear()
    CONDITIONS.update(before)


@pytest.fixture()
def small_data(tmp_path: Path) -> Path:
    """A small data dir: BBQ Age (one item per cell) and the real Winogender files."""
    import shutil

    from tests.conftest_data import bbq_cells, shared_data_dir, write_jsonl

    root = tmp_path / "data"
    write_jsonl(root / "bbq" / "Age.jsonl", bbq_cells("Age", 1))
    shutil.copytree(shared_data_dir() / "winogender", root / "winogender")
    return root
