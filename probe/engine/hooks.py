"""Hooks, always inside context managers that remove them on exit.

:class:`Capture` records the residual stream (or any hook) at the last ``k`` prompt
positions on the prompt pass only: with left padding the answer position is the last
column for every row, so positions align from the end across prompts of different length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

HookFn = Callable[[torch.Tensor, Any], torch.Tensor | None]
# Key of Capture.take()'s per-row count of real generated-token columns (not a hook name).
STEPS_KEY = "n_steps"


def resid_hook_names(n_layers: int, layers: Sequence[int] | None = None,
                     embed: bool = True) -> list[str]:
    """TransformerLens names of the embedding output and each block's ``hook_resid_post``."""
    chosen = range(n_layers) if layers is None else layers
    names = ["hook_embed"] if embed else []
    return names + [f"blocks.{layer}.hook_resid_post" for layer in chosen]


# What ``--cache-components`` may store per block, in this order: the residual stream after
# the block, and the two outputs the block adds to it (attention, MLP).
COMPONENTS = ("resid", "attn_out", "mlp_out")


def cache_hook_names(n_layers: int, components: Sequence[str] = ("resid",)) -> list[str]:
    """Hooks ``--cache-acts`` stores: :func:`resid_hook_names`, then each block's
    ``hook_attn_out`` and/or ``hook_mlp_out`` when ``components`` names them."""
    names = resid_hook_names(n_layers)
    for kind in COMPONENTS[1:]:
        if kind in components:
            names += [f"blocks.{layer}.hook_{kind}" for layer in range(n_layers)]
    return names


@contextmanager
def hooked(bridge: Any, fwd_hooks: Sequence[tuple[str, HookFn]]) -> Iterator[Any]:
    """Attach forward hooks for the duration of the block; they are removed on exit."""
    if not fwd_hooks:
        yield bridge
        return
    with bridge.hooks(fwd_hooks=list(fwd_hooks)) as model:
        yield model


def _to_cpu(view: torch.Tensor) -> torch.Tensor:
    """A CPU copy of a slice of a hooked activation. On a GPU ``non_blocking`` lets the copy
    overlap with the next layer's compute. On a CPU ``.to("cpu")`` would return the slice
    itself, a view that keeps the whole (batch, seq, d_model) activation alive: every layer's
    output then needs fresh memory (7 % of a CPU prompt pass of SmolLM2-135M, see
    docs/benchmarks.md), so the few captured columns are copied out instead."""
    if view.device.type == "cpu":
        return view.detach().clone()
    return view.detach().to("cpu", non_blocking=True)


class Capture:
    """Collect ``hook -> (batch, k + n_steps, d)``: the last ``k`` prompt positions, then
    the first ``n_steps`` generated tokens.

    The first call of each hook after :meth:`reset` is the prompt pass. With ``n_steps`` 0
    later calls (KV-cache decoding steps) are ignored, so caching costs one slice per layer.
    Otherwise decoding step ``s`` (its input is generated token ``s - 1``) is kept for
    ``s <= n_steps``: column ``k + j`` holds generated token ``j``. Steps that did not run,
    and a row's EOS and what follows it (see :meth:`keep_steps`), are zeros, so a row's
    stored values never depend on the other rows of its batch.
    """

    def __init__(self, hook_names: Sequence[str], n_positions: int = 1, n_steps: int = 0):
        self.hook_names = list(hook_names)
        self.n_positions = n_positions
        self.n_steps = n_steps
        self._store: dict[str, torch.Tensor] = {}
        self._steps: dict[str, list[torch.Tensor]] = {}
        self._valid: list[int] | None = None

    @property
    def positions(self) -> list[int]:
        """Labels of the captured columns: -k..-1 prompt offsets, then 0..n_steps-1."""
        return list(range(-self.n_positions, 0)) + list(range(self.n_steps))

    def reset(self) -> None:
        """Forget the previous batch."""
        self._store, self._steps, self._valid = {}, {}, None

    def _prompt_slice(self, tensor: torch.Tensor, end: Sequence[int] | None) -> torch.Tensor:
        """The last ``k`` prompt columns: the sequence end, or each row's ``end[b]``."""
        if end is None:
            return tensor[:, -self.n_positions:, :]
        cols = torch.tensor(end)[:, None] - self.n_positions + torch.arange(self.n_positions)
        # A prompt shorter than k: clamp instead of wrapping round to the sequence's end;
        # the study zeroes those columns and records how many are real.
        cols = cols.clamp(min=0)
        rows = torch.arange(len(end))[:, None]
        return tensor[rows.to(tensor.device), cols.to(tensor.device)]

    def _fn(self, name: str, end: Sequence[int] | None) -> HookFn:
        def hook(tensor: torch.Tensor, hook: Any) -> None:
            if name not in self._store:
                self._store[name] = _to_cpu(self._prompt_slice(tensor, end))
            elif len(self._steps.setdefault(name, [])) < self.n_steps:
                self._steps[name].append(_to_cpu(tensor[:, -1:, :]))
            return None

        return hook

    def hooks(self, end: Sequence[int] | None = None) -> list[tuple[str, HookFn]]:
        """The (name, fn) pairs to attach; ``end[b]`` is the column after row ``b``'s prompt
        when the pass holds more than the prompts (packed options), else the sequence end."""
        return [(name, self._fn(name, end)) for name in self.hook_names]

    def keep_steps(self, n_valid: Sequence[int]) -> None:
        """Per row, how many generated tokens are real (those before its EOS)."""
        self._valid = list(n_valid)

    def take(self) -> dict[str, torch.Tensor]:
        """The captured tensors of the last batch (synchronised, on CPU); with ``n_steps``
        also ``STEPS_KEY``: per row, how many generated-token columns are real."""
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        missing = [n for n in self.hook_names if n not in self._store]
        if missing:
            raise RuntimeError(f"hooks did not fire: {missing[:3]}")
        out = {name: self._with_steps(name, prompt) for name, prompt in self._store.items()}
        if self.n_steps:
            ran = len(next(iter(self._steps.values()), []))
            n_batch = next(iter(out.values())).shape[0]
            valid = self._valid if self._valid is not None else [ran] * n_batch
            out[STEPS_KEY] = torch.tensor([min(n, ran) for n in valid])
        self.reset()
        return out

    def _with_steps(self, name: str, prompt: torch.Tensor) -> torch.Tensor:
        if not self.n_steps:
            return prompt
        n_batch, _, d_model = prompt.shape
        steps = torch.zeros((n_batch, self.n_steps, d_model), dtype=prompt.dtype)
        got = self._steps.get(name, [])
        if got:
            steps[:, :len(got)] = torch.cat(got, dim=1)
        if self._valid is not None:
            for row, n in enumerate(self._valid):
                steps[row, n:] = 0
        return torch.cat([prompt, steps], dim=1)
