"""A model with a planted self-correction mechanism, for validating the analyses.

:func:`plant` wraps a loaded model so that whenever a trigger token (the instruction's) is
in a row's input, a fixed vector is added to the residual stream after block ``layer``, at
the last position, in every forward pass. Nothing else changes. So the answer is known:
the instruction's effect on the readout enters at exactly one place, and activation
patching must find it there (the effect appears in the residual stream from
``blocks.{layer + 1}.hook_resid_pre`` on, and in no earlier hook), while the same pipeline
on the unmodified model must find nothing (see docs/validation.md, tests/test_planted.py).

The vector raises the logit of one answer letter: ``scale`` times the unit difference
between that letter's unembedding row and the mean of the others' (through the final
norm's weight), strong enough to flip the answer. The trigger is detected in the residual
stream entering block 0 (a position whose vector is the trigger's embedding), so patching
the embedding moves it as it moves any input; since every pass must see the whole input
for that, the planted model asks patching for full passes (``probe_full_passes``) instead
of suffix passes over a KV cache.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from probe.engine.models import LoadedModel

FULL_PASSES = "probe_full_passes"


def letter_direction(loaded: LoadedModel, up: int, others: Sequence[int]) -> torch.Tensor:
    """Unit residual direction that raises token ``up`` against ``others`` at the output."""
    hf = loaded.hf_model
    unembed = hf.get_output_embeddings().weight.detach().float()
    norm = getattr(getattr(hf, "model", hf), "norm", None)
    gain = norm.weight.detach().float() if norm is not None else torch.ones(unembed.shape[1])
    diff = (unembed[up] - unembed[list(others)].mean(0)) * gain
    return diff / diff.norm()


@contextmanager
def plant(loaded: LoadedModel, layer: int, vector: torch.Tensor, trigger: int
          ) -> Iterator[LoadedModel]:
    """Inside the block, ``loaded`` adds ``vector`` after block ``layer`` at the last
    position of every row whose input contains token ``trigger``."""
    hf = loaded.hf_model
    blocks = hf.model.layers
    if not 0 <= layer < len(blocks) - 1:
        raise ValueError(f"plant after block 0..{len(blocks) - 2}, got {layer}")
    rows: dict[str, torch.Tensor] = {}
    token = hf.get_input_embeddings().weight.detach()[trigger].float()

    def detect(tensor: torch.Tensor, hook: Any) -> None:
        # The trigger is read from the residual stream entering block 0 (after any patch of
        # blocks.0.hook_resid_pre), so patching the embedding moves it like any input.
        x = tensor.float()
        cos = (x @ token.to(x.device)) / (x.norm(dim=-1) * token.norm() + 1e-12)
        rows["on"] = (cos > 0.999).any(-1)

    def add(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        x = args[0] if args else kwargs["hidden_states"]
        x = x.clone()
        on = rows["on"].to(x.device)
        x[on, -1] += vector.to(device=x.device, dtype=x.dtype)
        if args:
            return (x, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": x}

    point = loaded.bridge.blocks[0].ln1.hook_in
    point.add_hook(detect, is_permanent=True)
    handle = blocks[layer + 1].register_forward_pre_hook(add, with_kwargs=True)
    setattr(hf, FULL_PASSES, True)
    try:
        yield loaded
    finally:
        handle.remove()
        point.remove_hooks("fwd", including_permanent=True)
        delattr(hf, FULL_PASSES)
