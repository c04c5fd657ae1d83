"""``--attention sdpa``: the fused kernel gives the eager bridge's results and restores it."""

from __future__ import annotations

import pytest
import torch

from probe.conditions.prompts import render
from probe.config import RunConfig
from probe.engine.attention import needs_bridge_attention
from probe.engine.hooks import Capture, resid_hook_names
from probe.engine.inference import Engine
from probe.errors import ConfigError, UnknownNameError

pytestmark = pytest.mark.usefixtures("one_thread")

QUESTIONS = ["Who was not comfortable using the phone? (a) The grandfather (b) The grandson",
             "Fill in the blank: The technician told the customer that _", "hi"]
OPTIONS = [["The grandfather", "The grandson", "Unknown"], [" he", " she", " they"],
           ["a", "b c d", "e"]]


@pytest.fixture
def sdpa_calls(monkeypatch):
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
    return calls


def _texts(loaded):
    return [render(loaded.tokenizer, loaded.chat, [], q) for q in QUESTIONS]


def test_sdpa_equals_eager_on_every_call(tiny, sdpa_calls):
    eager, fast = Engine(tiny, 3, attention="eager"), Engine(tiny, 3, attention="sdpa")
    texts, names = _texts(tiny), resid_hook_names(tiny.n_layers)
    cap_e, cap_f = Capture(names, 2), Capture(names, 2)
    lp_e, lp_f = eager.forward_last(texts, cap_e)[0], None
    assert not sdpa_calls  # the bridge's own attention never calls the fused kernel
    lp_f = fast.forward_last(texts, cap_f)[0]
    assert sdpa_calls, "the sdpa path was not taken"
    torch.testing.assert_close(lp_f, lp_e, atol=1e-5, rtol=1e-5)
    got, want = cap_f.take(), cap_e.take()
    for name in names:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-5)
    for a, b in zip(fast.option_logprobs_batch(texts, OPTIONS),
                    eager.option_logprobs_batch(texts, OPTIONS), strict=True):
        assert a == pytest.approx(b, abs=1e-5)
    assert fast.generate_batch(texts, 6) == eager.generate_batch(texts, 6)


def test_bridge_attention_is_restored_after_each_call(tiny):
    block = tiny.hf_model.model.layers[0].self_attn
    Engine(tiny, 3, attention="sdpa").forward_last(_texts(tiny))
    assert "forward" not in vars(block)
    assert tiny.hf_model.config._attn_implementation == "eager"


def test_pattern_hooks_fall_back_to_the_bridge_attention(tiny, sdpa_calls):
    seen = []
    hook = ("blocks.0.attn.hook_pattern", lambda t, hook: seen.append(t.shape))
    Engine(tiny, 3, attention="sdpa").forward_last(_texts(tiny), hooks=[hook])
    assert seen and not sdpa_calls
    assert needs_bridge_attention(["blocks.3.attn.hook_attn_scores"])
    assert not needs_bridge_attention(["blocks.3.hook_resid_post", "blocks.3.hook_attn_out"])


def test_auto_is_sdpa_where_it_serves_and_eager_elsewhere(tiny, monkeypatch):
    assert Engine(tiny).attention == "sdpa" == Engine(tiny, attention="auto").attention
    assert Engine(tiny, attention="eager").attention == "eager"
    monkeypatch.setattr(tiny.hf_model.config, "attn_logit_softcapping", 50.0, raising=False)
    assert Engine(tiny).attention == "eager"  # sdpa would be refused: auto does not raise


def test_unsupported_settings_are_refused(tiny, monkeypatch):
    with pytest.raises(UnknownNameError, match="attention"):
        Engine(tiny, attention="flash")
    with pytest.raises(UnknownNameError, match="--attention"):
        RunConfig(attention="flash").validate()
    monkeypatch.setattr(tiny.hf_model.config, "attn_logit_softcapping", 50.0, raising=False)
    with pytest.raises(ConfigError, match="soft-capping"):
        Engine(tiny, attention="sdpa")


def test_running_blocks_nest(tiny, sdpa_calls):
    """Analyses wrap engine calls in engine.running(...): the sdpa swap nests, and a pattern
    hook inside an sdpa block is refused rather than silently never firing."""
    engine = Engine(tiny, 3, attention="sdpa")
    resid = ("blocks.0.hook_resid_post", lambda t, hook: None)
    with engine.running([resid]):
        engine.forward_last(_texts(tiny))
        assert "forward" in vars(tiny.hf_model.model.layers[0].self_attn)
        pattern = ("blocks.0.attn.hook_pattern", lambda t, hook: None)
        with pytest.raises(ConfigError, match="bridge's own attention"):
            engine.forward_last(_texts(tiny), hooks=[pattern])
    assert sdpa_calls and "forward" not in vars(tiny.hf_model.model.layers[0].self_attn)


def test_run_json_stores_the_kernel_auto_chose(tiny, data_dir, tmp_path):
    """A run records the resolved kernel, so re-running its config runs the same one; "auto"
    again resumes it; a run.json from before the option existed reads as eager."""
    import json

    from probe.engine.study import run_study
    from probe.store.opened_run import Run

    cfg = RunConfig(model="tiny-random", benchmarks=["bbq"], categories=["Age"], limit=2,
                    conditions=["baseline"], data_dir=str(data_dir), batch_size=2)
    out = tmp_path / "run"
    first = run_study(cfg, out, loaded=tiny)
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["attention"] == "sdpa" and cfg.attention == "auto"
    assert Run(out).config.attention == "sdpa"
    rows = (out / "generations.jsonl").read_text()
    again = run_study(RunConfig(**{**cfg.__dict__}), out, loaded=tiny)  # resumes: all done
    assert again.n_rows == first.n_rows and (out / "generations.jsonl").read_text() == rows
    del info["config"]["attention"]
    (out / "run.json").write_text(json.dumps(info))
    assert Run(out).config.attention == "eager"


def test_auto_resumes_a_run_with_the_kernel_it_ran(tiny, data_dir, tmp_path):
    """A run made eager (explicitly, with the old default, or before the option existed)
    resumes under the same command with "auto", on eager; asking for sdpa is refused."""
    import json

    from probe.engine.study import run_study
    from probe.store.opened_run import Run

    cfg = RunConfig(model="tiny-random", benchmarks=["bbq"], categories=["Age"], limit=2,
                    conditions=["baseline"], data_dir=str(data_dir), batch_size=2,
                    attention="eager")
    out = tmp_path / "run"
    run_study(cfg, out, loaded=tiny)
    rows = (out / "generations.jsonl").read_text()
    info = json.loads((out / "run.json").read_text())
    del info["config"]["attention"]  # as a run.json from before --attention
    (out / "run.json").write_text(json.dumps(info))
    assert Run(out).config.attention == "eager"
    auto = RunConfig(**{**cfg.__dict__, "attention": "auto", "limit": 3})
    with pytest.raises(ConfigError, match="limit"):  # a real change is still refused
        run_study(auto, out, loaded=tiny)
    run_study(RunConfig(**{**cfg.__dict__, "attention": "auto"}), out, loaded=tiny)
    assert (out / "generations.jsonl").read_text() == rows
    assert json.loads((out / "run.json").read_text())["resumes"]
    with pytest.raises(ConfigError, match="attention"):
        run_study(RunConfig(**{**cfg.__dict__, "attention": "sdpa"}), out, loaded=tiny)
