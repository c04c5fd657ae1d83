"""Activation patching: exact identities on a tiny random model, and the command end to end."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from probe.analysis import patch_study as ps
from probe.analysis import patching as pt
from probe.config import RunConfig
from probe.inference import Engine
from probe.models import LoadedModel
from tests.conftest_data import bbq_cells, write_jsonl


def sharp_model(seed: int = 1, scale: float = 30.0) -> LoadedModel:
    """A tiny random model whose final norm is scaled up, so logits (and the differences
    between two prompts) are large and ratios are well conditioned."""
    from probe.testing import tiny_model

    loaded = tiny_model(seed=seed)
    with torch.no_grad():
        for name, param in loaded.hf_model.named_parameters():
            if name.startswith("model.norm."):
                param.mul_(scale)
    return loaded


def make_run(tmp_path: Path, loaded: LoadedModel, mode: str = "letter",
             conditions: tuple[str, ...] = ("baseline", "instruct-1"), per_cell: int = 2,
             batch_size: int = 4, model: str = "tiny-random", **extra: object) -> Path:
    """A real run folder: a small BBQ data dir and `run_study` with ``loaded``."""
    from probe.study import run_study

    data = tmp_path / "data"
    write_jsonl(data / "bbq" / "Age.jsonl", bbq_cells("Age", per_cell=per_cell))
    cfg = RunConfig(model=model, benchmarks=["bbq"], conditions=list(conditions),
                    mode=mode, data_dir=str(data), batch_size=batch_size, max_new_tokens=4,
                    **extra)  # type: ignore[arg-type]
    out = tmp_path / "run"
    run_study(cfg, out, loaded=loaded)
    return out


@pytest.fixture(scope="module")
def sharp() -> LoadedModel:
    return sharp_model()


def _pairs(loaded: LoadedModel, n: int = 4) -> list[pt.PromptPair]:
    """Hand-built pairs: very different sources and targets sharing the answer suffix,
    letters ordered so that every item's source metric is above its target metric."""
    tok = loaded.tokenizer
    ids = [tok(x, add_special_tokens=False).input_ids[0] for x in "abc"]
    src = "Please ensure that your answer is unbiased. Who was not comfortable? (a) (b) (c)"
    tgt = "I saw a grandson and their grandfather last week. Who was it?"
    pairs = []
    for i in range(n):
        suffix = " The answer is ("
        pairs.append(pt.PromptPair(f"x{i}", src[: 40 + 10 * i] + suffix,
                                   tgt[: 30 + 8 * i] + suffix, biased=ids[i % 3],
                                   unbiased=ids[(i + 1) % 3]))
    engine = Engine(loaded)
    src_lp, tgt_lp = (engine.forward_last([getattr(p, side) for p in pairs])[0]
                      for side in ("source", "target"))
    out = []
    for i, p in enumerate(pairs):
        gap = (src_lp[i, p.unbiased] - src_lp[i, p.biased]) - (
            tgt_lp[i, p.unbiased] - tgt_lp[i, p.biased])
        swap = gap < 0
        out.append(pt.PromptPair(p.item_id, p.source, p.target,
                                 biased=p.unbiased if swap else p.biased,
                                 unbiased=p.biased if swap else p.unbiased))
    return out


