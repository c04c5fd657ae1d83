"""Activation patching between two conditions of the same items (``probe patch``).

Metric: ``logit(unbiased letter) - logit(biased letter)`` at the answer position of the
letter prompt (see :mod:`probe.analysis.answers`). The source and target prompts of an item
differ in length but share their answer suffix, so positions are aligned from the end: with
left padding the last ``k`` columns of a batch are every row's last ``k`` real tokens.

Residual stream: ``blocks.L.hook_resid_pre`` for every layer L (the state entering block
L; at L = 0 that is the token embeddings) plus the last block's ``hook_resid_post`` (the
state the unembedding reads). The pre hooks show where information enters each layer from
the start; the extra post row closes the sweep with an exact identity: patching it at the
answer position restores the source metric exactly. Components: ``hook_attn_out`` and
``hook_mlp_out`` of each block, at the last ``k`` positions together.

Denoising runs the target prompt with source activations patched in; noising runs the source
prompt with target activations. Both report ``normalised = (patched - target) / (source -
target)``: 1 means source behaviour, 0 target behaviour (so full noising gives 0). The ratio
is a ratio of item means (a per-item ratio explodes on items where source ~ target); it is
left out (null) when the mean source-target gap is below ``threshold`` logits or its 95%
bootstrap interval includes 0. Raw patched metrics and deltas are always reported.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from probe.analysis import answers as ans
from probe.errors import ConfigError
from probe.hooks import Capture, HookFn
from probe.inference import Engine
from probe.models import LoadedModel

THRESHOLD = 0.1  # logits: a smaller mean source-target gap makes the ratio meaningless


@dataclass(frozen=True)
class PromptPair:
    """One item's source and target letter prompts and its answer-letter token ids."""

    item_id: str
    source: str
    target: str
    biased: int
    unbiased: int


@dataclass(frozen=True)
class Patch:
    """Overwrite ``hook`` at ``positions`` (offsets from the end, e.g. (-1,))."""

    hook: str
    positions: tuple[int, ...]


def resid_hooks(n_layers: int) -> list[str]:
    """Every block's resid_pre, then the last block's resid_post."""
    return [f"blocks.{L}.hook_resid_pre" for L in range(n_layers)] + [
        f"blocks.{n_layers - 1}.hook_resid_post"]


def resid_patches(n_layers: int, k: int) -> list[Patch]:
    """One patch per (residual hook, position), row-major over hooks."""
    return [Patch(h, (p,)) for h in resid_hooks(n_layers) for p in range(-k, 0)]


def component_patches(n_layers: int, k: int) -> list[Patch]:
    """attn_out then mlp_out of each block, all last ``k`` positions at once."""
    return [Patch(f"blocks.{L}.hook_{c}_out", tuple(range(-k, 0)))
            for L in range(n_layers) for c in ("attn", "mlp")]


def _overwrite(cached: torch.Tensor, positions: Sequence[int]) -> HookFn:
    """Hook that copies ``cached`` (B, k, d: the last k positions) into the same columns."""
    k = cached.shape[1]

    def hook(tensor: torch.Tensor, hook: Any) -> torch.Tensor:
        out = tensor.clone()
        for p in positions:
            out[:, p, :] = cached[:, k + p, :].to(out.dtype)
        return out

    return hook


def _metric(logprobs: torch.Tensor, pairs: Sequence[PromptPair]) -> torch.Tensor:
    rows = torch.arange(len(pairs))
    unb = torch.tensor([p.unbiased for p in pairs])
    bia = torch.tensor([p.biased for p in pairs])
    lp = logprobs.cpu()
    # A log-prob difference equals the logit difference (the normaliser cancels).
    return (lp[rows, unb] - lp[rows, bia]).double()


class PrefixRun:
    """A batch whose tokens before the last ``k`` run once; patched runs then feed only the
    last ``k`` tokens on copies of that KV cache, many patches per pass.

    Exact because patches touch only the last ``k`` positions and attention is causal: the
    prefix's keys and values are the same in every patched run. Several patches share one
    pass (the batch repeated, each copy with its own patch), which matters where a pass costs
    mostly the reading of the weights (CPU, small models).
    """

    def __init__(self, engine: Engine, texts: list[str], k: int, max_rows: int = 64):
        self.engine, self.k, self.max_rows = engine, k, max_rows
        self.batch = engine.encode(texts)
        self.prefix_len = self.batch.input_ids.shape[1] - k
        self.cache = None
        if self.prefix_len > 0:
            b = self.batch
            with torch.inference_mode(), engine.running([]):
                self.cache = engine.model(
                    input_ids=b.input_ids[:, :-k], attention_mask=b.attention_mask[:, :-k],
                    position_ids=b.position_ids[:, :-k], use_cache=True).past_key_values

    def metrics(self, cached: dict[str, torch.Tensor], patches: Sequence[Patch],
                pairs: Sequence[PromptPair]) -> torch.Tensor:
        """Metric (n_patches, B) of the batch under each patch, values from ``cached``."""
        n_batch = len(pairs)
        size = max(1, self.max_rows // n_batch)
        out = []
        for start in range(0, len(patches), size):
            group = list(patches[start:start + size])
            lp = self._group_logprobs(cached, group).view(n_batch, len(group), -1)
            out += [_metric(lp[:, j], pairs) for j in range(len(group))]
        return torch.stack(out)

    def _group_logprobs(self, cached: dict[str, torch.Tensor], group: list[Patch]
                        ) -> torch.Tensor:
        """Log-probs (B * g, vocab) at the last position, row b * g + j under patch j."""
        g, b = len(group), self.batch
        cache = None
        if self.cache is not None:
            cache = copy.deepcopy(self.cache)
            cache.batch_repeat_interleave(g)
        hooks = [(name, _overwrite_group(cached[name], [(j, p.positions) for j, p in
                                                        enumerate(group) if p.hook == name], g))
                 for name in sorted({p.hook for p in group})]
        start = 0 if cache is None else self.prefix_len

        def rep(t: torch.Tensor) -> torch.Tensor:
            return t.repeat_interleave(g, dim=0)

        with torch.inference_mode(), self.engine.running(hooks):
            out = self.engine.model(
                input_ids=rep(b.input_ids[:, start:]), attention_mask=rep(b.attention_mask),
                position_ids=rep(b.position_ids[:, start:]), past_key_values=cache,
                use_cache=cache is not None, logits_to_keep=1)
        return torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)


