"""Activation patching: exact identities on a tiny random model, and the command end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from probe.analysis import patch_plan as pp
from probe.analysis import patch_study as ps
from probe.analysis import patching as pt
from probe.analysis import readout as ro
from probe.config import RunConfig
from probe.engine.inference import Engine
from probe.engine.models import LoadedModel
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
    from probe.engine.study import run_study

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


def query(prompt: str, options: tuple[str, ...], biased: int = 0, unbiased: int = 1,
          cond: str = "c") -> ro.Query:
    return ro.Query("x", cond, prompt, options, biased, unbiased, None)


def _pairs(loaded: LoadedModel, options: tuple[str, ...]) -> list[pt.PromptPair]:
    """Aligned pairs: prompts that differ by one single-token word (same token count)."""
    base = "I saw a grandson and their{w} last week. Who was not comfortable? The answer is ("
    edits = [(" grandfather", " customer"), (" phone", " cash"), (" technician", " age"),
             (" week", " pronoun")]
    tok = loaded.tokenizer
    out = []
    for i, (a, b) in enumerate(edits):
        src, tgt = base.format(w=a), base.format(w=b)
        assert len(tok(src).input_ids) == len(tok(tgt).input_ids)
        u, v = i % len(options), (i + 1) % len(options)
        out.append(pt.PromptPair(f"x{i}", query(src, options, v, u, "s"),
                                 query(tgt, options, v, u, "t")))
    return out


LETTERS = ("a", "b", "c")
TEXTS = ("The grandfather", "The grandson", "Can't be determined")


@pytest.mark.parametrize(("mode", "options"), [("letter", LETTERS), ("text", TEXTS),
                                               ("generate", TEXTS)])
def test_identities_on_aligned_pairs(sharp: LoadedModel, mode: str,
                                     options: tuple[str, ...]) -> None:
    engine = Engine(sharp, batch_size=3)
    pairs = _pairs(sharp, options)
    plan = pp.plan(engine, pairs, None)
    assert plan.alignment == "aligned" and plan.scope == "every position"
    assert bool(plan.answer) == (mode != "letter")
    every = plan.all_positions
    heads = [pt.Patch("blocks.1.attn.hook_z", every, h) for h in range(pp.n_heads(engine))]
    extra = [pt.Patch("blocks.1.hook_attn_out", every), pt.Patch("blocks.1.hook_resid_pre",
                                                                  (-3,)), *heads]
    patches = list(plan.identities.values()) + extra
    arrays = pt.patch_pairs(engine, mode, pairs, patches)
    src, tgt = arrays["source"], arrays["target"]
    assert np.abs(src - tgt).mean() > 0.05  # the identities below are not trivial
    den, noi = arrays["denoise"], arrays["noise"]
    names = list(plan.identities)
    assert names == ["nothing", "final_layer_at_readout", "everything_at_embedding"]
    np.testing.assert_allclose(den[0], tgt, atol=1e-5)
    np.testing.assert_allclose(noi[0], src, atol=1e-5)
    for i in (1, 2):  # the unembedding's input at the readout; every input token
        np.testing.assert_allclose(den[i], src, atol=1e-5)
        np.testing.assert_allclose(noi[i], tgt, atol=1e-5)
    # A middle layer at one early position restores only part of it.
    assert not np.allclose(den[4], src, atol=1e-3)
    # Every head of a layer at once is that layer's attention output (o_proj is linear
    # with no bias), so head patching hooks the right tensor.
    all_heads = pt.patch_pairs(engine, mode, pairs, [
        pt.Patch("blocks.1.attn.hook_z", every, None)])["denoise"][0]
    np.testing.assert_allclose(all_heads, den[3], atol=1e-5)
    assert not np.allclose(den[5], den[3], atol=1e-4)  # one head is not all of them
    gap = ps.gap_summary(src, tgt, threshold=0.01)
    full = ps.effect(den[1], tgt, src, True)
    assert full["normalised"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert ps.effect(noi[1], src, tgt, True)["normalised"]["mean"] == pytest.approx(1.0,
                                                                                    abs=1e-5)
    assert gap["n"] == len(pairs)


def test_patched_readout_equals_plain_hf_hooks(sharp: LoadedModel) -> None:
    """Denoising resid_pre L at one position, against torch pre-hooks on the HF layer."""
    engine = Engine(sharp, batch_size=4)
    pairs = _pairs(sharp, LETTERS)
    layer, offset = 1, -5
    arrays = pt.patch_pairs(engine, "letter", pairs,
                            [pt.Patch(f"blocks.{layer}.hook_resid_pre", (offset,))])
    tok, block = sharp.tokenizer, sharp.hf_model.model.layers[layer]
    for i, pair in enumerate(pairs):
        ids = {k: torch.tensor([tok(getattr(pair, k).prompt).input_ids])
               for k in ("source", "target")}
        saved: dict[str, torch.Tensor] = {}

        def grab(module: object, args: tuple, kwargs: dict,
                 saved: dict[str, torch.Tensor] = saved) -> None:
            saved["x"] = (args[0] if args else kwargs["hidden_states"]).clone()

        def put(module: object, args: tuple, kwargs: dict,
                saved: dict[str, torch.Tensor] = saved) -> tuple:
            x = (args[0] if args else kwargs["hidden_states"]).clone()
            x[:, offset] = saved["x"][:, offset]
            return ((x, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": x})

        with torch.no_grad():
            handle = block.register_forward_pre_hook(grab, with_kwargs=True)
            sharp.hf_model(input_ids=ids["source"])
            handle.remove()
            handle = block.register_forward_pre_hook(put, with_kwargs=True)
            logits = sharp.hf_model(input_ids=ids["target"]).logits[0, -1].float()
            handle.remove()
        lp = torch.log_softmax(logits, -1)
        u, b = (tok(LETTERS[k]).input_ids[0] for k in (pair.target.unbiased,
                                                       pair.target.biased))
        assert arrays["denoise"][0][i] == pytest.approx(float(lp[u] - lp[b]), abs=1e-4)


def test_tiny_gap_leaves_ratio_out() -> None:
    src = np.array([0.50, 0.51, 0.49])
    gap = ps.gap_summary(src, src - 0.01)
    assert not gap["reliable"] and "left out" in gap["note"]
    assert ps.effect(src, src - 0.01, src, gap["reliable"])["normalised"] is None


def test_gap_on_too_few_items_carries_no_ratio() -> None:
    """A large, consistent gap still needs MIN_ITEMS items: below that the bootstrap interval
    is degenerate (one item gives [x, x]), whatever its width says."""
    for n in (1, 4):
        src = np.linspace(1.0, 1.2, n)
        gap = ps.gap_summary(src, src - 2.0)
        assert not gap["reliable"] and f"n={n}" in gap["note"]
    src = np.linspace(1.0, 1.2, 5)
    assert ps.gap_summary(src, src - 2.0)["reliable"]


def test_unaligned_pairs_patch_the_shared_suffix_only(sharp: LoadedModel) -> None:
    from probe.errors import ConfigError

    engine = Engine(sharp)
    long = query("I saw a grandson last week. The answer is (", LETTERS)
    short = query("I saw a grandson. The answer is (", LETTERS)
    pairs = [pt.PromptPair("u", long, short)]
    plan = pp.plan(engine, pairs, None)
    assert (plan.alignment, plan.scope, plan.offsets) == ("unaligned",
                                                         "shared suffix (last 1)", (-1,))
    assert "everything_at_embedding" not in plan.identities
    with pytest.raises(ConfigError, match="last 9 tokens"):
        pp.plan(engine, pairs, 9)
    bad = [pt.PromptPair("z", query("abc The answer is (", LETTERS),
                         query("abc The answer is [", LETTERS))]
    with pytest.raises(ConfigError, match="last 1 tokens"):
        pt.check_suffix(engine, bad, 1)


@pytest.mark.slow
def test_identity_on_the_real_model(tmp_path: Path, real_model: LoadedModel) -> None:
    from probe.analysis import answers as ans

    run = ans.load_run(make_run(tmp_path, real_model, per_cell=1, model="smollm2-135m",
                                mode="text"))
    engine = Engine(real_model, 2)
    pairs, _ = pp.build_pairs(run, engine, "instruct-1", "baseline", limit=2)
    plan = pp.plan(engine, pairs, 3)
    arrays = pt.patch_pairs(engine, "text", pairs, list(plan.identities.values()))
    for name, check in ps.identity_checks(arrays, plan, 0).items():
        assert check["denoise_max_abs_dev"] < 1e-3, name
        assert check["noise_max_abs_dev"] < 1e-3, name
    np.testing.assert_allclose(arrays["source"], [ro.stored_value(p.source) for p in pairs],
                               atol=1e-4)


def test_patching_with_sdpa_attention_equals_eager(sharp: LoadedModel) -> None:
    """Runs made with --attention sdpa are analysed with it: same patched metrics."""
    pairs = _pairs(sharp, TEXTS)
    patches = [pt.Patch(f"blocks.{layer}.{hook}", (-1, -4)) for layer in range(sharp.n_layers)
               for hook in ("hook_resid_pre", "hook_attn_out", "hook_mlp_out")]
    patches.append(pt.Patch("blocks.1.attn.hook_z", (-1, -4), 2))
    eager = pt.patch_pairs(Engine(sharp, 3, attention="eager"), "text", pairs, patches)
    fast = pt.patch_pairs(Engine(sharp, 3, attention="sdpa"), "text", pairs, patches)
    for key in ("source", "target", "denoise", "noise"):
        np.testing.assert_allclose(fast[key], eager[key], atol=1e-4, rtol=1e-5)
