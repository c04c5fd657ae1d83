"""Activation patching between two conditions of the same items: the mechanics.

One generic loop, after TransformerLens's ``patching.py``: a :class:`Patch` names a hook,
a set of positions and optionally an attention head; every patch runs the *into* prompt
with the *from* prompt's activation written over those positions, and the readout is the
run's own score (:mod:`probe.analysis.readout`). Denoising runs the target with source
activations, noising the source with target activations.

Positions are offsets from the end of the prompt in the packed rows the run scored: -1 is
the last prompt token, 0, 1, ... the option-tail columns (text and generate modes), which
hold the same tokens in source and target. A pair is *aligned* when its two prompts have the
same number of tokens (a token-aligned minimal edit, e.g. ``instruct-1`` vs ``negate-1``
or a ``placebo-k`` condition): then every offset maps one position to the same position, and
every prompt position (the edited instruction tokens included) is patched. Unaligned pairs
are patched on their shared suffix only (the last ``k`` prompt tokens, checked to be
equal), and the study says so.

Hooks: ``blocks.L.hook_resid_pre`` for every L plus the last ``hook_resid_post`` (residual
stream, per position), ``hook_attn_out``/``hook_mlp_out`` per layer and ``attn.hook_z`` per
layer and head (all patched positions at once).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from probe.analysis import readout as ro
from probe.analysis.checkpoint import Checkpoint
from probe.engine.hooks import HookFn
from probe.engine.inference import Engine
from probe.engine.packing import Packed, model_attention_mask
from probe.errors import ConfigError

MAX_ROWS = 64  # rows per patched pass (a batch repeated once per patch of the group)


@dataclass(frozen=True)
class PromptPair:
    """One item's source and target readout queries (same options, same answer pair)."""

    item_id: str
    source: ro.Query
    target: ro.Query


@dataclass(frozen=True)
class Patch:
    """Overwrite ``hook`` at ``positions`` (offsets from the prompt end; see module doc),
    only attention head ``head`` of it when given (``attn.hook_z``: batch, pos, head, d)."""

    hook: str
    positions: tuple[int, ...]
    head: int | None = None


def resid_hooks(n_layers: int) -> list[str]:
    """Every block's resid_pre, then the last block's resid_post."""
    return [f"blocks.{L}.hook_resid_pre" for L in range(n_layers)] + [
        f"blocks.{n_layers - 1}.hook_resid_post"]


def n_tail(engine: Engine, pair: PromptPair) -> int:
    """Columns of option tails after the prompt in a packed row (0 in letter mode)."""
    packed = ro.pack(engine, [pair.target])
    return sum(len(ids) - 1 for ids in packed.conts[0])


def prompt_tokens(engine: Engine, query: ro.Query) -> list[int]:
    """The prompt's token ids as the run's packed row holds them (the joint tokenization of
    prompt and options may move a trailing space onto the options)."""
    packed = ro.pack(engine, [query])
    end = packed.prompt_end[0]
    return [int(t) for t in packed.input_ids[0, _prompt_start(packed, 0):end]]


def is_aligned(engine: Engine, pair: PromptPair) -> bool:
    """Whether source and target tokenize to the same length with the same options."""
    src, tgt = (ro.pack(engine, [q]) for q in (pair.source, pair.target))
    return (len(prompt_tokens(engine, pair.source)) == len(prompt_tokens(engine, pair.target))
            and src.conts == tgt.conts)


def check_suffix(engine: Engine, pairs: Sequence[PromptPair], k: int) -> None:
    """Error unless every pair's prompts end in the same ``k`` tokens (aligned positions)."""
    for pair in pairs:
        src, tgt = prompt_tokens(engine, pair.source), prompt_tokens(engine, pair.target)
        if len(src) < k or len(tgt) < k or src[-k:] != tgt[-k:]:
            raise ConfigError(f"--positions {k}: the last {k} tokens of {pair.item_id}'s source "
                              f"and target prompts differ; use fewer positions")


def _prompt_start(packed: Packed, b: int) -> int:
    end = packed.prompt_end[b]
    return end - int(packed.position_ids[b, end - 1]) - 1


def _columns(into: Packed, frm: Packed, b: int, offsets: Sequence[int]
             ) -> tuple[list[int], list[int]]:
    """Columns of ``offsets`` in row ``b`` of both layouts, where both have them."""
    width_i, width_f = into.input_ids.shape[1], frm.input_ids.shape[1]
    lo = max(_prompt_start(into, b) - into.prompt_end[b],
              _prompt_start(frm, b) - frm.prompt_end[b])
    hi = min(width_i - into.prompt_end[b], width_f - frm.prompt_end[b])
    kept = [o for o in offsets if lo <= o < hi]
    return [into.prompt_end[b] + o for o in kept], [frm.prompt_end[b] + o for o in kept]


