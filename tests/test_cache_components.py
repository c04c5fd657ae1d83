"""``--cache-components``: attention and MLP outputs cached under TransformerLens's names.

They must equal what a plain Hugging Face forward gives for the same modules (forward hooks
on each layer's ``self_attn`` and ``mlp``), and add up with the residual stream:
resid_post_L = resid_pre_L + attn_out_L + mlp_out_L in a Llama-style block.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from probe.config import RunConfig
from probe.engine.hooks import Capture, cache_hook_names
from probe.engine.inference import Engine
from probe.engine.study import run_study
from probe.errors import ConfigError, UnknownNameError
from probe.store.opened_run import Run
from probe.store.run_schema import config_diff

ALL = ["resid", "attn_out", "mlp_out"]
pytestmark = pytest.mark.usefixtures("one_thread")


def hf_module_outputs(hf_model: Any, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each layer's ``self_attn`` and ``mlp`` outputs in a plain HF forward, by TL name."""
    got: dict[str, torch.Tensor] = {}
    handles = []
    for layer, block in enumerate(hf_model.model.layers):
        def keep(name: str):
            def hook(module: Any, args: Any, out: Any) -> None:
                got[name] = (out[0] if isinstance(out, tuple) else out).detach()
            return hook
        handles.append(block.self_attn.register_forward_hook(keep(f"blocks.{layer}.hook_attn_out")))
        handles.append(block.mlp.register_forward_hook(keep(f"blocks.{layer}.hook_mlp_out")))
    try:
        with torch.inference_mode():
            hidden = hf_model(input_ids=ids, output_hidden_states=True).hidden_states
    finally:
        for h in handles:
            h.remove()
    got["hook_embed"] = hidden[0]
    for layer in range(len(hf_model.model.layers) - 1):  # the last is after the final norm
        got[f"blocks.{layer}.hook_resid_post"] = hidden[layer + 1]
    return got


def _cfg(data_dir: Path, **kw: Any) -> RunConfig:
    base: dict[str, Any] = dict(
        model="tiny-random", benchmarks=["bbq"], categories=["Age"], limit=3,
        conditions=["baseline", "review"], data_dir=str(data_dir), cache_acts=True,
        act_positions=2, act_dtype="float32", batch_size=3, reasoning_tokens=6,
        cache_components=ALL, attention="eager")
    return RunConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny, data_dir) -> Run:
    out = tmp_path_factory.mktemp("components") / "run"
    run_study(_cfg(data_dir), out, loaded=tiny)
    return Run(out)


def test_components_equal_plain_hf_module_outputs(run, tiny):
    from probe.testing import tiny_hf

    plain = tiny_hf()[0].eval()  # the same weights, never bridged
    cache = run.cache
    n = tiny.n_layers
    for layer in range(n):
        assert f"blocks.{layer}.hook_attn_out" in cache and ("mlp_out", layer) in cache
    for i, row in enumerate(run.rows):
        ids = torch.tensor([tiny.tokenizer(row["prompt"], add_special_tokens=False).input_ids])
        ref = hf_module_outputs(plain, ids)
        for name, value in ref.items():
            torch.testing.assert_close(cache[name][i], value[0, -2:], atol=1e-4, rtol=1e-4)


def test_resid_post_is_resid_pre_plus_attn_plus_mlp(run, tiny):
    cache = run.cache
    before = cache["hook_embed"]  # resid_pre of block 0 (no learned position embedding)
    for layer in range(tiny.n_layers):
        after = cache["resid_post", layer]
        summed = before + cache["attn_out", layer] + cache["mlp_out", layer]
        torch.testing.assert_close(after, summed, atol=1e-5, rtol=1e-5)
        before = after


def test_components_are_recorded_and_resume_must_match(run, tiny, data_dir):
    assert json.loads((run.path / "run.json").read_text())["config"]["cache_components"] == ALL
    with pytest.raises(ConfigError, match="cache_components"):
        run_study(_cfg(data_dir, cache_components=["resid"]), run.path, loaded=tiny)
    run_study(_cfg(data_dir), run.path, loaded=tiny)  # the same setting resumes


