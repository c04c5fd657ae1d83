"""Steering where the direction was measured, on held-out templates, against a random band.

- **Position.** The direction is a difference of last-prompt-position activations, so it is
  added there only: at each row's last prompt token on the prompt pass (left-padded
  prompts end at the last column; packed option passes end at ``prompt_end - 1``), never
  on the option tokens nor on generated tokens (one-token cached passes).
- **Held out.** Templates are split into two halves; each half is steered with the direction
  fitted on the other half's items, so no steered item's template shaped its direction.
- **Control band.** ``n_random`` (>= 20) random directions with the norm of the real one, at
  the same layer, alpha and position; their median and 5-95% range. The steered result is
  "not distinguishable from the control" when it lies inside that range.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from probe.engine.inference import Engine
from probe.scoring.stats import zero_width

N_RANDOM = 20
# 0 (the run itself), a fraction and 1 (the instruction's own mean shift). Each other alpha
# costs 1 + N_RANDOM re-scorings of the baseline per layer (docs/methods.md, Steering).
DEFAULT_ALPHAS = [0.0, 0.5, 1.0]


class LastPromptAdd:
    """Forward hook adding ``vec`` at each row's last prompt position on prompt passes."""

    def __init__(self, vec: torch.Tensor):
        self.vec = vec
        self.ends: list[int] | None = None  # set by :func:`track_prompt_ends` per packed pass

    def __call__(self, tensor: torch.Tensor, hook: Any) -> torch.Tensor:
        ends, self.ends = self.ends, None
        if tensor.shape[1] == 1 and ends is None:  # a cached generation step: not measured
            return tensor
        cols = torch.tensor([e - 1 for e in ends] if ends else [tensor.shape[1] - 1]
                            * tensor.shape[0], device=tensor.device)
        out = tensor.clone()
        rows = torch.arange(tensor.shape[0], device=tensor.device)
        out[rows, cols] += self.vec.to(device=tensor.device, dtype=tensor.dtype)
        return out


@contextmanager
def track_prompt_ends(engine: Engine, hook: LastPromptAdd) -> Iterator[None]:
    """While open, every packed (prompt + options) pass tells ``hook`` where prompts end."""
    original = engine.pack_batch

    def pack(texts: Any, options: Any) -> Any:
        packed = original(texts, options)
        hook.ends = list(packed.prompt_end)
        return packed

    setattr(engine, "pack_batch", pack)  # noqa: B010  # an instance override, restored below
    try:
        yield
    finally:
        delattr(engine, "pack_batch")


def template_halves(groups: list[str], seed: int) -> list[int]:
    """Fold (0 or 1) of each entry: templates shuffled with ``seed``, dealt alternately."""
    uniq = sorted(set(groups))
    order = np.random.default_rng([seed, 6121]).permutation(len(uniq))
    fold = {uniq[j]: i % 2 for i, j in enumerate(order)}
    return [fold[g] for g in groups]


def random_like(vec: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded random direction with the norm of ``vec``."""
    gen = torch.Generator().manual_seed(seed)
    rnd = torch.randn(vec.shape, generator=gen, dtype=torch.float64)
    return (rnd * (vec.double().norm() / rnd.norm())).float()


def band(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and 5-95% range over random draws of each summary's means."""
    out: dict[str, Any] = {"n_random": len(summaries)}
    for key in ("readout", "ambig", "disambig"):
        vals = np.array([s[key]["mean"] for s in summaries
                         if isinstance(s[key].get("mean"), (int, float))], dtype=float)
        out[key] = ({"mean": float(np.median(vals)), "ci": [float(np.percentile(vals, 5)),
                                                            float(np.percentile(vals, 95))],
                     "n": s0["n"] if (s0 := summaries[0][key]).get("n") else None,
                     "stat": "median, 5-95% of random directions"}
                    if len(vals) else {"mean": None, "ci": [None, None]})
        acc = np.array([s[key]["accuracy"] for s in summaries
                        if isinstance(s[key].get("accuracy"), (int, float))], dtype=float)
        if len(acc):  # the answers' accuracy under the random directions, the same way
            out[key]["accuracy"] = float(np.median(acc))
            out[key]["accuracy_5_95"] = [float(np.percentile(acc, q)) for q in (5, 95)]
    return out


MIN_RANDOM = 20  # fewer draws cannot place a 5-95% band: its ends are the extreme draws


def verdict(steered: dict[str, Any], control: dict[str, Any], key: str = "readout") -> str:
    """Whether the steered mean (of ``key``, the readout by default) lies inside the random
    directions' 5-95% band; no verdict from fewer than MIN_RANDOM draws or a zero-width
    band (every draw gave the same mean, so "outside" would follow from any difference)."""
    value, (low, high) = steered[key].get("mean"), control[key]["ci"]
    if not all(isinstance(v, (int, float)) for v in (value, low, high)):
        return "no control"
    n = control.get("n_random", MIN_RANDOM)
    if n < MIN_RANDOM:
        return f"no verdict: {n} random directions (at least {MIN_RANDOM} for a 5-95% band)"
    if zero_width(low, high):
        return "no verdict: zero-width random band"
    return ("not distinguishable from the control" if low <= value <= high
            else "outside the random-direction band")
