"""The plain twin: passes that no hook observes skip the bridge's wrappers, with the same
results, and any hook attached anywhere keeps a pass in the bridge."""

from __future__ import annotations

import pytest
import torch

from probe.engine import inference
from probe.engine.hooks import Capture, resid_hook_names
from probe.engine.inference import Engine
from probe.engine.plain import bridge_observed, twin

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    """A model of this module's own: these tests attach hooks and count the bridge's, so a
    hook another test left on the session's shared model must not decide them."""
    from probe.testing import tiny_model

    return tiny_model()

TEXTS = ["The nurse said that", "Who was forgetful? The answer is",
         "A grandson and his grandfather were", "Options: (a) yes (b) no (c) maybe. Answer:",
         "The doctor", "Please ensure that your answer is unbiased."]
OPTIONS = [[" yes", " no", " maybe so"]] * len(TEXTS)


def _engines(loaded, attention="auto"):
    return Engine(loaded, 4, attention), Engine(loaded, 4, attention, plain=False)


def _tensors_equal(a, b):
    return all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


def test_twin_shares_the_bridged_weights(tiny):
    plain = twin(tiny, "eager")
    bridged = {k.replace("._original_component", ""): v
               for k, v in tiny.hf_model.state_dict().items()}
    names = [name for name, _ in plain.named_parameters()]
    assert len(names) > 10
    for name, param in plain.named_parameters():
        assert param.data_ptr() == bridged[name].data_ptr(), name
    assert twin(tiny, "eager") is plain  # one twin per model and kernel


def test_hook_free_passes_run_through_the_twin(tiny, monkeypatch):
    """The speed-up is real: hook-free calls reach the twin, hooked calls never do."""
    used: list[str] = []
    real_twin = inference.twin

    def spy(loaded, attn):
        used.append(attn)
        return real_twin(loaded, attn)

    monkeypatch.setattr(inference, "twin", spy)
    fast, slow = _engines(tiny)
    # A bridged pass first: the bridge then keeps bookkeeping hooks of its own; and a call
    # with output_hidden_states, after which Hugging Face keeps idle recording hooks.
    slow.generate_batch(TEXTS[:2], 2)
    with torch.no_grad():
        tiny.hf_model(input_ids=slow.encode(TEXTS[:1]).input_ids, output_hidden_states=True)
    assert not bridge_observed(tiny)
    fast.option_logprobs_batch(TEXTS[:2], OPTIONS[:2])
    fast.generate_batch(TEXTS[:2], 3)
    assert len(used) == 2
    used.clear()
    fast.option_logprobs_batch(TEXTS[:2], OPTIONS[:2],
                               hooks=[("blocks.0.hook_resid_post", lambda t, hook: None)])
    assert used == []


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_plain_equals_bridge_on_every_path(tiny, attention):
    fast, slow = _engines(tiny, attention)
    assert fast.attention == attention
    assert fast.generate_batch(TEXTS, 6) == slow.generate_batch(TEXTS, 6)
    assert fast.option_logprobs_batch(TEXTS, OPTIONS) == slow.option_logprobs_batch(TEXTS,
                                                                                   OPTIONS)
    assert torch.equal(fast.forward_last(TEXTS)[0], slow.forward_last(TEXTS)[0])
    # Generation with a capture: the prompt pass in the bridge, decoding in the twin.
    hooks = resid_hook_names(tiny.n_layers)
    caps = Capture(hooks, 2), Capture(hooks, 2)
    assert (fast.generate_batch(TEXTS, 6, capture=caps[0])
            == slow.generate_batch(TEXTS, 6, capture=caps[1]))
    assert _tensors_equal(caps[0].take(), caps[1].take())


def test_a_hook_attached_elsewhere_keeps_the_bridge(tiny):
    """A permanent TransformerLens hook (as the planted model adds) and a PyTorch pre-hook
    on a block both change the output; the engine must see them."""
    fast, slow = _engines(tiny)
    clean = fast.option_logprobs_batch(TEXTS, OPTIONS)
    point = tiny.bridge.blocks[0].hook_out

    def push(tensor, hook):
        return tensor + 3.0

    point.add_hook(push, is_permanent=True)
    try:
        assert bridge_observed(tiny)
        edited = fast.option_logprobs_batch(TEXTS, OPTIONS)
        assert edited == slow.option_logprobs_batch(TEXTS, OPTIONS) and edited != clean
    finally:
        point.remove_hooks("fwd", including_permanent=True)
    handle = tiny.hf_model.model.layers[1].register_forward_pre_hook(
        lambda mod, args: (args[0] * 2.0, *args[1:]))
    try:
        edited = fast.generate_batch(TEXTS, 4)
        assert edited == slow.generate_batch(TEXTS, 4)
        assert fast.option_logprobs_batch(TEXTS, OPTIONS) != clean
    finally:
        handle.remove()
    assert not bridge_observed(tiny)


def test_rows_ended_by_their_first_token_are_padded(tiny, monkeypatch):
    """With a capture, the first token comes from the bridged prompt pass; a row that ends
    there must read as one generate call would write it (EOS, then padding)."""
    slow = Engine(tiny, 8, plain=False)
    firsts = [slow.tokenizer(t).input_ids for t in slow.generate_batch(TEXTS, 1)]
    first_ids = {ids[0] for ids in firsts if ids}
    if len(first_ids) < 2:
        pytest.skip("the tiny model starts every text with the same token")
    eos = sorted(first_ids)[0]
    monkeypatch.setattr(Engine, "eos_ids", lambda self: [eos])
    fast = Engine(tiny, 8)
    hooks = resid_hook_names(tiny.n_layers)
    caps = Capture(hooks, 1), Capture(hooks, 1)
    out_fast = fast.generate_batch(TEXTS, 5, capture=caps[0])
    out_slow = slow.generate_batch(TEXTS, 5, capture=caps[1])
    assert out_fast == out_slow
    assert _tensors_equal(caps[0].take(), caps[1].take())


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_plain_equals_bridge_on_the_real_model(real_model, data_dir, attention):
    from probe.bench.models import bench_prompts

    prompts = bench_prompts(real_model, str(data_dir), 16)
    fast, slow = Engine(real_model, 8, attention), Engine(real_model, 8, attention, plain=False)
    texts = prompts.generate[:8]
    hooks = resid_hook_names(real_model.n_layers)
    caps = Capture(hooks, 2), Capture(hooks, 2)
    assert (fast.generate_batch(texts, 12, capture=caps[0])
            == slow.generate_batch(texts, 12, capture=caps[1])
            == fast.generate_batch(texts, 12))
    got, want = caps[0].take(), caps[1].take()
    assert max((got[k] - want[k]).abs().max().item() for k in got) < 1e-5
    a = fast.option_logprobs_batch(prompts.text[:8], prompts.text_options[:8])
    b = slow.option_logprobs_batch(prompts.text[:8], prompts.text_options[:8])
    diffs = [abs(x - y) for r, s in zip(a, b, strict=True) for x, y in zip(r, s, strict=True)]
    assert max(diffs) < 1e-5