def first_difference(into: Packed, frm: Packed, b: int) -> int:
    """First column of row ``b`` whose activations can differ between the two passes: where
    their tokens first differ when both rows have the same layout (aligned pairs), else 0.

    Before it both rows hold the same tokens at the same positions, so (attention being
    causal) every activation there is the same in both passes and patching it changes
    nothing: those columns are left out of the patch, which is exact and lets the patched
    pass start at the edit instead of the prompt start.
    """
    if (into.input_ids.shape != frm.input_ids.shape
            or into.prompt_end[b] != frm.prompt_end[b]
            or _prompt_start(into, b) != _prompt_start(frm, b)
            or not torch.equal(into.position_ids[b], frm.position_ids[b])):
        return 0
    differ = (into.input_ids[b] != frm.input_ids[b]).nonzero()
    return int(differ[0, 0]) if len(differ) else into.input_ids.shape[1]


def _repeat(packed: Packed, g: int) -> Packed:
    """The batch repeated ``g`` times, b-major (row b * g + j is copy j of row b)."""
    def rep(lst: list[Any]) -> list[Any]:
        return [x for x in lst for _ in range(g)]

    return Packed(packed.input_ids.repeat_interleave(g, 0),
                  packed.allowed.repeat_interleave(g, 0),
                  packed.position_ids.repeat_interleave(g, 0), rep(packed.prompt_end),
                  rep(packed.conts), rep(packed.tail_cols))


def _group_hook(acts: torch.Tensor, g: int, start: int,
                members: list[tuple[int, int | None, list[tuple[list[int], list[int]]]]]
                ) -> HookFn:
    """Copy ``acts`` (from-run) into copy j of each row at its columns (and head); the
    patched pass holds the 'into' columns from ``start`` on."""
    def hook(tensor: torch.Tensor, hook: Any) -> torch.Tensor:
        out = tensor.clone()
        view = out.view(acts.shape[0], g, *out.shape[1:])
        for j, head, cols in members:
            for b, (into_cols, from_cols) in enumerate(cols):
                if not into_cols:
                    continue
                src = acts[b, from_cols].to(out.dtype)
                at = [c - start for c in into_cols]
                if head is None:
                    view[b, j, at] = src
                else:
                    view[b, j, at, head] = src[:, head]
        return out

    return hook


def _forward(engine: Engine, packed: Packed, hooks: list[tuple[str, HookFn]], start: int = 0,
             cache: Any = None, keep_cache: bool = False) -> tuple[torch.Tensor, Any]:
    """Log-probs of packed rows from ``packed.first_read`` (as
    :meth:`~probe.engine.inference.Engine.packed_logprobs`), feeding only columns ``start:`` on top
    of ``cache`` (the same rows' keys and values before ``start``)."""
    width = packed.input_ids.shape[1]
    full = model_attention_mask(packed, engine.model.config, engine.model.dtype)
    mask = ({k: v[:, :, start:, :] for k, v in full.items()} if isinstance(full, dict)
            else full[:, :, start:, :])
    with torch.inference_mode(), engine.running(hooks):
        out = engine.model(input_ids=packed.input_ids[:, start:], attention_mask=mask,
                           position_ids=packed.position_ids[:, start:], past_key_values=cache,
                           use_cache=keep_cache or cache is not None,
                           logits_to_keep=width - packed.first_read)
    lp = torch.log_softmax(out.logits.float(), dim=-1)
    return lp, out.past_key_values if keep_cache else None


def prefix_cache_ok(model: Any) -> bool:
    """Whether patched passes may reuse a cropped KV cache of the unpatched pass: not for
    sliding-window layers (their cache keeps only the window and cannot be cropped back),
    nor for a model that reads its whole input on every call (:mod:`probe.engine.planted`)."""
    config = model.config
    sliding = getattr(config, "sliding_window", None) or "sliding_attention" in (
        getattr(config, "layer_types", None) or ())
    return not sliding and not getattr(model, "probe_full_passes", False)


def _capture_all(engine: Engine, mode: str, queries: list[ro.Query], hooks: list[str]
                 ) -> tuple[Packed, torch.Tensor, dict[str, torch.Tensor], Any]:
    """Unpatched pass: layout, readout, every hook's full activations, the KV cache."""
    store: dict[str, torch.Tensor] = {}

    def keep(name: str) -> HookFn:
        def fn(tensor: torch.Tensor, hook: Any) -> None:
            store[name] = tensor.detach().clone()
        return fn

    packed = ro.pack(engine, queries)
    lp, cache = _forward(engine, packed, [(h, keep(h)) for h in hooks], keep_cache=True)
    return packed, ro.values(mode, packed, lp, queries), store, cache


