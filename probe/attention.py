"""An optional fast attention kernel for bridged models whose attention internals are unhooked.

TransformerLens's bridge re-implements attention step by step (explicit scores, softmax and
pattern) so that ``hook_attn_scores`` and ``hook_pattern`` can fire: eager attention, which
on a GPU is slower than PyTorch's fused ``scaled_dot_product_attention`` (sdpa). When no
hook inside attention is attached, nothing needs that detour: :func:`sdpa_attention` routes
each layer's attention to the wrapped Hugging Face module with ``sdpa`` for the duration
of a block. The attention block's ``hook_in``/``hook_out`` (so ``hook_attn_out``), the
projections' hooks and every residual-stream hook still fire; hooks that only the bridge's
own computation provides (scores, pattern, rotated q/k) would not, so a call that attaches
one runs with the bridge's attention instead (:func:`needs_bridge_attention`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from probe.errors import ConfigError

ATTENTION = ("eager", "sdpa")
# Hooks computed only by the bridge's own attention forward.
_BRIDGE_ONLY = ("hook_attn_scores", "hook_pattern", "hook_rot_q", "hook_rot_k",
                "hook_result", "hook_cos", "hook_sin")


def needs_bridge_attention(hook_names: Sequence[str]) -> bool:
    """Whether any of these hooks fires only inside the bridge's eager attention."""
    return any(name.rsplit(".", 1)[-1] in _BRIDGE_ONLY for name in hook_names)


def _attention_bridges(hf_model: Any) -> list[Any]:
    from transformer_lens.model_bridge.generalized_components import (
        position_embeddings_attention as pea,
    )

    layers = getattr(getattr(hf_model, "model", None), "layers", None)
    blocks = [getattr(layer, "self_attn", None) for layer in (layers or [])]
    if not blocks or not all(isinstance(b, pea.PositionEmbeddingsAttentionBridge) for b in blocks):
        raise ConfigError("--attention sdpa supports rotary decoder models (Llama, Mistral, "
                          "Qwen, SmolLM...) whose layers are model.layers[i].self_attn; use "
                          "--attention eager for this model")
    if getattr(hf_model.config, "attn_logit_softcapping", None):
        raise ConfigError("--attention sdpa cannot apply attention logit soft-capping "
                          "(Gemma 2); use --attention eager")
    return blocks


def check_sdpa(hf_model: Any) -> None:
    """Raise ConfigError now if :func:`sdpa_attention` cannot serve this model."""
    _attention_bridges(hf_model)


_ACTIVE: set[int] = set()  # models inside sdpa_attention now (nested blocks do nothing)


def sdpa_active(hf_model: Any) -> bool:
    """Whether ``hf_model`` is inside :func:`sdpa_attention` now."""
    return id(hf_model) in _ACTIVE


@contextmanager
def sdpa_attention(hf_model: Any) -> Iterator[None]:
    """Within the block, attention runs in the wrapped HF modules with sdpa (re-entrant)."""
    if id(hf_model) in _ACTIVE:
        yield
        return
    blocks = _attention_bridges(hf_model)
    config = hf_model.config
    before = config._attn_implementation
    for block in blocks:
        # object.__setattr__: the bridge forwards attribute writes to the wrapped module.
        object.__setattr__(block, "forward", _hf_forward(block))
    config._attn_implementation = "sdpa"  # the HF modules and mask builder read this
    _ACTIVE.add(id(hf_model))
    try:
        yield
    finally:
        _ACTIVE.discard(id(hf_model))
        config._attn_implementation = before
        for block in blocks:
            object.__delattr__(block, "forward")


def _hf_forward(block: Any) -> Any:
    hf_attn = block.original_component

    def forward(*args: Any, **kwargs: Any) -> tuple[Any, None]:
        hidden = kwargs.pop("hidden_states") if "hidden_states" in kwargs else args[0]
        out, _ = hf_attn(block.hook_in(hidden), **kwargs)
        return block.hook_out(out), None

    return forward
