"""Concept directions from BBQ contrastive pairs (``probe superficial``, step 1).

For one BBQ item the pair texts are its *baseline* question (the run's chat template and
system prompt, ending with the answer cue "The answer is") followed by one of its answers
written out, joined as text mode joins an option to its prompt
(:mod:`probe.engine.continuation`): the stereotyped answer (the item's ``target_index``),
the anti-stereotyped answer (the other named group) and the unknown answer. The texts of an
item differ only in the answer. At each hook the direction is

    d = mean over items of h(question + stereotyped answer)
        - mean over items of h(question + contrast answer)

read at the last token of the answer (the answer position), for the contrast ``anti`` (the
other group) and ``unknown``. It points toward the stereotyped answer. This is adapted from
Lee et al. 2025 (arXiv 2505.11924), who build latent directions from contrastive pairs
(toxic vs non-toxic texts); BBQ's own answers are the pairs here, and the construction (a
difference of means at the answer's last token) is probe's own.

**Held out.** The run's templates (category x question_index, the clusters of
:mod:`probe.scoring.stats`) are dealt into two halves with ``seed``
(:func:`probe.analysis.steer_controls.template_halves`). The direction used for the items of
half ``f`` is fitted on the items of the other half only, so no analysed item's template
shaped the direction it is projected on.

Stored in ``RUN/concept_directions.safetensors`` (raw differences of means, float32, keys
``"<contrast>/<fold>/<hook>"``; fold ``f`` = the direction *for* half ``f``) with
``RUN/concept_directions.json`` (folds, items, hooks, norms, the text recipe), so that
re-analysis needs no model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from probe.analysis.superficial import reliability
from probe.conditions.prompts import render
from probe.conditions.registry import get_condition
from probe.data.items import Item
from probe.engine.continuation import continuation, prompt_stem
from probe.engine.hooks import Capture
from probe.engine.inference import Engine
from probe.errors import ConfigError, DataError
from probe.store.io import atomic_write_bytes, atomic_write_json, read_json

CONTRASTS = ("anti", "unknown")
KINDS = ("stereotyped", *CONTRASTS)
# TransformerLens hook suffixes of the components analysed; "resid" is the block's output.
COMPONENTS = {"resid": "hook_resid_post", "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out"}
STEM = "concept_directions"
VERSION = 2


def component_of(hook: str) -> tuple[int, str] | None:
    """(layer, component) of ``blocks.L.hook_<x>`` for the analysed components, else None."""
    parts = hook.split(".")
    if len(parts) != 3 or parts[0] != "blocks" or not parts[1].isdigit():
        return None
    for comp, suffix in COMPONENTS.items():
        if parts[2] == suffix:
            return int(parts[1]), comp
    return None


def answer_indices(item: Item) -> dict[str, int] | None:
    """Option index of each kind (stereotyped, anti, unknown); None without a single target."""
    target, unknown = item.meta.get("target_index"), item.meta.get("unknown_index")
    if target is None or unknown is None or target == unknown or len(item.options) != 3:
        return None
    anti = ({0, 1, 2} - {int(target), int(unknown)}).pop()
    return {"stereotyped": int(target), "anti": anti, "unknown": int(unknown)}


def pair_texts(loaded: Any, item: Item, system: str = "default") -> dict[str, str] | None:
    """The item's baseline question followed by each answer (one text per kind)."""
    idx = answer_indices(item)
    if idx is None:
        return None
    final = get_condition("baseline").build(item).final
    prompt = render(loaded.tokenizer, loaded.chat, [], final.user, final.assistant_prefix,
                    system)
    return {kind: prompt_stem(prompt) + continuation(prompt, item.options[i])
            for kind, i in idx.items()}


