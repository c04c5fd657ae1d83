"""probe's generation and likelihoods against plain Hugging Face on the real default model.

This is the guard on the pinned transformers version: with transformers 5.24 the bridge's
KV-cache generation emits garbage, and these tests fail.
"""

from __future__ import annotations

import pytest
import torch

from probe.conditions.prompts import render
from probe.conditions.registry import get_condition
from probe.engine.inference import Engine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bbq_prompts(real_model, data_dir):
    from probe.data.bbq import load_bbq

    items, _ = load_bbq(data_dir, categories=["Age", "Religion"], limit=4, seed=1)
    cond = get_condition("instruct-1")
    return [render(real_model.tokenizer, True, [], cond.build(it).final.user) for it in items]


@pytest.fixture(scope="module")
def plain_hf(real_model):
    """The same weights loaded by plain transformers, not bridged, eager attention."""
    from transformers import AutoModelForCausalLM

    folder = real_model.hf_model.name_or_path
    return AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()


def test_no_double_bos(real_model, bbq_prompts):
    ids = real_model.tokenizer(bbq_prompts[0], add_special_tokens=False).input_ids
    assert ids[0] == real_model.tokenizer.bos_token_id
    assert ids[1] != real_model.tokenizer.bos_token_id


def test_greedy_generation_equals_plain_hf(real_model, plain_hf, bbq_prompts):
    tok = real_model.tokenizer
    engine = Engine(real_model, batch_size=len(bbq_prompts))
    ours = engine.generate_batch(bbq_prompts, max_new_tokens=16)
    enc = tok(bbq_prompts, add_special_tokens=False, padding=True, return_tensors="pt")
    assert (enc.attention_mask == 0).any(), "prompts should need left padding"
    with torch.inference_mode():
        ref = plain_hf.generate(**enc, max_new_tokens=16, do_sample=False,
                                pad_token_id=tok.pad_token_id, eos_token_id=engine.eos_ids())
    theirs = tok.batch_decode(ref[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
    assert ours == theirs
    assert all(len(text.strip()) > 0 for text in ours)


def test_batched_equals_one_at_a_time(real_model, bbq_prompts):
    engine = Engine(real_model, batch_size=len(bbq_prompts))
    batched = engine.generate_batch(bbq_prompts, max_new_tokens=12)
    single = [engine.generate_batch([p], max_new_tokens=12)[0] for p in bbq_prompts]
    assert batched == single


def test_known_answer(real_model):
    """A sanity anchor: the dequantised model answers a trivial question correctly."""
    engine = Engine(real_model)
    text = render(real_model.tokenizer, True, [], "What is the capital of France?")
    assert "Paris" in engine.generate_batch([text], max_new_tokens=12)[0]


def test_packed_likelihood_equals_full_forward(real_model, bbq_prompts):
    engine = Engine(real_model, batch_size=4)
    options = [["The grandfather", "The grandson", "Can't be determined"]] * 4
    fast = engine.option_logprobs_batch(bbq_prompts[:4], options)
    for text, opts, got in zip(bbq_prompts[:4], options, fast, strict=True):
        ref = engine.option_logprobs_reference(text, opts)
        assert got == pytest.approx(ref, abs=2e-4)


def test_sdpa_attention_equals_eager_on_the_real_model(real_model, bbq_prompts):
    eager = Engine(real_model, batch_size=len(bbq_prompts), attention="eager")
    fast = Engine(real_model, batch_size=len(bbq_prompts), attention="sdpa")
    assert fast.generate_batch(bbq_prompts, 16) == eager.generate_batch(bbq_prompts, 16)
    torch.testing.assert_close(fast.forward_last(bbq_prompts)[0],
                               eager.forward_last(bbq_prompts)[0], atol=2e-4, rtol=1e-4)
