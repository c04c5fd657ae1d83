"""Packed option scoring (one forward per batch) equals one full forward per prompt+option."""

from __future__ import annotations

import pytest
import torch

from probe.conditions.prompts import render
from probe.engine.hooks import Capture, resid_hook_names
from probe.engine.inference import Engine
from probe.engine.packing import PAD, PROMPT, pack_options

pytestmark = pytest.mark.usefixtures("one_thread")

QUESTIONS = [
    "Who was not comfortable using the phone? (a) The grandfather (b) The grandson",
    "Fill in the blank with a pronoun: The technician told the customer that _",
    "hi",
]
# Options of one, several and unequal token counts, so tails and right padding vary.
OPTIONS = [
    ["The grandfather", "The grandson", "Can't be determined from the text given"],
    [" he", " she", " they"],
    ["a", "b c d e f", "unknown"],
]


def _texts(loaded):
    return [render(loaded.tokenizer, loaded.chat, [], q) for q in QUESTIONS]


def test_packed_scores_equal_full_forwards(tiny):
    engine = Engine(tiny, batch_size=3)
    packed = engine.option_logprobs_batch(_texts(tiny), OPTIONS)
    for text, opts, got in zip(_texts(tiny), OPTIONS, packed, strict=True):
        assert got == pytest.approx(engine.option_logprobs_reference(text, opts), abs=1e-5)


def test_batched_equals_one_at_a_time(tiny):
    engine = Engine(tiny, batch_size=3)
    batched = engine.option_logprobs_batch(_texts(tiny), OPTIONS)
    single = [engine.option_logprobs_batch([t], [o])[0]
              for t, o in zip(_texts(tiny), OPTIONS, strict=True)]
    for got, want in zip(batched, single, strict=True):
        assert got == pytest.approx(want, abs=1e-5)


def test_an_option_does_not_see_the_others(tiny):
    """Replacing the options packed before the last one leaves its score unchanged."""
    engine = Engine(tiny, batch_size=1)
    text = _texts(tiny)[:1]
    a = engine.option_logprobs_batch(text, [["x", "y", "The grandfather"]])[0][2]
    b = engine.option_logprobs_batch(text, [["a much longer option here", "z z z z",
                                             "The grandfather"]])[0][2]
    assert a == pytest.approx(b, abs=1e-6)


def test_capture_reads_the_prompt_not_the_options(tiny):
    """Activations cached while scoring equal those of a prompt-only pass."""
    engine = Engine(tiny, batch_size=3)
    names = resid_hook_names(tiny.n_layers)
    during, alone = Capture(names, 2), Capture(names, 2)
    engine.option_logprobs_batch(_texts(tiny), OPTIONS, capture=during)
    engine.forward_last(_texts(tiny), capture=alone)
    got, want = during.take(), alone.take()
    for name in names:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-5)


def test_pack_layout():
    prompt = torch.tensor([[0, 0, 5, 6], [7, 8, 9, 10]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    conts = [[[11, 12, 13], [14]], [[15, 16], [17, 18]]]
    p = pack_options(prompt, mask, conts, pad_id=0)
    # Row 0: 2 prompt + 2 tail tokens, row 1: 4 + 2; left-padded to 6.
    assert p.input_ids.tolist() == [[0, 0, 5, 6, 11, 12], [7, 8, 9, 10, 15, 17]]
    assert p.prompt_end == [4, 4] and p.first_read == 3
    # Tails continue the prompt's own positions (2 real tokens in row 0, 4 in row 1).
    assert p.position_ids[0, 2:].tolist() == [0, 1, 2, 3]
    assert p.position_ids[1, 4:].tolist() == [4, 4]
    assert p.tail_cols == [[[4, 5], []], [[4], [5]]]
    allowed = p.allowed[:, 0]
    assert allowed[1, 5].tolist() == [True] * 4 + [False, True]  # option 1 skips option 0
    assert allowed[0, 5].tolist() == [False, False, True, True, True, True]
    assert allowed[0, 0].tolist() == [True] + [False] * 5  # padding sees only itself
    assert PAD != PROMPT


def test_rows_end_their_prompts_at_their_own_column():
    """A short prompt with long options uses the room a long prompt leaves in its row."""
    prompt = torch.tensor([[0, 0, 0, 5], [6, 7, 8, 9]])
    mask = torch.tensor([[0, 0, 0, 1], [1, 1, 1, 1]])
    conts = [[[11, 12, 13, 14], [15]], [[16], [17]]]
    p = pack_options(prompt, mask, conts, pad_id=0)
    assert p.input_ids.shape == (2, 4)  # not 4 prompt columns + 3 tail columns
    assert p.input_ids.tolist() == [[5, 11, 12, 13], [6, 7, 8, 9]]
    assert p.prompt_end == [1, 4] and p.first_read == 0
    assert p.tail_cols == [[[1, 2, 3], []], [[], []]]
    assert p.position_ids.tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]


def test_window_counts_positions_not_columns():
    """A sliding window is measured in each option's own positions: option 1's tail token
    sits two columns after the prompt's end but one position after it."""
    prompt = torch.tensor([[5, 6, 7, 8]])
    p = pack_options(prompt, torch.ones_like(prompt), [[[11, 12], [13, 14]]], pad_id=0)
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 4, 4]]
    visible = p.additive_mask(torch.float32, window=2)[0, 0] == 0
    assert visible[5].tolist() == [False] * 3 + [True, False, True]  # positions 3 and 4
    assert visible[4].tolist() == [False] * 3 + [True, True, False]
    assert torch.equal(p.additive_mask(torch.float32, window=99), p.additive_mask(torch.float32))


def test_mask_per_layer_type():
    from types import SimpleNamespace

    from probe.engine.packing import model_attention_mask
    from probe.errors import ConfigError

    prompt = torch.tensor([[5, 6, 7, 8]])
    p = pack_options(prompt, torch.ones_like(prompt), [[[11, 12], [13, 14]]], pad_id=0)
    full, windowed = p.additive_mask(torch.float32), p.additive_mask(torch.float32, 2)
    mixed = SimpleNamespace(sliding_window=2, layer_types=["full_attention", "sliding_attention"])
    masks = model_attention_mask(p, mixed, torch.float32)
    assert torch.equal(masks["full_attention"], full)
    assert torch.equal(masks["sliding_attention"], windowed)
    every = SimpleNamespace(sliding_window=2)  # Mistral, Phi-3: no layer_types
    assert torch.equal(model_attention_mask(p, every, torch.float32), windowed)
    assert torch.equal(model_attention_mask(p, SimpleNamespace(), torch.float32), full)
    chunked = SimpleNamespace(sliding_window=2, layer_types=["chunked_attention"])
    with pytest.raises(ConfigError, match="chunked_attention"):
        model_attention_mask(p, chunked, torch.float32)
