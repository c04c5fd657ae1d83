"""Activations of generated tokens, captured during KV-cache generation (``--cache-steps``)."""

from __future__ import annotations

import json

import pytest
import torch

from probe.activations import ActivationStore
from probe.conditions.prompts import render
from probe.config import RunConfig
from probe.engine.hooks import STEPS_KEY, Capture
from probe.engine.inference import Engine
from probe.engine.study import run_study
from probe.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

QUESTIONS = ["Who was not comfortable using the phone? (a) The grandfather (b) The grandson",
             "Fill in the blank: The technician told the customer that _", "hi"]
HOOK = "blocks.0.hook_resid_post"
K, STEPS, NEW = 2, 3, 5


def _texts(loaded):
    return [render(loaded.tokenizer, loaded.chat, [], q) for q in QUESTIONS]


def _generate(engine, texts, eos=None):
    if eos is not None:
        engine.eos_ids = lambda: eos  # type: ignore[method-assign]
    cap = Capture([HOOK], K, STEPS)
    engine.generate_batch(texts, NEW, capture=cap)
    return cap.take()


def _new_ids(engine, text):
    batch = engine.encode([text])
    with torch.inference_mode():
        out = engine.model.generate(input_ids=batch.input_ids, max_new_tokens=NEW,
                                    do_sample=False, pad_token_id=engine.tokenizer.pad_token_id)
    return batch.input_ids[0].tolist(), out[0, batch.input_ids.shape[1]:].tolist()


def test_step_activations_equal_one_full_forward(tiny):
    """Token j's vector from decoding step j + 1 equals a plain forward over prompt + tokens."""
    engine = Engine(tiny, batch_size=3)
    got = _generate(engine, _texts(tiny), eos=[])  # no EOS: every step is real
    assert got[STEPS_KEY].tolist() == [STEPS] * 3
    for row, text in enumerate(_texts(tiny)):
        prompt, new = _new_ids(engine, text)
        full = torch.tensor([prompt + new[:STEPS]])
        with torch.inference_mode():
            hidden = tiny.hf_model(input_ids=full, output_hidden_states=True).hidden_states[1]
        want = hidden[0, len(prompt) - K:len(prompt) + STEPS]
        torch.testing.assert_close(got[HOOK][row], want, atol=1e-5, rtol=1e-5)


def test_steps_batched_equal_unbatched_even_when_a_row_stops(tiny):
    """Make one row's first token its EOS: it stops at once alone, runs on in a batch."""
    engine = Engine(tiny, batch_size=3)
    texts = _texts(tiny)
    first = _new_ids(engine, texts[0])[1][0]
    batched = _generate(engine, texts, eos=[first])
    single = [_generate(engine, [t], eos=[first]) for t in texts]
    assert batched[STEPS_KEY][0] == 0  # the row's answer is empty: no real steps
    for row, one in enumerate(single):
        assert batched[STEPS_KEY][row] == one[STEPS_KEY][0]
        torch.testing.assert_close(batched[HOOK][row], one[HOOK][0], atol=1e-5, rtol=1e-5)
    assert torch.all(batched[HOOK][0, K:] == 0)


def test_run_stores_labelled_step_positions(tiny, data_dir, tmp_path):
    cfg = RunConfig(model="tiny-random", benchmarks=["bbq"], categories=["Age"], limit=2,
                    conditions=["baseline"], mode="generate", max_new_tokens=4,
                    data_dir=str(data_dir), cache_acts=True, act_positions=2, act_steps=3,
                    batch_size=4)
    result = run_study(cfg, tmp_path / "run", loaded=tiny)
    store = ActivationStore(result.folder.acts_dir)
    assert store.positions == [-2, -1, 0, 1, 2]
    index = json.loads((result.folder.acts_dir / "index.json").read_text())
    assert all(0 <= r["n_steps"] <= 3 for r in index["rows"])
    last_prompt, first_gen = store.load(HOOK, position=-1), store.load(HOOK, position=0)
    assert last_prompt.shape == first_gen.shape == (len(store), tiny.d_model)
    with pytest.raises(ConfigError, match="-2..-1 \\(prompt\\), 0..2 \\(generated"):
        store.load(HOOK, position=3)


@pytest.mark.parametrize("change,match", [
    (dict(mode="letter"), "--mode generate"), (dict(cache_acts=False), "--cache-acts"),
    (dict(act_steps=4), "below --max-new-tokens"), (dict(act_steps=-1), ">= 0")])
def test_cache_steps_option_errors(change, match):
    base = dict(mode="generate", cache_acts=True, act_steps=2, max_new_tokens=4)
    with pytest.raises(ConfigError, match=match):
        RunConfig(**{**base, **change}).validate()


def test_probes_at_a_generated_token(tiny, data_dir, tmp_path):
    from click.testing import CliRunner

    from probe.cli import cli as main

    cfg = RunConfig(model="tiny-random", benchmarks=["bbq"], categories=["Age", "Religion"],
                    limit=4, conditions=["baseline", "instruct-1"], mode="generate",
                    max_new_tokens=3, data_dir=str(data_dir), cache_acts=True, act_steps=2,
                    batch_size=8)
    folder = run_study(cfg, tmp_path / "run", loaded=tiny).folder
    args = ["probes", str(folder.path), "--target", "condition:instruct-1", "--kind",
            "diffmeans", "--layer", "0"]
    result = CliRunner().invoke(main, [*args, "--position", "1"])
    assert result.exit_code == 0, result.output
    probes = json.loads((folder.path / "probes.json").read_text())
    n_real = sum(r["n_steps"] > 1 for r in ActivationStore(folder.acts_dir).rows)
    assert probes["meta"]["position"] == 1 and n_real > 0
    assert probes["targets"]["condition:instruct-1"]["n"] == n_real
    bad = CliRunner().invoke(main, [*args, "--position", "2"])
    assert bad.exit_code == 2 and "position 2 is not stored" in bad.output


def test_key_index_leaves_out_answers_shorter_than_the_position():
    from probe.analysis.targets import key_index

    rows = [{"item_id": "a", "condition": "c", "n_steps": 1},
            {"item_id": "b", "condition": "c", "n_steps": 3}]
    assert key_index(rows, 1) == {("b", "c"): 1}
    assert key_index(rows, -1) == {("a", "c"): 0, ("b", "c"): 1}
