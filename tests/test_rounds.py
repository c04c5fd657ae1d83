"""Review rounds cached as positions of the same run: ``run.cache.at_round(hook, r)``.

Round r's answer position is the last prompt token before the model writes round r's
answer: for a review row, round 0 is the end of the first question's prompt, round 1 (the
final, scored round) is the row's own position -1.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from probe.conditions.prompts import render
from probe.conditions.registry import get_condition
from probe.config import RunConfig
from probe.engine.continuation import prompt_stem
from probe.engine.study import load_items, run_study
from probe.errors import ConfigError, DataError, UnknownNameError
from probe.store.opened_run import Run

pytestmark = pytest.mark.usefixtures("one_thread")
CONDITIONS = ["baseline", "review", "cot"]


def _cfg(data_dir: Path, **kw: Any) -> RunConfig:
    base: dict[str, Any] = dict(
        model="tiny-random", benchmarks=["bbq", "winogender"], categories=["Age"], limit=3,
        conditions=CONDITIONS, data_dir=str(data_dir), cache_acts=True, act_dtype="float32",
        batch_size=4, reasoning_tokens=6)
    return RunConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny, data_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rounds")
    out = {"batched": root / "batched", "single": root / "single"}
    run_study(_cfg(data_dir), out["batched"], loaded=tiny)
    run_study(_cfg(data_dir, batch_size=1), out["single"], loaded=tiny)
    return out


def _round0_text(tiny, cfg: RunConfig, items: dict, row: dict) -> str:
    """The round-0 prompt as the run renders it: the first turn alone, no history."""
    first = get_condition(row["condition"]).build(items[row["item_id"]]).turns[0]
    return prompt_stem(render(tiny.tokenizer, tiny.chat, [], first.user,
                              first.assistant_prefix, cfg.system_prompt))


def test_round0_equals_plain_forward_over_round0_prompt(runs, tiny):
    from probe.testing import tiny_hf

    run = Run(runs["batched"])
    items = {it.item_id: it for it in load_items(run.config)[0]}
    plain = tiny_hf()[0].eval()  # the same weights, never bridged
    hook = "blocks.0.hook_resid_post"
    got = run.cache.at_round(hook, 0)
    checked = 0
    for i, row in enumerate(run.rows):
        if row["condition"] == "baseline":
            continue
        text = _round0_text(tiny, run.config, items, row)
        assert row["prompt"].startswith(text)  # the final prompt holds round 0's
        ids = torch.tensor([tiny.tokenizer(text, add_special_tokens=False).input_ids])
        with torch.inference_mode():
            hidden = plain(input_ids=ids, output_hidden_states=True).hidden_states
        torch.testing.assert_close(got[i], hidden[1][0, -1], atol=1e-4, rtol=1e-4)
        checked += 1
    assert checked == sum(r["condition"] != "baseline" for r in run.rows) > 0


def test_final_round_is_position_minus_one_and_missing_rounds_are_nan(runs):
    run = Run(runs["batched"])
    cache = run.cache
    hook = "blocks.1.hook_resid_post"
    last = cache[hook][:, cache.position(-1)]
    multi = torch.tensor([r["condition"] != "baseline" for r in run.rows])
    r0, r1 = cache.at_round(hook, 0), cache.at_round(hook, 1)
    torch.testing.assert_close(r1[multi], last[multi])
    torch.testing.assert_close(r0[~multi], last[~multi])  # single-turn: round 0 is -1
    assert torch.isnan(r1[~multi]).all() and not cache.round_mask(1)[~multi].any()
    assert cache.round_mask(0).all() and cache.round_mask(1)[multi].all()
    assert not torch.equal(r0[multi], r1[multi])  # round 0 is another position
    assert torch.isnan(cache.at_round(hook, 2)).all()
    assert [cache.n_rounds(c) for c in ("baseline", "review", "cot")] == [1, 2, 2]
    with pytest.raises(UnknownNameError):
        cache.n_rounds("instruct-9")
    with pytest.raises(ConfigError):
        cache.at_round(hook, -1)
    torch.testing.assert_close(cache.at_round(("resid_post", 1), 0), r0)


def test_batched_equals_unbatched(runs):
    a, b = Run(runs["batched"]), Run(runs["single"])
    assert [r["output"] for r in a.rows] == [r["output"] for r in b.rows]
    for hook in ("hook_embed", "blocks.1.hook_resid_post"):
        for r in (0, 1):
            torch.testing.assert_close(a.cache.at_round(hook, r), b.cache.at_round(hook, r),
                                       atol=1e-4, rtol=1e-4, equal_nan=True)


def test_runs_without_rounds_still_read(runs, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(runs["batched"], old)
    shutil.rmtree(old / "activations" / "rounds")  # as cached before rounds were stored
    run, new = Run(old), Run(runs["batched"])
    hook = "blocks.1.hook_resid_post"
    torch.testing.assert_close(run.cache.at_round(hook, 1), new.cache.at_round(hook, 1),
                               equal_nan=True)
    assert run.cache.n_rounds("review") == 0  # its earlier round is not stored
    assert run.cache.n_rounds("baseline") == 1
    with pytest.raises(DataError, match="before review rounds"):
        run.cache.at_round(hook, 0)


def test_resume_completes_a_missing_rounds_store(runs, tmp_path, tiny, data_dir):
    """A crash can leave rows and main shards without their rounds: resume re-runs them."""
    out = tmp_path / "resumed"
    shutil.copytree(runs["batched"], out)
    shutil.rmtree(out / "activations" / "rounds")
    run_study(_cfg(data_dir), out, loaded=tiny)
    a, b = Run(out), Run(runs["batched"])
    assert a.rows == b.rows
    for r in (0, 1):
        torch.testing.assert_close(a.cache.at_round("hook_embed", r),
                                   b.cache.at_round("hook_embed", r), equal_nan=True)


def test_single_turn_runs_write_no_rounds_store(tmp_path, tiny, data_dir):
    out = tmp_path / "single-turn"
    run_study(_cfg(data_dir, conditions=["baseline"], benchmarks=["bbq"]), out, loaded=tiny)
    assert not (out / "activations" / "rounds").exists()
    run = Run(out)
    torch.testing.assert_close(run.cache.at_round("hook_embed", 0),
                               run.cache["hook_embed"][:, -1])


def test_merged_shards_hold_the_unsharded_runs_rounds(runs, tmp_path, tiny, data_dir):
    from probe.activations import ActivationStore
    from probe.store.merge import merge_runs

    parts = [tmp_path / f"s{i}" for i in range(2)]
    for i, part in enumerate(parts):
        run_study(_cfg(data_dir, batch_size=1, shard=f"{i}/2"), part, loaded=tiny)
    merged = merge_runs(parts, tmp_path / "merged").path
    a = ActivationStore(merged / "activations" / "rounds")
    b = ActivationStore(runs["single"] / "activations" / "rounds")
    assert a.rows == b.rows and len(a.rows) > 0
    assert [s["sha256"] for s in a.shards] == [s["sha256"] for s in b.shards]
