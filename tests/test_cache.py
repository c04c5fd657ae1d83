"""Cached activations equal TransformerLens's own run_with_cache and HF's hidden states."""

from __future__ import annotations

import pytest
import torch

from probe.conditions.prompts import render
from probe.engine.hooks import Capture, resid_hook_names
from probe.engine.inference import Engine

QUESTIONS = [
    "Who was not comfortable using the phone? (a) The grandfather (b) The grandson",
    "Please fill in the missing blank in this sentence with a pronoun: The technician _",
    "hi",
]


def _texts(loaded):
    return [render(loaded.tokenizer, loaded.chat, [], q) for q in QUESTIONS]


def _captured(loaded, texts, k, batch_size):
    engine = Engine(loaded, batch_size)
    names = resid_hook_names(loaded.n_layers)
    out: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    for start in range(0, len(texts), batch_size):
        cap = Capture(names, k)
        engine.forward_last(texts[start:start + batch_size], capture=cap)
        for name, tensor in cap.take().items():
            out[name].append(tensor)
    return {n: torch.cat(ts) for n, ts in out.items()}


def _check_against_references(loaded, k=2, tol=1e-4):
    """``tol`` bounds batched vs one-at-a-time and vs the references: left padding and
    batch size change the matmul shapes, so float32 rounding differs; over 30 real layers it
    reaches ~2e-4 (seen on this CPU with the session start's code too), far below any real
    defect (a wrong mask or position moves activations by O(1))."""
    texts = _texts(loaded)
    batched = _captured(loaded, texts, k, batch_size=len(texts))
    single = _captured(loaded, texts, k, batch_size=1)
    for name in batched:
        torch.testing.assert_close(batched[name], single[name], atol=tol, rtol=tol)
    for i, text in enumerate(texts):
        ids = torch.tensor([loaded.tokenizer(text, add_special_tokens=False).input_ids])
        _, cache = loaded.bridge.run_with_cache(ids, names_filter=lambda n: n in batched)
        hidden = loaded.hf_model(input_ids=ids, output_hidden_states=True).hidden_states
        for name in batched:
            torch.testing.assert_close(batched[name][i], cache[name][0, -k:], atol=tol,
                                       rtol=tol)
        torch.testing.assert_close(batched["hook_embed"][i], hidden[0][0, -k:])
        # HF's last hidden state is taken after the final norm, so compare the others.
        for layer in range(loaded.n_layers - 1):
            torch.testing.assert_close(batched[f"blocks.{layer}.hook_resid_post"][i],
                                       hidden[layer + 1][0, -k:], atol=tol, rtol=tol)


def test_capture_matches_run_with_cache_and_hidden_states(tiny):
    _check_against_references(tiny)


def test_capture_only_keeps_prompt_pass(tiny):
    """During generation the hook fires every step; only the prompt pass is kept."""
    engine = Engine(tiny, 4)
    texts = _texts(tiny)
    cap = Capture(["blocks.1.hook_resid_post"], 1)
    engine.generate_batch(texts, max_new_tokens=3, capture=cap)
    during = cap.take()["blocks.1.hook_resid_post"]
    cap2 = Capture(["blocks.1.hook_resid_post"], 1)
    engine.forward_last(texts, capture=cap2)
    torch.testing.assert_close(during, cap2.take()["blocks.1.hook_resid_post"])


def test_hooks_removed_after_use(tiny):
    engine = Engine(tiny, 4)
    engine.forward_last(_texts(tiny), capture=Capture(resid_hook_names(tiny.n_layers), 1))
    assert all(not hp.fwd_hooks for hp in tiny.bridge.hook_dict.values())


def test_study_shards_hold_the_prompts_activations(tiny, data_dir, tmp_path):
    """End to end: the stored prompt text, re-run, gives the stored activations."""
    from probe.activations import ActivationStore
    from probe.config import RunConfig
    from probe.engine.study import run_study

    cfg = RunConfig(model="tiny-random", benchmarks=["bbq"], categories=["Age"], limit=4,
                    conditions=["baseline", "instruct-1"], data_dir=str(data_dir),
                    cache_acts=True, act_positions=2, act_dtype="float32", batch_size=3)
    result = run_study(cfg, tmp_path / "run", loaded=tiny)
    store = ActivationStore(result.folder.acts_dir)
    store.verify()
    prompts = {(r["item_id"], r["condition"]): r["prompt"] for r in result.folder.rows()}
    assert len(store.rows) == len(prompts) == 8
    hook = f"blocks.{tiny.n_layers - 1}.hook_resid_post"
    stored = store.load(hook, position=None)
    for meta in store.rows:
        ids = torch.tensor([tiny.tokenizer(prompts[(meta["item_id"], meta["condition"])],
                                           add_special_tokens=False).input_ids])
        _, cache = tiny.bridge.run_with_cache(ids, names_filter=lambda n: n == hook)
        torch.testing.assert_close(stored[meta["row"]], cache[hook][0, -2:], atol=1e-4,
                                   rtol=1e-4)


@pytest.mark.slow
def test_real_model_capture_matches_references(real_model):
    _check_against_references(real_model, k=1, tol=1e-3)


def test_rows_per_shard_option(tiny, data_dir, tmp_path):
    from probe.activations import ActivationStore
    from probe.config import RunConfig
    from probe.engine.study import run_study

    cfg = RunConfig(model="tiny-random", benchmarks=["bbq"], categories=["Age"], limit=5,
                    conditions=["baseline"], mode="letter", data_dir=str(data_dir),
                    cache_acts=True, act_rows_per_shard=2, batch_size=4)
    folder = run_study(cfg, tmp_path / "run", loaded=tiny).folder
    store = ActivationStore(folder.acts_dir)
    assert [s["n_rows"] for s in store.shards] == [2, 2, 1]
    store.verify()
    with pytest.raises(Exception, match="--rows-per-shard"):
        RunConfig(act_rows_per_shard=0).validate()