def _patched(engine: Engine, mode: str, into: Packed, into_q: list[ro.Query], cache: Any,
             frm: Packed, acts: dict[str, torch.Tensor], patches: Sequence[Patch],
             unpatched: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Readout (n_patches, B) of the 'into' rows under each patch, and whether any column
    of the row was patched (False: the offset is outside that row's prompt).

    Exact shortcut: columns before the earliest patched one are the same as in the
    unpatched pass (attention is causal), so each pass feeds only the columns from there on,
    over a copy of the unpatched pass's KV cache; patches are grouped by that column. A
    row's columns before its first edited token are not patched (:func:`first_difference`:
    they hold the same activations in both passes), so for a minimal edit near the end of
    the prompt most passes start at the edit, and a patch left with no column in any row
    is the ``unpatched`` readout without a pass.
    """
    n_batch = len(into_q)
    size = max(1, MAX_ROWS // n_batch)
    cols_of: dict[tuple[int, ...], list[tuple[list[int], list[int]]]] = {}
    valid_of: dict[tuple[int, ...], list[bool]] = {}
    edit = [first_difference(into, frm, b) for b in range(n_batch)]
    for p in patches:
        if p.positions not in cols_of:
            cols = [_columns(into, frm, b, p.positions) for b in range(n_batch)]
            valid_of[p.positions] = [bool(into_cols) for into_cols, _ in cols]
            cols_of[p.positions] = [
                ([c for c in into_cols if c >= edit[b]],
                 [f for c, f in zip(into_cols, from_cols, strict=True) if c >= edit[b]])
                for b, (into_cols, from_cols) in enumerate(cols)]
    first = {pos: min((c for into_cols, _ in cols for c in into_cols), default=into.first_read)
             for pos, cols in cols_of.items()}
    values = unpatched.double().expand(len(patches), n_batch).clone()
    # Positions before the edit in every row (not the "nothing" identity, which is run)
    noop = {pos for pos, cols in cols_of.items()
            if pos and not any(into_cols for into_cols, _ in cols)}
    order = sorted((i for i, p in enumerate(patches) if p.positions not in noop),
                   key=lambda i: -first[patches[i].positions])
    for begin in range(0, len(order), size):
        idx = order[begin:begin + size]
        group, g = [patches[i] for i in idx], len(idx)
        start = min(into.first_read, *(first[p.positions] for p in group))
        if not prefix_cache_ok(engine.model):
            start = 0
        hooks = [(name, _group_hook(acts[name], g, start, [
            (j, p.head, cols_of[p.positions]) for j, p in enumerate(group) if p.hook == name]))
            for name in sorted({p.hook for p in group})]
        past = None
        if start > 0:
            past = copy.deepcopy(cache)
            past.crop(start)
            past.batch_repeat_interleave(g)
        rep = _repeat(into, g)
        lp, _ = _forward(engine, rep, hooks, start if past is not None else 0, past)
        vals = ro.values(mode, rep, lp, [q for q in into_q for _ in range(g)])
        values[idx] = vals.view(n_batch, g).T
    valid = torch.tensor([valid_of[p.positions] for p in patches])
    return values, valid


def patch_pairs(engine: Engine, mode: str, pairs: Sequence[PromptPair],
                patches: Sequence[Patch], checkpoint: Checkpoint | None = None
                ) -> dict[str, np.ndarray]:
    """Run every patch both ways on batches of pairs.

    Returns ``source``/``target`` (n,) readouts, ``denoise``/``noise`` (n_patches, n) patched
    readouts, and ``valid`` (n_patches, n): whether the patch touched that item at all.
    With ``checkpoint`` each batch's numbers are kept there, and batches it holds are not
    run again (a resumed ``probe patch``).
    """
    n = len(patches)
    hooks = sorted({p.hook for p in patches})

    def run(batch: list[PromptPair]) -> list[np.ndarray]:
        src_q, tgt_q = [p.source for p in batch], [p.target for p in batch]
        src_pack, m_src, acts_src, kv_src = _capture_all(engine, mode, src_q, hooks)
        tgt_pack, m_tgt, acts_tgt, kv_tgt = _capture_all(engine, mode, tgt_q, hooks)
        if src_pack.conts != tgt_pack.conts:
            raise ConfigError("source and target options tokenize differently; cannot patch")
        denoise, ok_d = _patched(engine, mode, tgt_pack, tgt_q, kv_tgt, src_pack, acts_src,
                                 patches, m_tgt)
        noise, ok_n = _patched(engine, mode, src_pack, src_q, kv_src, tgt_pack, acts_tgt,
                               patches, m_src)
        ok = (ok_d & ok_n).double()
        out = torch.cat([m_src[None], m_tgt[None], denoise, noise, ok]).T
        return list(out.numpy())

    fn = run if checkpoint is None else checkpoint.batches(
        run, lambda p: f"{p.item_id}/{p.source.view}", len(pairs), "patching pairs")
    per_item: list[np.ndarray] = engine.map_batches(
        list(pairs), fn, sort_key=lambda p: len(p.source.prompt) + len(p.target.prompt))
    rows = np.stack(per_item)
    return {"source": rows[:, 0], "target": rows[:, 1], "denoise": rows[:, 2:2 + n].T,
            "noise": rows[:, 2 + n:2 + 2 * n].T, "valid": rows[:, 2 + 2 * n:].T > 0.5}


def with_positions(patches: Sequence[Patch], positions: tuple[int, ...]) -> list[Patch]:
    """The same hooks and heads at other positions."""
    return [replace(p, positions=positions) for p in patches]