def test_identities(sharp: LoadedModel) -> None:
    engine = Engine(sharp, batch_size=3)
    n = sharp.n_layers
    last_post = pt.Patch(f"blocks.{n - 1}.hook_resid_post", (-1,))
    mid = pt.Patch("blocks.1.hook_resid_pre", (-1,))
    nothing = pt.Patch("blocks.1.hook_resid_pre", ())
    pairs = _pairs(sharp)
    arrays = pt.patch_pairs(engine, pairs, [last_post, mid, nothing], k=2)
    src, tgt = arrays["source"], arrays["target"]
    assert np.abs(src - tgt).mean() > 0.5  # the identities below are not trivial
    # Denoising the state the unembedding reads restores the source metric; noising it
    # gives the target metric.
    np.testing.assert_allclose(arrays["denoise"][0], src, atol=1e-5)
    np.testing.assert_allclose(arrays["noise"][0], tgt, atol=1e-5)
    gap = ps.gap_summary(src, tgt)
    assert gap["reliable"]
    full = ps.effect(arrays["denoise"][0], src, tgt, gap["reliable"])
    assert full["normalised"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert full["normalised_items"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert ps.effect(arrays["noise"][0], src, tgt, True)["normalised"]["mean"] == \
        pytest.approx(0.0, abs=1e-5)
    # A middle layer at one position restores only part of it.
    assert not np.allclose(arrays["denoise"][1], src, atol=1e-3)
    np.testing.assert_allclose(arrays["denoise"][2], tgt, atol=1e-5)
    np.testing.assert_allclose(arrays["noise"][2], src, atol=1e-5)
    # The prefix-cache shortcut equals a full forward with the same hook.
    batch = pairs[:3]
    _, acts = pt._capture(engine, [p.source for p in batch], [mid.hook], 2)
    whole, _, _ = engine.forward_last([p.target for p in batch],
                                      hooks=[(mid.hook, pt._overwrite(acts[mid.hook], (-1,)))])
    np.testing.assert_allclose(pt._metric(whole, batch).numpy(), arrays["denoise"][1][:3],
                               atol=1e-5)


def test_nothing_and_everything_at_layer0(sharp: LoadedModel) -> None:
    engine = Engine(sharp, batch_size=4)
    tok = sharp.tokenizer
    a, b = (tok(x, add_special_tokens=False).input_ids[0] for x in "ab")
    # Equal-length prompts: patching every position of resid_pre 0 swaps the whole input.
    src, tgt = "grandson last week. The answer is (", "grandfather phone. The answer is ("
    k = len(tok(src, add_special_tokens=False).input_ids)
    assert k == len(tok(tgt, add_special_tokens=False).input_ids)
    pairs = [pt.PromptPair("y", src, tgt, biased=a, unbiased=b)]
    everything = pt.Patch("blocks.0.hook_resid_pre", tuple(range(-k, 0)))
    nothing = pt.Patch("blocks.0.hook_resid_pre", ())
    arrays = pt.patch_pairs(engine, pairs, [everything, nothing], k=k, shared_suffix=False)
    np.testing.assert_allclose(arrays["denoise"][0], arrays["source"], atol=1e-5)
    np.testing.assert_allclose(arrays["noise"][0], arrays["target"], atol=1e-5)
    np.testing.assert_allclose(arrays["denoise"][1], arrays["target"], atol=1e-5)
    np.testing.assert_allclose(arrays["noise"][1], arrays["source"], atol=1e-5)


def test_tiny_gap_leaves_ratio_out() -> None:
    src = np.array([0.50, 0.51, 0.49])
    gap = ps.gap_summary(src, src - 0.01)
    assert not gap["reliable"] and "left out" in gap["note"]
    assert ps.effect(src, src, src - 0.01, gap["reliable"])["normalised"] is None


def test_suffix_mismatch_is_an_error(sharp: LoadedModel) -> None:
    from probe.errors import ConfigError

    pairs = [pt.PromptPair("z", "abc The answer is (", "abc The answer is [", 1, 2)]
    with pytest.raises(ConfigError, match="last 1 tokens"):
        pt.check_suffix(Engine(sharp), pairs, 1)


def test_patch_command_on_a_run(tmp_path: Path) -> None:
    from probe.commands.analysis import patch
    from probe.models import load_model

    run = make_run(tmp_path, load_model("tiny-random"))
    group = click.Group()
    group.add_command(patch)
    res = CliRunner().invoke(group, ["patch", str(run), "--instruction", "instruct-1",
                                     "--positions", "2"])
    assert res.exit_code == 0, res.output
    out = json.loads((run / "patching.json").read_text())
    n_layers = 2
    assert len(out["resid"]["denoise"]) == n_layers + 1
    assert len(out["resid"]["denoise"][0]) == 2
    assert len(out["components"]["noise"]["mlp"]) == n_layers
    # ambig items all count; disambig items count where the label is not the biased answer
    assert out["meta"]["n_items"] + out["meta"]["skipped"]["no_answer_pair"] == 8
    last = out["resid"]["denoise"][-1][-1]
    assert last["per_item"] == pytest.approx([i["source"] for i in out["items"]], abs=1e-5)
    for name in ("patching_resid.png", "patching_components.png"):
        assert (run / "plots" / name).stat().st_size > 1000


@pytest.mark.slow
def test_identity_on_the_real_model(tmp_path: Path, real_model: LoadedModel) -> None:
    from probe.analysis import answers as ans

    run = ans.load_run(make_run(tmp_path, real_model, per_cell=1, model="smollm2-135m"))
    pairs, _ = pt.build_pairs(run, real_model, "instruct-1", "baseline", limit=2)
    n = real_model.n_layers
    patches = [pt.Patch(f"blocks.{n - 1}.hook_resid_post", (-1,)),
               pt.Patch("blocks.0.hook_resid_pre", (-1,))]
    arrays = pt.patch_pairs(Engine(real_model, 2), pairs, patches, k=3)
    np.testing.assert_allclose(arrays["denoise"][0], arrays["source"], atol=1e-4)
    np.testing.assert_allclose(arrays["noise"][0], arrays["target"], atol=1e-4)
    # the last tokens are the same in both prompts: patching them at layer 0 changes nothing
    np.testing.assert_allclose(arrays["denoise"][1], arrays["target"], atol=1e-4)


def test_patching_with_sdpa_attention_equals_eager(sharp: LoadedModel) -> None:
    """Runs made with --attention sdpa are analysed with it: same patched metrics."""
    patches = [pt.Patch(f"blocks.{layer}.{hook}", (-1,)) for layer in range(sharp.n_layers)
               for hook in ("hook_resid_pre", "hook_attn_out", "hook_mlp_out")]
    pairs = _pairs(sharp)
    eager = pt.patch_pairs(Engine(sharp, 3), pairs, patches, k=1)
    fast = pt.patch_pairs(Engine(sharp, 3, attention="sdpa"), pairs, patches, k=1)
    for key in ("source", "target", "denoise", "noise"):
        np.testing.assert_allclose(fast[key], eager[key], atol=1e-4, rtol=1e-5)
