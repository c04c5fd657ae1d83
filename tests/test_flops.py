"""FLOP counting, peak share and the full-study projection of ``probe bench``."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from probe.bench.flops import forward_flops, linear_weights, project_study
from probe.errors import ConfigError
from probe.testing import tiny_hf

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("length", [1, 7, 40])
def test_forward_flops_equal_torch_flop_counter(length):
    """An independent count: torch's FlopCounterMode over the real forward (eager attention,
    which computes the full T x T scores, as the formula counts)."""
    model, _ = tiny_hf()
    model.set_attn_implementation("eager")
    ids = torch.randint(0, 100, (1, length))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(input_ids=ids, logits_to_keep=1)
    # The rotary embedding's tiny position x frequency product is not model work.
    rotary = sum(counter.get_flop_counts()["LlamaForCausalLM.model.rotary_emb"].values())
    assert counter.get_total_flops() - rotary == forward_flops(model, [length])


def test_output_head_counted_once_even_when_tied(tiny):
    body, head = linear_weights(tiny.hf_model)
    cfg = tiny.hf_model.config
    assert head == cfg.vocab_size * cfg.hidden_size
    assert body == sum(p.numel() for n, p in tiny.hf_model.named_parameters()
                       if "_proj." in n and n.endswith(".weight"))


def test_projection_arithmetic_and_refusals(tiny, data_dir):
    proj = project_study(tiny, str(data_dir), ["baseline", "instruct-3"], tokens_per_s=1000.0,
                         sample=20)
    means = proj["mean_prompt_tokens"]
    # The instruction adds text to every prompt.
    assert means["instruct-3"] > means["baseline"] > 0
    assert proj["tokens"] == pytest.approx(proj["n_items"] * sum(means.values()))
    assert proj["hours"] == pytest.approx(proj["tokens"] / 1000.0 / 3600)
    assert proj["hours_official_bbq"] == pytest.approx(proj["hours"] * 58_492 / proj["n_items"])
    with pytest.raises(ConfigError, match="--project-condition cot"):
        project_study(tiny, str(data_dir), ["cot"], tokens_per_s=1.0, sample=2)
