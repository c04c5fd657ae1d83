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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probe.analysis import answers as ans
from probe.errors import ConfigError
from probe.hooks import Capture, HookFn, hooked
from probe.inference import Engine
from probe.models import LoadedModel
from probe.plots import pyplot, save_figure
from probe.scoring.stats import bootstrap_ci

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
            with torch.inference_mode():
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

        with torch.inference_mode(), hooked(self.engine.loaded.bridge, hooks):
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


def gap_summary(source: np.ndarray, target: np.ndarray, threshold: float = THRESHOLD,
                seed: int = 0) -> dict[str, Any]:
    """Mean source-target gap with its interval, and whether a ratio over it is meaningful."""
    gap = ans.mean_ci(source - target, seed=seed)
    low, high = gap["ci"]
    reliable = (gap["mean"] is not None and abs(gap["mean"]) >= threshold
                and low is not None and high is not None and not low <= 0 <= high)
    note = None if reliable else (
        f"mean source-target gap {gap['mean']} (95% CI {gap['ci']}) is below {threshold} "
        f"logits or its interval includes 0: normalised effects are left out (null)")
    return {**gap, "reliable": reliable, "note": note}


def effect(patched: np.ndarray, source: np.ndarray, target: np.ndarray, reliable: bool,
           threshold: float = THRESHOLD, seed: int = 0) -> dict[str, Any]:
    """Raw patched metric, delta from target, and normalised effects of one patch."""
    gap, delta = source - target, patched - target
    out: dict[str, Any] = {"patched": ans.mean_ci(patched, seed=seed),
                           "delta": ans.mean_ci(delta, seed=seed),
                           "normalised": None, "normalised_items": None}
    if reliable:
        cols = np.stack([delta, gap], axis=1)
        low, high = bootstrap_ci(cols, lambda s: s[:, 0] / s[:, 1], ans.N_BOOT, seed)
        out["normalised"] = {"mean": float(delta.mean() / gap.mean()),
                             "ci": [ans._num(low), ans._num(high)]}
    big = np.abs(gap) >= threshold
    if big.any():
        out["normalised_items"] = {"mean": float((delta[big] / gap[big]).mean()),
                                   "n": int(big.sum())}
    out["per_item"] = patched.tolist()
    return out


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


def summarise(arrays: dict[str, np.ndarray], patches: Sequence[Patch], n_layers: int, k: int,
              threshold: float = THRESHOLD) -> dict[str, Any]:
    """patching.json's results: the metric, the residual grid and the component bars."""
    src, tgt = arrays["source"], arrays["target"]
    gap = gap_summary(src, tgt, threshold)
    cells = {d: [effect(arrays[d][i], src, tgt, gap["reliable"], threshold)
                 for i in range(len(patches))] for d in ("denoise", "noise")}
    n_resid = (n_layers + 1) * k
    labels = [f"resid_pre {L}" for L in range(n_layers)] + [f"resid_post {n_layers - 1}"]
    resid = {"hooks": resid_hooks(n_layers), "labels": labels, "positions": list(range(-k, 0))}
    comps: dict[str, Any] = {"layers": list(range(n_layers)), "positions": list(range(-k, 0))}
    for d, effects in cells.items():
        resid[d] = [effects[r * k:(r + 1) * k] for r in range(n_layers + 1)]
        comps[d] = {c: effects[n_resid + j::2] for j, c in enumerate(("attn", "mlp"))}
    return {"metric": {"source": ans.mean_ci(src), "target": ans.mean_ci(tgt), "gap": gap},
            "resid": resid, "components": comps}


