"""Background shard writes: same bytes as synchronous writes, errors surface, order kept."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

import probe.activations.writer as W
from probe.activations import ActivationStore, ShardWriter
from tests.test_activations_store import HOOKS, SIZES, D, K, _data


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _write(folder: Path, background: bool, rows_per_shard: int = 4) -> ShardWriter:
    meta, acts = _data(sum(SIZES), seed=5)
    writer = ShardWriter(folder, HOOKS, K, D, rows_per_shard=rows_per_shard,
                         background=background)
    start = 0
    for size in SIZES:
        writer.add(meta[start:start + size], {h: t[start:start + size] for h, t in acts.items()})
        start += size
    writer.close()
    return writer


def test_background_writes_equal_synchronous_writes(tmp_path):
    _write(tmp_path / "sync", background=False)
    _write(tmp_path / "bg", background=True)
    assert _files(tmp_path / "bg") == _files(tmp_path / "sync")
    ActivationStore(tmp_path / "bg").verify()


def test_writes_happen_off_the_calling_thread(tmp_path, monkeypatch):
    threads: list[str] = []
    real = W.atomic_write_bytes

    def spy(path, data):
        threads.append(threading.current_thread().name)
        real(path, data)

    monkeypatch.setattr(W, "atomic_write_bytes", spy)
    _write(tmp_path, background=True)
    assert len(threads) == 5 and all(t.startswith("shard-writer") for t in threads)


def test_a_failed_background_write_is_raised_and_keeps_earlier_shards(tmp_path, monkeypatch):
    real, calls = W.atomic_write_bytes, []

    def failing(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(W, "atomic_write_bytes", failing)
    meta, acts = _data(12)
    writer = ShardWriter(tmp_path, HOOKS, K, D, rows_per_shard=4, background=True)
    with pytest.raises(OSError, match="No space"):
        for start in range(0, 12, 4):
            writer.add(meta[start:start + 4], {h: t[start:start + 4] for h, t in acts.items()})
        writer.close()
    # The first shard is complete and indexed; a resumed writer builds on it.
    resumed = ShardWriter(tmp_path, HOOKS, K, D, rows_per_shard=4)
    assert resumed.written_keys() == {("it0", "baseline"), ("it1", "cot"), ("it2", "baseline"),
                                      ("it3", "cot")}


def test_duplicate_key_refused_while_its_shard_is_in_flight(tmp_path):
    meta, acts = _data(4)
    writer = ShardWriter(tmp_path, HOOKS, K, D, rows_per_shard=4, background=True)
    writer.add(meta, acts)  # fills a shard: handed to the worker
    with pytest.raises(ValueError, match="already stored"):
        writer.add(meta[:1], {h: t[:1] for h, t in acts.items()})
    writer.close()
    assert torch.equal(ActivationStore(tmp_path).load(HOOKS[0]),
                       acts[HOOKS[0]][:, -1].half().float())


@pytest.mark.parametrize("background", [False, True])
def test_writer_stall_benchmark_runs(background):
    from probe.bench.writer import writer_stall

    r = writer_stall(d_model=8, n_hooks=3, batch=4, n_batches=5, rows_per_shard=8,
                     background=background)
    assert r["n_batches"] == 5 and r["background"] is background
    assert 0 <= r["median_wait_s"] <= r["sum_wait_s"] <= r["total_s"]
    assert r["max_wait_at_shard_s"] > 0  # batches 2 and 4 fill a shard