def fit(engine: Engine, items: list[Item], fold_of: dict[str, int], hooks: list[str],
        system: str = "default") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Directions per contrast, fold and hook (module doc) and a summary of the fit."""
    block_of = reliability.blocks_of(fold_of)
    texts: list[tuple[tuple[int, int], str, str]] = []  # ((half, block), kind, text)
    used = [0, 0]
    for item in items:
        pair = pair_texts(engine.loaded, item, system)
        if pair is None or item.group not in fold_of:
            continue
        used[fold_of[item.group]] += 1
        texts += [(block_of[item.group], kind, text) for kind, text in pair.items()]
    if not all(used):
        raise ConfigError(f"concept directions need items with a stereotyped answer in both "
                          f"template halves; have {used[0]} and {used[1]}")
    sums = _hidden_sums(engine, texts, hooks)
    vectors: dict[str, np.ndarray] = {}
    checks: dict[str, Any] = {}
    for contrast in CONTRASTS:
        diffs = [np.stack([sums[(g, "stereotyped")] - sums[(g, contrast)]
                           for g in sorted({g for g, _ in sums if g[0] == f})]) for f in (0, 1)]
        for f in (0, 1):
            # the direction for half f is fitted on the other half's items
            direction = diffs[1 - f].sum(0) / used[1 - f]
            for j, hook in enumerate(hooks):
                vectors[f"{contrast}/{f}/{hook}"] = direction[j]
        checks[contrast] = dict(zip(hooks, reliability.split_half(diffs[::-1], used[::-1]),
                                    strict=True))
    example = next(pair_texts(engine.loaded, it, system) for it in items
                   if answer_indices(it) is not None)
    return vectors, {"n_items": used, "n_texts": len(texts), "example": example,
                     "reliability": checks}


def _hidden_sums(engine: Engine, texts: list[tuple[Any, str, str]], hooks: list[str]
                 ) -> dict[tuple[Any, str], np.ndarray]:
    """Sum of the answer-position states (hooks, d) of the texts, per (group, kind)."""
    d = engine.loaded.hf_model.config.hidden_size
    sums: dict[tuple[Any, str], np.ndarray] = {}
    capture = Capture(hooks, 1)
    bar = tqdm(total=len(texts), desc="concept pairs", leave=False)

    def one(batch: list[tuple[Any, str, str]]) -> list[None]:
        engine.forward_last([t for _, _, t in batch], capture=capture)
        acts = capture.take()
        stacked = torch.stack([acts[h][:, -1].double() for h in hooks], 1).numpy()
        for (group, kind, _), x in zip(batch, stacked, strict=True):
            sums.setdefault((group, kind), np.zeros((len(hooks), d)))
            sums[(group, kind)] += x
        bar.update(len(batch))
        return [None] * len(batch)

    try:
        engine.map_batches(texts, one, sort_key=lambda t: len(t[2]))
    finally:
        bar.close()
    return sums


def summary(vectors: dict[str, np.ndarray], hooks: list[str],
            checks: dict[str, Any]) -> dict[str, Any]:
    """Per contrast and hook: both halves' norms and the split-half reproducibility check
    (:mod:`probe.analysis.superficial.reliability`)."""
    out: dict[str, Any] = {}
    for contrast in CONTRASTS:
        out[contrast] = {hook: {"norms": [float(np.linalg.norm(vectors[f"{contrast}/{f}/{hook}"]))
                                          for f in (0, 1)], **checks[contrast][hook]}
                         for hook in hooks}
    return out


def save(run_dir: Path, vectors: dict[str, np.ndarray], index: dict[str, Any]) -> None:
    """Write the directions and their JSON index into the run folder (atomically)."""
    from safetensors.numpy import save as st_save

    blob = st_save({k: np.asarray(v, dtype=np.float32) for k, v in vectors.items()})
    atomic_write_bytes(run_dir / f"{STEM}.safetensors", blob)
    atomic_write_json(run_dir / f"{STEM}.json", {"version": VERSION, **index})


def load(run_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The stored directions (float64) and index, or None when the run has none yet."""
    from safetensors.numpy import load_file

    path, index_path = run_dir / f"{STEM}.safetensors", run_dir / f"{STEM}.json"
    if not (path.is_file() and index_path.is_file()):
        return None
    index = read_json(index_path)
    if not isinstance(index, dict):
        raise DataError("expected a JSON object", str(index_path))
    if index.get("version") != VERSION:
        return None  # an older format: fitted again
    return {k: v.astype(np.float64) for k, v in load_file(str(path)).items()}, index


def unit(vectors: dict[str, np.ndarray], contrast: str, hook: str) -> list[np.ndarray]:
    """The two halves' unit directions at ``hook`` (a zero vector stays zero)."""
    out = []
    for f in (0, 1):
        v = vectors[f"{contrast}/{f}/{hook}"]
        n = float(np.linalg.norm(v))
        out.append(v / n if n > 0 else v)
    return out
