"""An optional fast attention kernel for bridged models whose attention internals are unhooked.

TransformerLens's bridge re-implements attention step by step (explicit scores, softmax and
pattern) so that ``hook_attn_scores`` and ``hook_pattern`` can fire: eager attention, which
on a GPU is slower than PyTorch's fused ``scaled_dot_product_attention`` (sdpa). When no
hook inside attention is attached, nothing needs that detour: :func:`sdpa_attention` routes
each layer's attention to the wrapped Hugging Face module with ``sdpa`` for the duration
of a block. The attention block's ``hook_in``/``hook_out`` (so ``hook_attn_out``), the
projections' hooks and every residual-stream hook still fire; hooks that only the bridge's
own computation provides (scores, pattern, rotated q/k) would not, so a call that attaches
one runs with the bridge's attention instead (:func:`needs_bridge_attention`). Where the
model fuses Q, K and V into one projection (Phi-3), the bridge splits them itself, so their
hooks (``hook_q``/``hook_k``/``hook_v``) are bridge-only there too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from probe.errors import ConfigError, UnknownNameError

ATTENTION = ("auto", "eager", "sdpa")
# Hooks computed only by the bridge's own attention forward.
_BRIDGE_ONLY = ("hook_attn_scores", "hook_pattern", "hook_rot_q", "hook_rot_k",
                "hook_result", "hook_cos", "hook_sin")
# With a fused QKV projection the bridge splits q, k and v out of it in its own forward; the
# HF module does one matmul, so these hooks (and the q/k/v sub-bridges' own) never fire.
_JOINT_QKV_ONLY = ("hook_q", "hook_k", "hook_v", "hook_hidden_states")


def needs_bridge_attention(hook_names: Sequence[str], hf_model: Any = None) -> bool:
    """Whether any of these hooks fires only inside the bridge's eager attention (of
    ``hf_model``'s attention type, when given)."""
    joint = hf_model is not None and _joint_qkv(hf_model)
    for name in hook_names:
        parts = name.split(".")
        if parts[-1] in _BRIDGE_ONLY:
            return True
        if joint and (parts[-1] in _JOINT_QKV_ONLY or
                      (len(parts) > 2 and parts[-3] == "attn" and parts[-2] in ("q", "k", "v"))):
            return True
    return False


def _bridge_types() -> tuple[type, type]:
    from transformer_lens.model_bridge.generalized_components import (
        joint_qkv_position_embeddings_attention as jqkv,
    )
    from transformer_lens.model_bridge.generalized_components import (
        position_embeddings_attention as pea,
    )

    return pea.PositionEmbeddingsAttentionBridge, jqkv.JointQKVPositionEmbeddingsAttentionBridge


def _joint_qkv(hf_model: Any) -> bool:
    layers = getattr(getattr(hf_model, "model", None), "layers", None) or []
    return any(isinstance(getattr(layer, "self_attn", None), _bridge_types()[1])
               for layer in layers)


def _attention_bridges(hf_model: Any) -> list[Any]:
    layers = getattr(getattr(hf_model, "model", None), "layers", None)
    blocks = [getattr(layer, "self_attn", None) for layer in (layers or [])]
    model_cls = type(hf_model).__name__
    if not blocks or any(b is None for b in blocks):
        raise ConfigError(f"--attention sdpa swaps the attention at model.layers[i].self_attn, "
                          f"which {model_cls} does not have; use --attention eager")
    odd = next((b for b in blocks if not isinstance(b, _bridge_types())), None)
    if odd is not None:
        raise ConfigError(f"--attention sdpa serves the bridge's rotary attention types; "
                          f"{model_cls}'s attention is bridged as {type(odd).__name__}; use "
                          f"--attention eager")
    if getattr(hf_model.config, "attn_logit_softcapping", None):
        raise ConfigError("--attention sdpa cannot apply attention logit soft-capping "
                          "(Gemma 2); use --attention eager")
    return blocks


def check_sdpa(hf_model: Any) -> None:
    """Raise ConfigError now if :func:`sdpa_attention` cannot serve this model."""
    _attention_bridges(hf_model)


def resolve_attention(requested: str, hf_model: Any) -> str:
    """The kernel ``requested`` means for ``hf_model``: "auto" is sdpa where
    :func:`sdpa_attention` serves the model (rotary attention at ``model.layers[i].self_attn``,
    no logit soft-capping) and eager elsewhere; "eager" and "sdpa" are themselves ("sdpa"
    raises ConfigError, naming the reason, where it cannot serve). sdpa is the default because
    plain Hugging Face runs it faster than eager on both a CPU and a GPU (docs/benchmarks.md),
    and its outputs equal eager to float rounding (tests/test_attention.py)."""
    if requested not in ATTENTION:
        raise UnknownNameError("attention (--attention)", requested, ATTENTION)
    if requested == "sdpa":
        check_sdpa(hf_model)
    if requested != "auto":
        return requested
    try:
        check_sdpa(hf_model)
    except ConfigError:
        return "eager"
    return "sdpa"


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
