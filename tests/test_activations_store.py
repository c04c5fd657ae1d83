"""Activation shards: round trips, checksums, torn-write recovery, bounded buffering."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from probe.activations import ActivationStore, ShardWriter, layer_of
from probe.errors import ConfigError, DataError, UnknownNameError

HOOKS = ["hook_embed", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
K, D = 3, 8
REPO = Path(__file__).resolve().parent.parent


def _data(n: int, seed: int = 0) -> tuple[list[dict], dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    meta = [{"item_id": f"it{i}", "condition": ["baseline", "cot"][i % 2],
             "positions": list(range(-K, 0))} for i in range(n)]
    acts = {h: torch.randn(n, K, D, generator=gen, dtype=torch.float32) * 3 for h in HOOKS}
    return meta, acts


def _write(acts_dir: Path, meta: list[dict], acts: dict[str, torch.Tensor], sizes: list[int],
           dtype: str = "float16", rows_per_shard: int = 4, close: bool = True) -> ShardWriter:
    writer = ShardWriter(acts_dir, HOOKS, K, D, dtype=dtype, rows_per_shard=rows_per_shard)
    start = 0
    for size in sizes:
        writer.add(meta[start:start + size], {h: t[start:start + size] for h, t in acts.items()})
        start += size
    if close:
        writer.close()
    return writer


SIZES = [3, 5, 1, 6, 2]  # 17 rows crossing the 4-row shard boundaries unevenly


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_trip_across_shards(tmp_path: Path, dtype: str) -> None:
    meta, acts = _data(sum(SIZES))
    _write(tmp_path, meta, acts, SIZES, dtype=dtype)
    store = ActivationStore(tmp_path)
    assert len(store) == 17 and len(store.shards) == 5
    assert [s["n_rows"] for s in store.shards] == [4, 4, 4, 4, 1]
    cast = torch.float16 if dtype == "float16" else torch.float32
    for hook in HOOKS:
        expected = acts[hook].to(cast).float()
        got = store.load(hook, position=None)
        assert got.dtype == torch.float32 and got.shape == (17, K, D)
        assert torch.equal(got, expected)  # exact after the storage cast
        assert torch.equal(store.load(hook), expected[:, -1])
        assert torch.equal(store.load(hook, position=-K), expected[:, 0])
    store.verify()


def test_index_rows_map_to_their_tensors(tmp_path: Path) -> None:
    meta, acts = _data(17, seed=1)
    _write(tmp_path, meta, acts, SIZES, dtype="float32")
    store = ActivationStore(tmp_path)
    assert [(r["item_id"], r["condition"], r["row"]) for r in store.rows] == [
        (m["item_id"], m["condition"], i) for i, m in enumerate(meta)]
    picks = [16, 0, 9, 9, 4]
    hook = HOOKS[2]
    assert torch.equal(store.load(hook, rows=picks), acts[hook][picks, -1])
    key_row = store.key_to_row()
    assert key_row[("it9", "cot")] == 9
    for rows, tensors in store.iter_shards([hook]):
        idx = [r["row"] for r in rows]
        assert torch.equal(tensors[hook], acts[hook][idx])


def test_corrupted_and_missing_shard_named(tmp_path: Path) -> None:
    meta, acts = _data(17)
    _write(tmp_path, meta, acts, SIZES)
    shard = tmp_path / "shard-00002.safetensors"
    raw = bytearray(shard.read_bytes())
    raw[-5] ^= 0xFF  # flip bits inside the tensor data
    shard.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="shard-00002.safetensors"):
        ActivationStore(tmp_path).verify()
    shard.unlink()
    with pytest.raises(DataError, match="shard-00002.safetensors"):
        ActivationStore(tmp_path).verify()


def _resume_and_finish(acts_dir: Path, meta: list[dict], acts: dict[str, torch.Tensor]) -> None:
    """What the pipeline does on resume: add every row whose key is not written yet."""
    writer = ShardWriter(acts_dir, HOOKS, K, D, rows_per_shard=4)
    have = writer.written_keys()
    todo = [i for i, m in enumerate(meta) if (m["item_id"], m["condition"]) not in have]
    assert todo == list(range(todo[0], len(meta)))  # a prefix is done, nothing else
    for start in range(0, len(todo), 3):
        idx = todo[start:start + 3]
        writer.add([meta[i] for i in idx], {h: t[idx] for h, t in acts.items()})
    writer.close()


def _snapshot(acts_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(acts_dir.iterdir())}


def test_torn_shard_removed_and_resume_identical(tmp_path: Path) -> None:
    meta, acts = _data(17, seed=2)
    _write(tmp_path / "ref", meta, acts, SIZES)
    crashed = tmp_path / "crashed"
    _write(crashed, meta, acts, [3, 5, 1], close=False)  # 8 rows in shards, 1 buffered, lost
    torn = crashed / "shard-00002.safetensors"
    torn.write_bytes((crashed / "shard-00001.safetensors").read_bytes()[:50])
    (crashed / ".shard-00003.safetensors.abc.tmp").write_bytes(b"partial")
    (crashed / "notes.txt").write_text("not ours")  # foreign files must survive
    _resume_and_finish(crashed, meta, acts)
    (crashed / "notes.txt").unlink()
    assert _snapshot(crashed) == _snapshot(tmp_path / "ref")


def test_sigkill_between_shard_and_index(tmp_path: Path) -> None:
    """A real SIGKILL right after a shard's rename, before its index entry is written."""
    meta, acts = _data(17, seed=3)
    _write(tmp_path / "ref", meta, acts, SIZES)
    crashed = tmp_path / "crashed"
    torch.save({"meta": meta, "acts": acts}, tmp_path / "in.pt")
    code = textwrap.dedent(f"""
        import os, signal, sys, torch
        sys.path.insert(0, {str(REPO / "tests")!r})
        import probe.activations.writer as A
        from test_activations_store import _write
        real, calls = A.atomic_write_json, []
        def dying(path, obj):
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            real(path, obj)
        A.atomic_write_json = dying
        d = torch.load({str(tmp_path / "in.pt")!r}, weights_only=True)
        _write(__import__("pathlib").Path({str(crashed)!r}), d["meta"], d["acts"], {SIZES!r})
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    assert (crashed / "shard-00002.safetensors").exists()  # written, never indexed
    assert len(ShardWriter(crashed, HOOKS, K, D, rows_per_shard=4).written_keys()) == 8
    assert not (crashed / "shard-00002.safetensors").exists()
    _resume_and_finish(crashed, meta, acts)
    assert _snapshot(crashed) == _snapshot(tmp_path / "ref")


def test_buffer_bounded_by_rows_per_shard(tmp_path: Path) -> None:
    n = 200
    meta, acts = _data(n, seed=4)
    gen = torch.Generator().manual_seed(5)
    sizes, total = [], 0
    while total < n:
        sizes.append(min(int(torch.randint(1, 40, (1,), generator=gen)), n - total))
        total += sizes[-1]
    writer = ShardWriter(tmp_path, HOOKS, K, D, rows_per_shard=8)
    start = 0
    for size in sizes:
        writer.add(meta[start:start + size], {h: t[start:start + size] for h, t in acts.items()})
        start += size
        assert writer.buffered_rows < 8
    writer.close()
    assert max(sizes) > 8 and writer.max_buffered_rows <= 8
    assert len(ActivationStore(tmp_path)) == n


def test_buffer_copies_caller_batch(tmp_path: Path) -> None:
    meta, acts = _data(2)
    half = {h: t.half() for h, t in acts.items()}  # already in the storage dtype and device
    expected = {h: t.clone() for h, t in half.items()}
    writer = ShardWriter(tmp_path, HOOKS, K, D, rows_per_shard=100)
    writer.add(meta, half)
    for t in half.values():
        t.zero_()  # the caller reuses its batch buffer
    writer.close()
    store = ActivationStore(tmp_path)
    for h in HOOKS:
        assert torch.equal(store.load(h, position=None), expected[h].float())


def test_validation_errors(tmp_path: Path) -> None:
    meta, acts = _data(4)
    writer = ShardWriter(tmp_path, HOOKS, K, D, rows_per_shard=100)
    with pytest.raises(ValueError, match="shape"):
        writer.add(meta[:1], acts)
    with pytest.raises(ValueError, match="hooks"):
        writer.add(meta, {HOOKS[0]: acts[HOOKS[0]]})
    writer.add(meta[:2], {h: t[:2] for h, t in acts.items()})
    with pytest.raises(ValueError, match="already stored"):
        writer.add(meta[1:3], {h: t[1:3] for h, t in acts.items()})
    writer.close()
    with pytest.raises(ConfigError, match="d_model"):
        ShardWriter(tmp_path, HOOKS, K, D + 1)
    store = ActivationStore(tmp_path)
    with pytest.raises(UnknownNameError):
        store.load("blocks.9.hook_resid_post")
    with pytest.raises(ConfigError, match="position"):
        store.load(HOOKS[0], position=-K - 1)
    with pytest.raises(DataError, match="index.json"):
        ActivationStore(tmp_path / "none")


def test_layers() -> None:
    assert layer_of("hook_embed") == -1 and layer_of("blocks.12.hook_resid_post") == 12
    assert layer_of("ln_final.hook_normalized") is None
