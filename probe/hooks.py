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


def resid_hook_names(n_layers: int, layers: Sequence[int] | None = None,
                     embed: bool = True) -> list[str]:
    """TransformerLens names of the embedding output and each block's ``hook_resid_post``."""
    chosen = range(n_layers) if layers is None else layers
    names = ["hook_embed"] if embed else []
    return names + [f"blocks.{layer}.hook_resid_post" for layer in chosen]


@contextmanager
def hooked(bridge: Any, fwd_hooks: Sequence[tuple[str, HookFn]]) -> Iterator[Any]:
    """Attach forward hooks for the duration of the block; they are removed on exit."""
    if not fwd_hooks:
        yield bridge
        return
    with bridge.hooks(fwd_hooks=list(fwd_hooks)) as model:
        yield model


class Capture:
    """Collect ``hook -> (batch, k, d)`` at the last ``k`` positions of the prompt pass.

    The first call of each hook after :meth:`reset` is the prompt pass; later calls (KV-cache
    decoding steps, option continuations) are ignored, so caching costs one slice per layer.
    """

    def __init__(self, hook_names: Sequence[str], n_positions: int = 1):
        self.hook_names = list(hook_names)
        self.n_positions = n_positions
        self._store: dict[str, torch.Tensor] = {}

    def reset(self) -> None:
        """Forget the previous batch."""
        self._store = {}

    def _fn(self, name: str, end: int | None) -> HookFn:
        def hook(tensor: torch.Tensor, hook: Any) -> None:
            if name not in self._store:
                stop = tensor.shape[1] if end is None else end
                # non_blocking lets a GPU copy overlap with the next layer's compute.
                self._store[name] = tensor[:, stop - self.n_positions:stop, :].detach().to(
                    "cpu", non_blocking=True)
            return None

        return hook

    def hooks(self, end: int | None = None) -> list[tuple[str, HookFn]]:
        """The (name, fn) pairs to attach; ``end`` is the column after the prompt when the
        pass holds more than the prompt (packed options), else the sequence end."""
        return [(name, self._fn(name, end)) for name in self.hook_names]

    def take(self) -> dict[str, torch.Tensor]:
        """The captured tensors of the last batch (synchronised, on CPU)."""
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        missing = [n for n in self.hook_names if n not in self._store]
        if missing:
            raise RuntimeError(f"hooks did not fire: {missing[:3]}")
        out, self._store = self._store, {}
        return out
