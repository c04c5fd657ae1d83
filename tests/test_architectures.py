"""Every supported architecture family gives plain Hugging Face's numbers.

Each family of :data:`probe.engine.tiny_families.FAMILIES` is built twice from one random init: a
plain HF model (the reference, eager attention) and the same weights bridged. Generation,
option scores in text and letter mode, cached residual streams and the patching identity
must agree. Mistral, Phi-3, Qwen2/3 and Gemma-2 carry a sliding window shorter than the
prompts, so the packed scoring's window (probe.engine.packing) is exercised, not only defined.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from probe.analysis import patching as pt
from probe.conditions.prompts import render
from probe.conditions.registry import LETTERS
from probe.engine.hooks import Capture, resid_hook_names
from probe.engine.inference import Engine
from probe.engine.models import LoadedModel, bridge_from_hf
from probe.engine.tiny_families import FAMILIES, WINDOW, tiny_family_hf
from probe.scoring.modes import LETTER_PREFIX

pytestmark = pytest.mark.usefixtures("one_thread")

QUESTIONS = [
    "I saw a grandson and their grandfather last week. Who was not comfortable using the phone?",
    "Fill in the blank with a pronoun: The technician told the customer that",
    "Who was it?",
]
TEXT_OPTIONS = ["The grandfather", "The grandson", "Can't be determined"]
SLIDING = sorted(f for f, cfg in FAMILIES.items() if cfg.get("sliding_window"))


@dataclass
class Pair:
    family: str
    plain: Any  # the HF model, never bridged
    loaded: LoadedModel  # a copy of the same weights, bridged


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    model, tokenizer = tiny_family_hf(request.param)
    plain = copy.deepcopy(model)
    yield Pair(request.param, plain, bridge_from_hf(f"tiny-{request.param}", model, tokenizer))


def _prompts(loaded: LoadedModel, prefix: str = "") -> list[str]:
    texts = [render(loaded.tokenizer, loaded.chat, [], q, prefix) for q in QUESTIONS]
    assert min(len(_ids(loaded, t)) for t in texts) > WINDOW  # sliding layers drop context
    return texts


def _ids(loaded: LoadedModel, text: str) -> list[int]:
    return list(loaded.tokenizer(text, add_special_tokens=False).input_ids)


def _hf_option_score(p: Pair, prompt: str, option: str) -> float:
    """Mean log-prob of the option's tokens in one unpadded HF forward of prompt+option."""
    prompt_ids, ids = _ids(p.loaded, prompt), _ids(p.loaded, prompt + option)
    # The tokens scored are the same however the option is tokenized (alone or joined).
    assert ids[:len(prompt_ids)] == prompt_ids and len(ids) > len(prompt_ids)
    with torch.no_grad():
        logits = p.plain(input_ids=torch.tensor([ids])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    cols = torch.arange(len(prompt_ids) - 1, len(ids) - 1)
    return logprobs[cols, torch.tensor(ids[len(prompt_ids):])].mean().item()


def _hf_layer_outputs(p: Pair, text: str) -> list[torch.Tensor]:
    """Each decoder layer's output (1, seq, d) in an unpadded HF forward of ``text``."""
    n = p.loaded.n_layers
    layers = next(m for _, m in p.plain.named_modules()
                  if isinstance(m, torch.nn.ModuleList) and len(m) == n)
    outs: list[torch.Tensor] = []
    handles = [layer.register_forward_hook(
        lambda mod, args, out: outs.append(out[0] if isinstance(out, tuple) else out))
        for layer in layers]
    try:
        with torch.no_grad():
            p.plain(input_ids=torch.tensor([_ids(p.loaded, text)]))
    finally:
        for handle in handles:
            handle.remove()
    return outs


def test_greedy_generation_equals_hf(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    tok, texts = pair.loaded.tokenizer, _prompts(pair.loaded)
    # Every pass in the bridge (as when hooks are attached); the default engine, which runs
    # hook-free passes through the un-bridged twin, is checked against the same output below.
    engine = Engine(pair.loaded, batch_size=len(texts), plain=False)
    bridged_generate, token_ids = pair.loaded.hf_model.generate, []

    def keeping_ids(*args: Any, **kwargs: Any) -> torch.Tensor:
        token_ids.append(bridged_generate(*args, **kwargs))
        return token_ids[-1]

    monkeypatch.setattr(pair.loaded.hf_model, "generate", keeping_ids)
    ours = engine.generate_batch(texts, max_new_tokens=8)
    tok.padding_side = "left"
    enc = tok(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    assert (enc.attention_mask == 0).any(), "prompts should need left padding"
    with torch.no_grad():
        out = pair.plain.generate(**enc, max_new_tokens=8, do_sample=False,
                                  pad_token_id=tok.pad_token_id, eos_token_id=engine.eos_ids())
    assert torch.equal(token_ids[0], out)  # token for token, padding included
    theirs = tok.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
    assert ours == theirs and any(ours)
    assert Engine(pair.loaded, batch_size=len(texts)).generate_batch(texts, 8) == theirs


@pytest.mark.parametrize("mode", ["text", "letter"])
def test_option_scores_equal_hf_full_forwards(pair: Pair, mode: str) -> None:
    prefix, options = (LETTER_PREFIX, list(LETTERS[:3])) if mode == "letter" else ("",
                                                                                 TEXT_OPTIONS)
    texts = _prompts(pair.loaded, prefix)
    # The bridge (hooked passes) and the un-bridged twin (hook-free passes) both.
    for plain in (False, True):
        got = Engine(pair.loaded, batch_size=len(texts), plain=plain).option_logprobs_batch(
            texts, [options] * len(texts))
        for text, row in zip(texts, got, strict=True):
            want = [_hf_option_score(pair, text, o) for o in options]
            assert row == pytest.approx(want, abs=1e-4), (pair.family, plain)


def test_cached_resid_post_equals_hf_layer_outputs(pair: Pair) -> None:
    """resid_post read on a prompt pass and while scoring (packed) is HF's layer output."""
    texts, k, n = _prompts(pair.loaded), 2, pair.loaded.n_layers
    names = resid_hook_names(n, embed=False)
    engine = Engine(pair.loaded, batch_size=len(texts))
    alone, packed = Capture(names, k), Capture(names, k)
    engine.forward_last(texts, capture=alone)
    engine.option_logprobs_batch(texts, [TEXT_OPTIONS] * len(texts), capture=packed)
    for cached in (alone.take(), packed.take()):
        for b, text in enumerate(texts):
            want = _hf_layer_outputs(pair, text)
            for layer in range(n):
                torch.testing.assert_close(cached[names[layer]][b], want[layer][0, -k:],
                                           atol=1e-5, rtol=1e-5)


def test_patching_last_resid_post_reproduces_the_source(pair: Pair) -> None:
    from probe.analysis import readout as ro

    loaded = pair.loaded
    engine = Engine(loaded, batch_size=2)
    source = [render(loaded.tokenizer, loaded.chat, [], q, LETTER_PREFIX) for q in QUESTIONS[:2]]
    target = [render(loaded.tokenizer, loaded.chat, [], q, LETTER_PREFIX) for q in QUESTIONS[1:]]
    letters = ("a", "b", "c")
    pairs = [pt.PromptPair(f"x{i}", ro.Query(f"x{i}", "s", s, letters, 0, 1, None),
                           ro.Query(f"x{i}", "t", t, letters, 0, 1, None))
             for i, (s, t) in enumerate(zip(source, target, strict=True))]
    last = pt.Patch(f"blocks.{loaded.n_layers - 1}.hook_resid_post", (-1,))
    arrays = pt.patch_pairs(engine, "letter", pairs, [last])
    assert np.abs(arrays["source"] - arrays["target"]).min() > 1e-4  # not trivially equal
    np.testing.assert_allclose(arrays["denoise"][0], arrays["source"], atol=1e-5)
    np.testing.assert_allclose(arrays["noise"][0], arrays["target"], atol=1e-5)
    # The whole next-token distribution, in a full forward: the source's.
    capture = Capture([last.hook], 1)
    lp_src, _, _ = engine.forward_last(source, capture=capture)
    acts = capture.take()[last.hook]

    def put(tensor: torch.Tensor, hook: object) -> torch.Tensor:
        out = tensor.clone()
        out[:, -1] = acts[:, -1].to(out.dtype)
        return out

    patched, _, _ = engine.forward_last(target, hooks=[(last.hook, put)])
    torch.testing.assert_close(patched, lp_src, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", SLIDING)
def test_the_window_changes_the_scores(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: ignoring the window (one plain block mask, as before) moves the scores away
    from HF's, so the equality above depends on the window being applied."""
    model, tokenizer = tiny_family_hf(family)
    p = Pair(family, copy.deepcopy(model), bridge_from_hf(f"tiny-{family}", model, tokenizer))
    monkeypatch.setattr("probe.engine.inference.model_attention_mask",
                        lambda packed, config, dtype: packed.additive_mask(dtype))
    text = _prompts(p.loaded)[0]
    got = Engine(p.loaded).option_logprobs_batch([text], [TEXT_OPTIONS])[0]
    want = [_hf_option_score(p, text, o) for o in TEXT_OPTIONS]
    assert max(abs(g - w) for g, w in zip(got, want, strict=True)) > 1e-3
