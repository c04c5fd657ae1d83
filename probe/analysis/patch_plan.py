"""What a patching study patches: the item pairs, their alignment, and the list of patches.

Aligned pairs (every pair's two prompts tokenize to the same length for this model) are
patched at every prompt position; otherwise only the shared suffix is, and the study is
labelled ``unaligned`` with scope ``shared suffix`` (see :mod:`probe.analysis.patching`).
Three identities are patched in every study and their deviations recorded, so each JSON
carries its own sanity check:
patching nothing gives the target; the last ``hook_resid_post`` at the readout positions
gives the source; and (aligned pairs only) every position of the embedding gives the source.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from probe.analysis import answers as ans
from probe.analysis import readout as ro
from probe.analysis.patching import (
    Patch,
    PromptPair,
    is_aligned,
    n_tail,
    prompt_tokens,
    resid_hooks,
)
from probe.engine.inference import Engine
from probe.errors import ConfigError


@dataclass
class Plan:
    """The patches of one study and how its positions were chosen."""

    alignment: str  # "aligned" (every pair tokenizes to equal lengths) or "unaligned"
    scope: str  # "every position" or "shared suffix (last k)"
    n_unaligned: int
    offsets: tuple[int, ...]  # prompt positions, one patch each (offsets from the end)
    answer: tuple[int, ...]  # option-tail columns, patched together (text/generate)
    resid: list[Patch] = field(default_factory=list)
    components: list[Patch] = field(default_factory=list)
    heads: list[Patch] = field(default_factory=list)
    identities: dict[str, Patch] = field(default_factory=dict)

    @property
    def all_positions(self) -> tuple[int, ...]:
        return self.offsets + self.answer

    def patches(self) -> list[Patch]:
        return self.resid + self.components + self.heads + list(self.identities.values())


def build_pairs(run: ans.RunData, engine: Engine, source: str, target: str,
                limit: int | None = None) -> tuple[list[PromptPair], dict[str, int]]:
    """Pairs for items with rows under both conditions and a defined readout (one per
    displayed option order of each item)."""
    pairs: list[PromptPair] = []
    skipped = {"missing_row": 0, "no_answer_pair": 0, "no_distinguishing_token": 0}
    for item in run.items:
        if run.row(item.item_id, source) is None or run.row(item.item_id, target) is None:
            skipped["missing_row"] += 1
            continue
        src, tgt = (ro.item_queries(run, engine, item, c) for c in (source, target))
        if not src or not tgt:
            skipped["no_answer_pair"] += 1
            continue
        if run.config.mode == "generate" and ro.differing_token(ro.pack(engine, [tgt[0]]), 0,
                                                                tgt[0]) is None:
            skipped["no_distinguishing_token"] += 1
            continue
        # One pair per displayed option order (counterbalanced runs), averaged per item.
        pairs += [PromptPair(item.item_id, s, t) for s, t in zip(src, tgt, strict=True)]
        if limit is not None and len({p.item_id for p in pairs}) >= limit:
            break
    return pairs, skipped


def plan(engine: Engine, pairs: list[PromptPair], positions: int | None) -> Plan:
    """Every position of aligned pairs (``positions`` None), else the last ``positions``."""
    loaded = engine.loaded
    n_unaligned = sum(not is_aligned(engine, p) for p in pairs)
    aligned = n_unaligned == 0 and positions is None
    if positions is not None and positions < 1:
        raise ConfigError(f"--positions must be >= 1, got {positions}")
    if aligned:
        k = max(len(prompt_tokens(engine, p.target)) for p in pairs)
    else:
        k = positions or 1
        from probe.analysis.patching import check_suffix

        check_suffix(engine, pairs, k)
    offsets = tuple(range(-k, 0))
    tail = max(n_tail(engine, p) for p in pairs)
    scope = "every position" if aligned else f"shared suffix (last {k})"
    out = Plan("unaligned" if n_unaligned else "aligned", scope, n_unaligned, offsets,
               tuple(range(tail)))
    n = loaded.n_layers
    out.resid = [Patch(h, (o,)) for h in resid_hooks(n) for o in offsets]
    out.resid += [Patch(h, out.answer) for h in resid_hooks(n)] if out.answer else []
    everywhere = out.all_positions
    out.components = [Patch(f"blocks.{L}.hook_{c}_out", everywhere)
                      for L in range(n) for c in ("attn", "mlp")]
    out.heads = [Patch(f"blocks.{L}.attn.hook_z", everywhere, h)
                 for L in range(n) for h in range(n_heads(engine))]
    out.identities = {
        "nothing": Patch("blocks.0.hook_resid_pre", ()),
        "final_layer_at_readout": Patch(f"blocks.{n - 1}.hook_resid_post", (-1, *out.answer))}
    if aligned:
        out.identities["everything_at_embedding"] = Patch("blocks.0.hook_resid_pre", everywhere)
    return out


def n_heads(engine: Engine) -> int:
    """Attention heads per layer of the bridged model."""
    return int(engine.loaded.bridge.cfg.n_heads)


IDENTITY_EXPECT = {"nothing": "target", "final_layer_at_readout": "source",
                   "everything_at_embedding": "source"}