def run_patching(run_dir: str, source: str, target: str = ans.BASELINE, positions: int = 1,
                 limit: int | None = None, loaded: LoadedModel | None = None,
                 data_dir: str | None = None, threshold: float = THRESHOLD) -> dict[str, Any]:
    """Patch ``source`` into ``target`` (and back) on a run's items; write json and plots."""
    import time

    from probe.io import atomic_write_json
    from probe.scoring.metrics import json_safe

    if positions < 1:
        raise ConfigError(f"--positions must be >= 1, got {positions}")
    run = ans.load_run(run_dir, data_dir)
    loaded = loaded or ans.load_run_model(run)
    pairs, skipped = build_pairs(run, loaded, source, target, limit)
    if not pairs:
        raise ConfigError(f"no items with rows under both {source} and {target} and a "
                          f"biased/unbiased answer pair (skipped: {skipped})")
    patches = resid_patches(loaded.n_layers, positions) + component_patches(loaded.n_layers,
                                                                            positions)
    start = time.perf_counter()
    arrays = patch_pairs(Engine(loaded, run.config.batch_size), pairs, patches, positions)
    result = summarise(arrays, patches, loaded.n_layers, positions, threshold)
    result["meta"] = {
        "source": source, "target": target, "positions": positions, "n_items": len(pairs),
        "skipped": skipped, "model": run.config.model, "mode": run.config.mode,
        "metric": "logit(unbiased letter) - logit(biased letter) after 'The answer is ('",
        "normalised": "(patched - target) / (source - target), ratio of item means",
        "threshold": threshold, "n_boot": ans.N_BOOT, "passes_per_batch":
            f"2 full + 2 prefix passes, {2 * len(patches)} patched last-{positions}-token runs "
            "grouped into passes of <= 64 rows",
        "seconds": round(time.perf_counter() - start, 2)}
    result["items"] = [{"item_id": p.item_id, "source": float(s), "target": float(t)}
                       for p, s, t in zip(pairs, arrays["source"], arrays["target"],
                                          strict=True)]
    result = json_safe(result)
    atomic_write_json(Path(run_dir) / "patching.json", result)
    plot_patching(result, Path(run_dir) / "plots")
    return result


def _value(cell: dict[str, Any], reliable: bool) -> float:
    block = cell["normalised"] if reliable else cell["delta"]
    return np.nan if block is None or block["mean"] is None else float(block["mean"])


def plot_patching(result: dict[str, Any], plots_dir: Path) -> list[Path]:
    """Heatmap (layer x position) and per-layer component bars, denoising and noising."""
    plt = pyplot()

    plots_dir.mkdir(parents=True, exist_ok=True)
    reliable = bool(result["metric"]["gap"]["reliable"])
    what = "normalised effect" if reliable else "patched - target (logits)"
    meta = result["meta"]
    title = f"{meta['source']} -> {meta['target']}, n={meta['n_items']}"
    resid, comps = result["resid"], result["components"]
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.2 * len(resid["positions"]) * 2,
                                            2 + 0.28 * len(resid["labels"])), squeeze=False)
    for ax, d in zip(axes[0], ("denoise", "noise"), strict=True):
        grid = np.array([[_value(c, reliable) for c in row] for row in resid[d]])
        top = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
        im = ax.imshow(grid, aspect="auto", cmap="RdBu_r", origin="lower",
                       vmin=-(top or 1.0), vmax=top or 1.0)  # white = no effect
        ax.set(title=f"{d}: {title}", xlabel="position from end", ylabel="residual hook",
               xticks=range(len(resid["positions"])), xticklabels=resid["positions"],
               yticks=range(len(resid["labels"])), yticklabels=resid["labels"])
        fig.colorbar(im, ax=ax, label=what)
    paths = [plots_dir / "patching_resid.png", plots_dir / "patching_components.png"]
    save_figure(fig, paths[0])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), squeeze=False)
    layers = np.array(comps["layers"])
    for ax, d in zip(axes[0], ("denoise", "noise"), strict=True):
        for j, c in enumerate(("attn", "mlp")):
            ax.bar(layers + (j - 0.5) * 0.4, [_value(x, reliable) for x in comps[d][c]],
                   width=0.4, label=f"{c}_out")
        ax.set(title=f"{d}: {title}", xlabel="layer", ylabel=what)
        ax.axhline(0, color="grey", lw=0.8)
        ax.legend()
    save_figure(fig, paths[1])
    return paths
