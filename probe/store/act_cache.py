"""A TransformerLens ``ActivationCache``-like view of a run's stored activations, row-aligned.

The activation store keeps rows in the order batches finished (grouped by condition, sorted
by prompt length), not in ``generations.jsonl`` order. This view joins them by
``(item_id, condition)`` once, so row ``i`` of every tensor is ``run.rows[i]``::

    cache = run.cache
    cache["blocks.3.hook_resid_post"]        # (n_rows, n_positions, d_model), float32
    cache["resid_post", 3]                   # the same, by TransformerLens's short name
    cache.accumulated_resid(pos=-1)          # (n_layers + 1, n_rows, d_model)

Rows without stored activations (prompts refused as too long) are NaN and ``cache.mask``
is False for them. Positions are the store's labels (``cache.positions``): -k..-1 are the
last k prompt tokens, j >= 0 the generated token j (``--cache-steps``). Multi-turn
conditions' earlier rounds: ``cache.at_round(hook, r)`` (:mod:`probe.store.act_rounds`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from probe.activations import ActivationStore
from probe.errors import ConfigError, UnknownNameError
from probe.store.act_rounds import RoundsView


def hook_name(key: str | tuple[Any, ...]) -> str:
    """A full hook name from a name or a TransformerLens-style ``(kind, layer)`` pair:
    ``("resid_post", 3)`` -> ``blocks.3.hook_resid_post``; ``"embed"`` -> ``hook_embed``."""
    if isinstance(key, tuple):
        kind, *rest = key
        if kind == "embed" and not rest:
            return "hook_embed"
        if len(rest) != 1:
            raise KeyError(f"expected (kind, layer), got {key!r}")
        return f"blocks.{int(rest[0])}.hook_{kind}"
    return "hook_embed" if key == "embed" else key


class ActivationCache(RoundsView):
    """Stored activations of a run, by hook name, aligned with ``rows``; each review round's
    answer position by :meth:`at_round` (see :mod:`probe.store.act_rounds`)."""

    def __init__(self, store: ActivationStore, rows: Sequence[dict[str, Any]]):
        self.store = store
        self.rows = rows
        where: dict[tuple[str, str], int] = {}
        for i, meta in enumerate(store.rows):
            where.setdefault((str(meta["item_id"]), str(meta["condition"])), i)
        #: store row of each run row (None: no activations)
        self.store_rows: list[int | None] = [
            where.get((str(r["item_id"]), str(r["condition"]))) for r in rows]
        self.mask = torch.tensor([i is not None for i in self.store_rows], dtype=torch.bool)
        self.positions: list[int] = list(store.positions)
        self._memo: dict[str, torch.Tensor] = {}

    def keys(self) -> list[str]:
        """Hook names stored (TransformerLens names)."""
        return list(self.store.hook_names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.store.hook_names)

    def __contains__(self, key: object) -> bool:
        try:
            return hook_name(key) in self.store.hook_names  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError):
            return False

    @property
    def n_layers(self) -> int:
        """Number of blocks with a stored ``hook_resid_post``."""
        return sum(1 for h in self.store.hook_names if h.endswith(".hook_resid_post"))

    def __getitem__(self, key: str | tuple[Any, ...]) -> torch.Tensor:
        """(n_rows, n_positions, d_model) float32 of one hook; NaN where ``mask`` is False."""
        name = hook_name(key)
        if name not in self.store.hook_names:
            raise UnknownNameError("hook", name, self.store.hook_names)
        if name not in self._memo:
            have = [i for i, s in enumerate(self.store_rows) if s is not None]
            out = torch.full((len(self.store_rows), len(self.positions), self.store.d_model),
                             float("nan"))
            if have:
                out[have] = self.store.load(name, [self.store_rows[i] for i in have],  # type: ignore[misc]
                                            position=None)
            self._memo[name] = out
        return self._memo[name]

    def position(self, label: int) -> int:
        """Column of a position label (-1: last prompt token; j >= 0: generated token j)."""
        if label not in self.positions:
            raise ConfigError(f"position {label} is not stored; stored: {self.positions}")
        return self.positions.index(label)

    def accumulated_resid(self, layer: int | None = None, pos: int | None = -1,
                          return_labels: bool = False
                          ) -> torch.Tensor | tuple[torch.Tensor, list[str]]:
        """The residual stream before block 0 and after each block up to ``layer``
        (default: all), stacked: (layers, n_rows, d_model) at position label ``pos``, or
        (layers, n_rows, n_positions, d_model) with ``pos=None``.

        As TransformerLens's ``accumulated_resid`` without layer norm; the first entry is
        ``hook_embed``, which equals ``blocks.0.hook_resid_pre`` in models without learned
        position embeddings (Llama, SmolLM2, Qwen...); probe does not cache ``hook_pos_embed``.
        Labels: ``embed``, then ``{L}_post``.
        """
        n = self.n_layers if layer is None else layer
        if not 0 <= n <= self.n_layers:
            raise ConfigError(f"layer {layer}: expected 0..{self.n_layers}")
        names = ["hook_embed"] + [f"blocks.{L}.hook_resid_post" for L in range(n)]
        stacked = torch.stack([self[h] for h in names])
        if pos is not None:
            stacked = stacked[:, :, self.position(pos)]
        labels = ["embed"] + [f"{L}_post" for L in range(n)]
        return (stacked, labels) if return_labels else stacked
