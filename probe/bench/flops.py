"""How much of the hardware a prompt pass uses, and what a full study would take.

* :func:`matmul_tflops`: the device's measured dense matrix-multiply rate (the ceiling).
* :func:`forward_flops`: the useful FLOPs of a prompt pass, counted from the model's own
  linear layers (so any architecture works) plus attention scores and values.
* :func:`project_study`: the time the full BBQ under several conditions would take at a
  measured prompt-token rate, from the token counts of a sample of real prompts.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from probe.engine.models import LoadedModel, resolve_dtype
from probe.errors import ConfigError

BBQ_OFFICIAL_ITEMS = 58_492  # all 11 categories of the published BBQ (Parrish et al. 2022)


def matmul_tflops(device: str, dtype: str, n: int | None = None, repeats: int = 10) -> float:
    """Median rate of an ``n x n @ n x n`` matmul in TFLOP/s (``2 n^3`` FLOPs each).

    ``n`` defaults to 8192 on a GPU (large enough to saturate an H100) and 1024 on a CPU.
    """
    n = n or (8192 if device.startswith("cuda") else 1024)
    gen = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(n, n, device=device, dtype=resolve_dtype(dtype), generator=gen)
            for _ in range(2))
    times = []
    for i in range(repeats + 1):  # the first is a warm-up
        _sync(device)
        start = time.perf_counter()
        torch.matmul(a, b)
        _sync(device)
        if i:
            times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e12


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def linear_weights(model: Any) -> tuple[int, int]:
    """(weights of every linear layer but the output head, weights of the output head)."""
    head = model.get_output_embeddings()
    head_id = id(head.weight) if head is not None else None
    seen: dict[int, int] = {}
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and id(module.weight) != head_id:
            seen[id(module.weight)] = module.weight.numel()
    return sum(seen.values()), head.weight.numel() if head is not None else 0


def forward_flops(model: Any, lengths: list[int], logits_per_sequence: int = 1) -> float:
    """Useful FLOPs of one forward over unpadded sequences of these lengths.

    Per token: 2 x the linear weights (a multiply-add each). Per sequence and layer:
    ``QK^T`` and ``AV`` over all ``T x T`` query-key pairs, 2 x 2 x T^2 x (heads x head dim)
    (the square eager attention computes; causal kernels skip about half). Plus the output
    head on ``logits_per_sequence`` positions. Padding is not useful work and not counted.
    """
    body, head = linear_weights(model)
    cfg = model.config
    width = cfg.num_attention_heads * (getattr(cfg, "head_dim", None)
                                       or cfg.hidden_size // cfg.num_attention_heads)
    total = 0
    for t in lengths:
        total += 2 * body * t + 4 * cfg.num_hidden_layers * width * t * t
        total += 2 * head * min(t, logits_per_sequence)
    return float(total)


def project_study(loaded: LoadedModel, data_dir: str, conditions: list[str],
                  tokens_per_s: float, sample: int = 200, seed: int = 0) -> dict[str, Any]:
    """Hours the whole local BBQ (letter mode) under ``conditions`` would take at this rate.

    Prompt lengths come from ``sample`` items drawn at random (seeded) and rendered exactly
    as a run renders them; the total is items x the sum of per-condition mean lengths.
    """
    from probe.analysis.answers import final_prompt
    from probe.conditions.registry import get_condition
    from probe.data.bbq import load_bbq
    from probe.scoring.modes import mode_prefix

    items, _ = load_bbq(Path(data_dir))
    chosen = random.Random(seed).sample(items, min(sample, len(items)))
    mean_tokens = {}
    for name in conditions:
        cond = get_condition(name)
        lengths = []
        for item in chosen:
            plan = cond.build(item)
            if len(plan.turns) != 1:
                raise ConfigError(f"--project-condition {name}: only single-turn conditions "
                                  f"can be projected (this one generates {len(plan.turns) - 1} "
                                  f"earlier turn(s) first)")
            text = final_prompt(loaded, item, name, [], mode_prefix(item, "letter"))
            lengths.append(len(loaded.tokenizer(text, add_special_tokens=False).input_ids))
        mean_tokens[name] = statistics.mean(lengths)
    tokens = len(items) * sum(mean_tokens.values())
    hours = tokens / tokens_per_s / 3600
    return {"n_items": len(items), "categories": sorted({i.category for i in items}),
            "conditions": conditions, "mean_prompt_tokens": mean_tokens, "tokens": tokens,
            "tokens_per_s": tokens_per_s, "hours": hours,
            "hours_official_bbq": hours * BBQ_OFFICIAL_ITEMS / len(items)}
