"""Shared fixtures: the data dir, a tiny random model, and the real embedded model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_dir_or_skip() -> Path:
    """The benchmark data dir ($PROBE_DATA_DIR, else ../shared/data), or skip the test."""
    path = Path(os.environ.get("PROBE_DATA_DIR", REPO.parent / "shared" / "data")).resolve()
    if not (path / "bbq").is_dir():
        pytest.skip(f"benchmark data not found at {path} (set PROBE_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return data_dir_or_skip()


@pytest.fixture(scope="session")
def tiny():
    from probe.testing import tiny_model

    return tiny_model()


@pytest.fixture(scope="session")
def real_model():
    """The embedded SmolLM2-135M-Instruct, loaded once for the whole session."""
    from probe.models import load_model

    return load_model()
