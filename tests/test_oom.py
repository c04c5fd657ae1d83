"""Out-of-memory backoff: a run whose batches do not fit finishes with the same results.

OOM is simulated by making the engine's forward / scoring / generate raise
``torch.cuda.OutOfMemoryError`` when handed more than two prompts.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from probe.config import RunConfig
from probe.engine import pipeline
from probe.engine.inference import Engine
from probe.engine.study import run_study

MAX_FIT = 2


pytestmark = pytest.mark.usefixtures("one_thread")


def _oom_above(limit: int, calls: list[int]):
    """Wrap an Engine method so batches larger than ``limit`` raise a CUDA OOM."""

    def wrap(method):
        def patched(self, texts, *args, **kwargs):
            calls.append(len(texts))
            if len(texts) > limit:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
            return method(self, texts, *args, **kwargs)

        return patched

    return wrap


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]


def _cfg(data_dir: Path, **kw) -> RunConfig:
    base = dict(model="tiny-random", categories=["Age", "Religion"], limit=2,
                data_dir=str(data_dir), max_new_tokens=3, reasoning_tokens=3, cache_acts=True)
    return RunConfig(**{**base, **kw})


@pytest.mark.parametrize("mode,conditions,benchmarks", [
    ("text", ["baseline", "instruct-1"], ["bbq", "winogender"]),
    ("generate", ["cot"], ["bbq"])])
def test_run_survives_oom_with_identical_results(tmp_path, monkeypatch, tiny, data_dir,
                                                 mode, conditions, benchmarks):
    # Reference: batches of MAX_FIT without any OOM. A planned batch of 4 split in halves
    # holds exactly the same prompts, so even the padding (and so every float) matches.
    opts = dict(mode=mode, conditions=conditions, benchmarks=benchmarks)
    clean = run_study(_cfg(data_dir, batch_size=MAX_FIT, **opts), tmp_path / "clean", loaded=tiny)
    calls: list[int] = []
    wrap = _oom_above(MAX_FIT, calls)
    monkeypatch.setattr(Engine, "forward_last", wrap(Engine.forward_last))
    monkeypatch.setattr(Engine, "option_logprobs_batch", wrap(Engine.option_logprobs_batch))
    monkeypatch.setattr(Engine, "generate_batch", wrap(Engine.generate_batch))
    oom = run_study(_cfg(data_dir, batch_size=4, **opts), tmp_path / "oom", loaded=tiny)
    assert max(calls) > MAX_FIT, "the simulated OOM never triggered"
    assert _rows(tmp_path / "oom") == _rows(tmp_path / "clean")
    assert oom.metrics == clean.metrics
    # The plan (and so resume) still uses the configured batch size.
    assert json.loads((tmp_path / "oom" / "run.json").read_text())["config"]["batch_size"] == 4
    a = (tmp_path / "clean" / "activations" / "index.json").read_text()
    b = (tmp_path / "oom" / "activations" / "index.json").read_text()
    assert json.loads(a)["rows"] == json.loads(b)["rows"]
    assert [s["sha256"] for s in json.loads(a)["shards"]] == \
        [s["sha256"] for s in json.loads(b)["shards"]]


def _fake_run_batch(limit: int, calls: list[list[int]], exc: type[Exception] = RuntimeError):
    def fake(engine, units, cfg, capture, rounds=0):
        calls.append(list(units))
        if len(units) > limit:
            raise exc("CUDA out of memory (simulated)")
        rows = [SimpleNamespace(unit=u) for u in units]
        return rows, {"h": torch.tensor(units, dtype=torch.float32)[:, None]}

    return fake


def test_split_keeps_order_and_remembers_size(monkeypatch):
    calls: list[list[int]] = []
    monkeypatch.setattr(pipeline, "run_batch", _fake_run_batch(3, calls))
    engine = SimpleNamespace(batch_size=16)
    units = list(range(13))
    rows, acts = pipeline.run_batch_safe(engine, units, None, None)  # type: ignore[arg-type]
    assert [r.unit for r in rows] == units
    assert acts["h"][:, 0].tolist() == [float(u) for u in units]
    assert engine.batch_size <= 3
    # A later batch starts at the remembered size: no further failing attempt.
    calls.clear()
    pipeline.run_batch_safe(engine, list(range(100, 110)), None, None)  # type: ignore[arg-type]
    assert all(len(c) <= 3 for c in calls)


def test_other_errors_and_single_item_oom_propagate(monkeypatch):
    monkeypatch.setattr(pipeline, "run_batch", _fake_run_batch(0, []))
    with pytest.raises(RuntimeError, match="out of memory"):
        pipeline.run_batch_safe(SimpleNamespace(batch_size=4), [1, 2, 3], None, None)  # type: ignore[arg-type]

    def boom(*_):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(pipeline, "run_batch", boom)
    engine = SimpleNamespace(batch_size=4)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        pipeline.run_batch_safe(engine, [1, 2, 3], None, None)  # type: ignore[arg-type]
    assert engine.batch_size == 4


def test_resumed_run_starts_at_the_size_that_fitted(tmp_path, monkeypatch, tiny, data_dir):
    calls: list[int] = []
    wrap = _oom_above(MAX_FIT, calls)
    monkeypatch.setattr(Engine, "option_logprobs_batch", wrap(Engine.option_logprobs_batch))
    cfg = _cfg(data_dir, batch_size=4, mode="letter", conditions=["baseline"],
               benchmarks=["bbq"])
    first = run_study(cfg, tmp_path / "run", loaded=tiny)
    fits = json.loads((tmp_path / "run" / "run.json").read_text())["batch_size_fits"]
    assert fits == {"device": "cpu", "size": MAX_FIT} and max(calls) > MAX_FIT
    # Drop the last rows so a resume has batches to rerun: none of them tries 4 again.
    gen = tmp_path / "run" / "generations.jsonl"
    lines = gen.read_text().splitlines(keepends=True)
    gen.write_text("".join(lines[: len(lines) // 2]))
    calls.clear()
    again = run_study(cfg, tmp_path / "run", loaded=tiny)
    assert calls and max(calls) <= MAX_FIT
    assert again.metrics == first.metrics
