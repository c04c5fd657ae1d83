"""What each architecture family gets beyond the basics: ``--attention sdpa`` where it serves
(equal to the bridge's eager attention), and a clear refusal, naming the reason, where the
bridge or a mode cannot give plain Hugging Face's numbers."""

from __future__ import annotations

import copy

import pytest
import torch

from probe.conditions.prompts import render
from probe.engine.attention import needs_bridge_attention
from probe.engine.hooks import Capture, resid_hook_names
from probe.engine.inference import Engine
from probe.engine.models import bridge_from_hf, load_model
from probe.engine.tiny_families import FAMILIES, REFUSED, tiny_family_hf
from probe.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

QUESTIONS = ["I saw a grandson and their grandfather last week. Who was not comfortable?",
             "Fill in the blank: The technician told the customer that", "Who was it?"]
OPTIONS = [["The grandfather", "The grandson", "Unknown"]] * 3
# Families --attention sdpa refuses, and the reason its message must give.
SDPA_REFUSED = {"gpt2": "model.layers", "gpt_neox": "model.layers", "opt": "model.layers",
                "falcon": "model.layers", "gemma2": "soft-capping"}


def _bridged(family: str, **overrides: object):
    model, tokenizer = tiny_family_hf(family, **overrides)
    return bridge_from_hf(f"tiny-{family}", model, tokenizer)


def _texts(loaded) -> list[str]:
    return [render(loaded.tokenizer, loaded.chat, [], q) for q in QUESTIONS]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_sdpa_equals_eager_or_says_why_not(family: str) -> None:
    loaded = _bridged(family)
    if family in SDPA_REFUSED:
        with pytest.raises(ConfigError, match=SDPA_REFUSED[family]):
            Engine(loaded, attention="sdpa")
        assert Engine(loaded).attention == "eager"  # the default falls back, no error
        return
    assert Engine(loaded).attention == "sdpa"
    eager, fast = Engine(loaded, 3, attention="eager"), Engine(loaded, 3, attention="sdpa")
    texts, names = _texts(loaded), resid_hook_names(loaded.n_layers)
    cap_e, cap_f = Capture(names, 2), Capture(names, 2)
    for got, want in zip(fast.option_logprobs_batch(texts, OPTIONS, capture=cap_f),
                         eager.option_logprobs_batch(texts, OPTIONS, capture=cap_e), strict=True):
        assert got == pytest.approx(want, abs=1e-5)
    acts_f, acts_e = cap_f.take(), cap_e.take()
    for name in names:
        torch.testing.assert_close(acts_f[name], acts_e[name], atol=1e-5, rtol=1e-5)
    assert fast.generate_batch(texts, 6) == eager.generate_batch(texts, 6)


def test_fused_qkv_hooks_need_the_bridge_attention() -> None:
    """Phi-3's bridge splits its fused QKV itself: under sdpa its q/k/v hooks would never
    fire, so asking for them runs the bridge's attention (and they fire)."""
    phi3, llama = _bridged("phi3"), _bridged("llama")
    names = ["blocks.0.attn.hook_q", "blocks.1.attn.v.hook_out"]
    assert needs_bridge_attention(names, phi3.hf_model)
    assert not needs_bridge_attention(names, llama.hf_model)
    assert not needs_bridge_attention(["blocks.0.hook_resid_post"], phi3.hf_model)
    seen: list[str] = []
    hooks = [(n, lambda t, hook, n=n: seen.append(n)) for n in names]
    Engine(phi3, 3, attention="sdpa").forward_last(_texts(phi3), hooks=hooks)
    assert sorted(set(seen)) == sorted(names)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_models_the_bridge_gets_wrong_are_refused(name: str) -> None:
    family, overrides, reason = REFUSED[name]
    model, tokenizer = tiny_family_hf(family, **overrides)
    with pytest.raises(ConfigError, match=reason):
        bridge_from_hf(name, model, tokenizer)


def test_refused_before_the_weights_load(tmp_path, monkeypatch) -> None:
    family, overrides, reason = REFUSED["falcon-new-decoder"]
    model, tokenizer = tiny_family_hf(family, **overrides)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    def no_weights(*args: object, **kwargs: object) -> None:
        raise AssertionError("weights loaded before the refusal")

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", no_weights)
    with pytest.raises(ConfigError, match=reason):
        load_model(str(tmp_path))


def test_alibi_falcon_generates_but_refuses_packed_scoring() -> None:
    """Falcon-RW style ALiBi: HF builds the bias from a 2-D mask, so the packed 4-D mask of
    text/letter mode cannot reach it; generation (2-D mask) still equals plain HF."""
    model, tokenizer = tiny_family_hf("falcon", alibi=True, multi_query=False,
                                      parallel_attn=False, bias=True)  # Falcon-RW's layout
    plain = copy.deepcopy(model)
    loaded = bridge_from_hf("tiny-falcon-alibi", model, tokenizer)
    engine, texts = Engine(loaded, 3), _texts(loaded)
    with pytest.raises(ConfigError, match="ALiBi.*--mode generate"):
        engine.option_logprobs_batch(texts, OPTIONS)
    enc = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = plain.generate(**enc, max_new_tokens=6, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=engine.eos_ids())
    assert engine.generate_batch(texts, 6) == tokenizer.batch_decode(
        out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