def _overwrite_group(cached: torch.Tensor, members: list[tuple[int, tuple[int, ...]]],
                     g: int) -> HookFn:
    """Hook on a batch repeated ``g`` times (b-major): copy j gets ``cached`` at its positions."""
    k = cached.shape[1]

    def hook(tensor: torch.Tensor, hook: Any) -> torch.Tensor:
        out = tensor.clone()
        view = out.view(cached.shape[0], g, out.shape[1], out.shape[2])
        for j, positions in members:
            for p in positions:
                view[:, j, p, :] = cached[:, k + p, :].to(out.dtype)
        return out

    return hook


def _capture(engine: Engine, texts: list[str], hooks: list[str], k: int
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Full-forward log-probs and every hook's activations at the last ``k`` positions."""
    capture = Capture(hooks, k)
    logprobs, _, _ = engine.forward_last(texts, capture=capture)
    device = engine.loaded.device
    return logprobs, {h: t.to(device) for h, t in capture.take().items()}


def _patched(engine: Engine, into_texts: list[str], cached: dict[str, torch.Tensor],
             pairs: Sequence[PromptPair], patches: Sequence[Patch], k: int) -> torch.Tensor:
    """Metric (n_patches, B) of the 'into' prompts with each patch from ``cached``."""
    return PrefixRun(engine, into_texts, k).metrics(cached, patches, pairs)


def check_suffix(engine: Engine, pairs: Sequence[PromptPair], k: int) -> None:
    """Error unless every pair's prompts end in the same ``k`` tokens (aligned positions)."""
    for pair in pairs:
        src, tgt = (engine.tokenizer(t, add_special_tokens=False).input_ids
                    for t in (pair.source, pair.target))
        if len(src) < k or len(tgt) < k or src[-k:] != tgt[-k:]:
            raise ConfigError(f"--positions {k}: the last {k} tokens of {pair.item_id}'s source "
                              f"and target prompts differ; use fewer positions")


def patch_pairs(engine: Engine, pairs: Sequence[PromptPair], patches: Sequence[Patch],
                k: int, shared_suffix: bool = True) -> dict[str, np.ndarray]:
    """Run every patch both ways on batches of pairs.

    Returns ``source``/``target`` (n,) and ``denoise``/``noise`` (n_patches, n) metrics.
    Source activations of all hooks are cached in one pass per batch (likewise target); each
    patched run reuses the other prompt's prefix KV cache (:class:`PrefixRun`).
    ``shared_suffix`` requires the last ``k`` tokens to be equal (aligned positions).
    """
    if shared_suffix:
        check_suffix(engine, pairs, k)
    n = len(patches)
    hooks = sorted({p.hook for p in patches})

    def run(batch: list[PromptPair]) -> list[np.ndarray]:
        src = [p.source for p in batch]
        tgt = [p.target for p in batch]
        lp_src, acts_src = _capture(engine, src, hooks, k)
        lp_tgt, acts_tgt = _capture(engine, tgt, hooks, k)
        denoise = _patched(engine, tgt, acts_src, batch, patches, k)
        noise = _patched(engine, src, acts_tgt, batch, patches, k)
        m_src, m_tgt = _metric(lp_src, batch), _metric(lp_tgt, batch)
        out = torch.cat([m_src[None], m_tgt[None], denoise, noise]).T
        return list(out.numpy())

    per_item: list[np.ndarray] = engine.map_batches(
        list(pairs), run, sort_key=lambda p: len(p.source) + len(p.target))
    rows = np.stack(per_item)
    return {"source": rows[:, 0], "target": rows[:, 1],
            "denoise": rows[:, 2:2 + n].T, "noise": rows[:, 2 + n:].T}


def build_pairs(run: ans.RunData, loaded: LoadedModel, source: str, target: str,
                limit: int | None = None) -> tuple[list[PromptPair], dict[str, int]]:
    """Pairs for items with rows under both conditions and a defined answer pair."""
    ids = ans.letter_token_ids(loaded.tokenizer)
    pairs: list[PromptPair] = []
    skipped = {"missing_row": 0, "no_answer_pair": 0}
    for item in run.items:
        row_s, row_t = run.row(item.item_id, source), run.row(item.item_id, target)
        if row_s is None or row_t is None:
            skipped["missing_row"] += 1
            continue
        pair = ans.answer_pair(row_t)
        if pair is None:
            skipped["no_answer_pair"] += 1
            continue
        pairs.append(PromptPair(item.item_id, ans.letter_prompt(loaded, run, item, source),
                                ans.letter_prompt(loaded, run, item, target),
                                biased=ids[pair[0]], unbiased=ids[pair[1]]))
        if limit is not None and len(pairs) >= limit:
            break
    return pairs, skipped
