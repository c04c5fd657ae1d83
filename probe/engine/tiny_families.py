"""Tiny random-weight models of each architecture family probe is verified on, built offline.

Each family's Hugging Face config class gets a 2-layer, ``d_model`` 32 shape and the tiny
tokenizer of :mod:`probe.testing`, so a model builds in well under a second with no
download. The families with sliding-window attention get a window shorter than a chat
prompt, so a test on them exercises the window (see :mod:`probe.engine.packing`).
:data:`REFUSED` holds configurations that probe refuses, with the reason, for the tests
that check each refusal.
"""

from __future__ import annotations

from typing import Any

import torch

WINDOW = 8  # tokens: shorter than every test prompt, so sliding layers drop context

_DECODER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2}
# A window on every layer (Mistral, Phi-3); one full and one sliding layer (Qwen, Gemma-2).
_ALL_SLIDING = {"sliding_window": WINDOW}
_MIXED = {"use_sliding_window": True, "sliding_window": WINDOW, "max_window_layers": 1}

FAMILIES: dict[str, dict[str, Any]] = {
    "gpt2": {"n_embd": 32, "n_layer": 2, "n_head": 4},
    "olmo": _DECODER,
    "olmo2": _DECODER,
    "llama": _DECODER,
    "mistral": {**_DECODER, **_ALL_SLIDING},
    "qwen2": {**_DECODER, **_MIXED},
    "qwen3": {**_DECODER, **_MIXED, "head_dim": 8},
    "gemma": {**_DECODER, "head_dim": 8},
    "gemma2": {**_DECODER, "head_dim": 8, "sliding_window": WINDOW},
    "gemma3_text": {**_DECODER, "head_dim": 8, "sliding_window": WINDOW,
                    "layer_types": ["sliding_attention", "full_attention"]},
    "phi": {**_DECODER, "partial_rotary_factor": 0.5},
    "phi3": {**_DECODER, **_ALL_SLIDING},
    "gpt_neox": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                 "num_attention_heads": 4},
    "opt": {"hidden_size": 32, "ffn_dim": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "word_embed_proj_dim": 32},
    "falcon": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4},
}

# (family, config overrides, what the refusal says): built, then refused by probe.
REFUSED: dict[str, tuple[str, dict[str, Any], str]] = {
    "falcon-new-decoder": ("falcon", {"new_decoder_architecture": True, "num_kv_heads": 2,
                                      "multi_query": False}, "new_decoder_architecture"),
    "falcon-new-decoder-mqa": ("falcon", {"new_decoder_architecture": True, "num_kv_heads": 2},
                               "new_decoder_architecture"),
}


def tiny_family_hf(family: str, seed: int = 0, **overrides: Any) -> tuple[Any, Any]:
    """A random-weight Hugging Face model of ``family`` (a key of :data:`FAMILIES`, or any
    model type with ``overrides``) and the tiny chat tokenizer; eager attention, eval mode."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from probe.testing import tiny_tokenizer

    tokenizer = tiny_tokenizer(True)
    config = AutoConfig.for_model(
        family, vocab_size=len(tokenizer), max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **{**FAMILIES.get(family, {}), **overrides})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    # Saved checkpoints name their class here, and the bridge picks its adapter by it.
    model.config.architectures = [type(model).__name__]
    return model, tokenizer