def test_runs_from_before_the_option_read_as_resid_only(tmp_path, tiny, data_dir):
    out = tmp_path / "old"
    run_study(_cfg(data_dir, cache_components=["resid"], conditions=["baseline"]), out,
              loaded=tiny)
    info = json.loads((out / "run.json").read_text())
    del info["config"]["cache_components"]  # as written before --cache-components existed
    (out / "run.json").write_text(json.dumps(info))
    run_study(_cfg(data_dir, cache_components=["resid"], conditions=["baseline"]), out,
              loaded=tiny)
    assert Run(out).config.cache_components == ["resid"]
    assert not config_diff(info["config"], {**info["config"], "cache_components": ["resid"]})
    assert config_diff(info["config"], {**info["config"], "cache_components": ALL})


def test_option_values_are_checked():
    cfg = RunConfig(cache_acts=True, cache_components=["mlp_out", "resid", "attn_out"])
    assert cfg.validate().cache_components == ALL  # canonical order
    for bad, message in [(["resid", "embed"], "embed"), (["attn_out"], "resid"),
                         (["resid", "resid"], "twice")]:
        with pytest.raises((ConfigError, UnknownNameError), match=message):
            RunConfig(cache_acts=True, cache_components=bad).validate()
    with pytest.raises(ConfigError, match="--cache-acts"):
        RunConfig(cache_components=ALL).validate()


def test_cli_option_parses_and_rejects(data_dir, tmp_path):
    from probe.cli import cli

    result = CliRunner().invoke(cli, ["run", "--model", "tiny-random", "--benchmark", "bbq",
                                       "--cache-acts", "--cache-components", "resid,bogus",
                                       "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "bogus" in result.output


@pytest.mark.slow
def test_real_model_components_equal_plain_hf(real_model):
    from transformers import AutoModelForCausalLM

    from probe.conditions.prompts import render
    from probe.engine.models import embedded_dir

    plain = AutoModelForCausalLM.from_pretrained(embedded_dir(), dtype=torch.float32).eval()
    texts = [render(real_model.tokenizer, True, [], q) for q in
             ["Who was not comfortable using the phone? (a) The grandfather (b) The grandson",
              "hi"]]
    hooks = cache_hook_names(real_model.n_layers, ALL)
    cap = Capture(hooks, 1)
    Engine(real_model, 2).forward_last(texts, capture=cap)  # batched: left padding
    got = cap.take()
    for b, text in enumerate(texts):
        ids = torch.tensor([real_model.tokenizer(text, add_special_tokens=False).input_ids])
        for name, value in hf_module_outputs(plain, ids).items():
            torch.testing.assert_close(got[name][b, -1], value[0, -1], atol=1e-3, rtol=1e-3)
    for layer in range(1, real_model.n_layers):
        summed = (got[f"blocks.{layer - 1}.hook_resid_post"] + got[f"blocks.{layer}.hook_attn_out"]
                  + got[f"blocks.{layer}.hook_mlp_out"])
        torch.testing.assert_close(got[f"blocks.{layer}.hook_resid_post"], summed, atol=1e-4,
                                   rtol=1e-4)


def test_sdpa_attention_caches_the_same_components_and_rounds(run, tiny, data_dir, tmp_path):
    """``hook_attn_out`` fires on the fused kernel's path too (it hooks the attention
    module's output, not its internals): sdpa equals eager, every round."""
    out = tmp_path / "sdpa"
    run_study(_cfg(data_dir, attention="sdpa"), out, loaded=tiny)
    fast = Run(out)
    assert [r["output"] for r in fast.rows] == [r["output"] for r in run.rows]
    for hook in ("blocks.0.hook_attn_out", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post"):
        torch.testing.assert_close(fast.cache[hook], run.cache[hook], atol=1e-5, rtol=1e-5)
        for r in (0, 1):
            torch.testing.assert_close(fast.cache.at_round(hook, r), run.cache.at_round(hook, r),
                                       atol=1e-5, rtol=1e-5, equal_nan=True)
