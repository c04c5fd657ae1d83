"""Review rounds cached as positions of the same run: ``run.cache.at_round(hook, r)``.

Round r's answer position is the last prompt token before the model writes round r's
answer: for a review row, round 0 is the end of the first question's prompt, round 1 (the
final, scored round) is the row's own position -1.
"""

from __future__ import annotations

import os
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


def _check_round0(run: Run, tiny) -> None:
    from probe.testing import tiny_hf

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


def test_round0_equals_plain_forward_over_round0_prompt(runs, tiny):
    _check_round0(Run(runs["batched"]), tiny)


def test_counterbalanced_rounds_come_from_the_options_own_order(tmp_path, tiny, data_dir):
    """Letter mode scores every cyclic order; round 0 is cached on the row's own order."""
    out = tmp_path / "letter"
    run_study(_cfg(data_dir, mode="letter", conditions=["review"]), out, loaded=tiny)
    run = Run(out)
    assert run.config.counterbalance
    _check_round0(run, tiny)


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


@pytest.mark.slow
def test_real_model_round0_equals_plain_hf_forward(real_model, data_dir, tmp_path):
    """The real model, two review items in one batch (left padding), every component."""
    from transformers import AutoModelForCausalLM

    from probe.engine.models import embedded_dir
    from tests.test_cache_components import hf_module_outputs

    cfg = _cfg(data_dir, model="smollm2-135m", benchmarks=["bbq"], limit=2,
               conditions=["review"], cache_components=["resid", "attn_out", "mlp_out"])
    run_study(cfg, tmp_path / "real", loaded=real_model)
    run = Run(tmp_path / "real")
    items = {it.item_id: it for it in load_items(run.config)[0]}
    plain = AutoModelForCausalLM.from_pretrained(embedded_dir(), dtype=torch.float32).eval()
    n = real_model.n_layers
    hooks = ["hook_embed", "blocks.0.hook_attn_out", f"blocks.{n // 2}.hook_mlp_out",
             f"blocks.{n - 2}.hook_resid_post"]
    assert len(run.rows) == 2 and run.cache.round_mask(0).all()
    for i, row in enumerate(run.rows):
        text = _round0_text(real_model, run.config, items, row)
        ids = torch.tensor([real_model.tokenizer(text, add_special_tokens=False).input_ids])
        ref = hf_module_outputs(plain, ids)
        for hook in hooks:
            torch.testing.assert_close(run.cache.at_round(hook, 0)[i], ref[hook][0, -1],
                                       atol=1e-3, rtol=1e-3)


def test_killed_run_resumes_to_the_uninterrupted_rounds(tmp_path, data_dir):
    """SIGKILL after a batch's activations (both stores) but before its rows, then after a
    later batch's rows: the resumed folder equals an uninterrupted run's, rounds included."""
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO

    def probe_run(out: Path, fault: str | None = None) -> int:
        cmd = [sys.executable, "-m", "probe.cli", "run", "--model", "tiny-random",
               "--data-dir", str(data_dir), "--benchmark", "bbq", "--category", "Age",
               "--limit", "8", "--condition", "baseline", "--condition", "review",
               "--reasoning-tokens", "4", "--cache-acts", "--batch-size", "2",
               "--rows-per-shard", "3", "--out", str(out)]
        env = {**{k: v for k, v in os.environ.items() if k != "PROBE_FAULT"},
               "OMP_NUM_THREADS": "1", **({"PROBE_FAULT": fault} if fault else {})}
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=300).returncode

    def files(folder: Path) -> dict[str, bytes]:
        acts = folder / "activations"
        got = {str(p.relative_to(acts)): p.read_bytes() for p in acts.rglob("*") if p.is_file()}
        got["generations.jsonl"] = (folder / "generations.jsonl").read_bytes()
        return got

    assert probe_run(tmp_path / "ref") == 0
    out = tmp_path / "run"
    assert probe_run(out, "batch-acts:6") == -signal.SIGKILL  # the second review batch
    assert (out / "activations" / "rounds" / "index.json").is_file()
    assert probe_run(out, "batch-rows:2") == -signal.SIGKILL
    assert probe_run(out) == 0
    want = files(tmp_path / "ref")
    assert any(name.startswith("rounds/shard-") for name in want)
    assert files(out) == want
