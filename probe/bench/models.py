"""The models and prompts a benchmark measures: bridged, plain copies, random-weight shapes."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from probe.bench.config import SHAPES
from probe.engine.models import DEFAULT_MODEL, LoadedModel
from probe.errors import ConfigError


def shape_config(shape: str, vocab_size: int, bos: int | None = None,
                 eos: int | None = None) -> Any:
    """The Hugging Face config of a named architecture (``SHAPES``) with this vocabulary."""
    from transformers import AutoConfig

    if shape not in SHAPES:
        raise ConfigError(f"--shape {shape!r}: known shapes are {', '.join(SHAPES)}")
    return AutoConfig.for_model("llama", vocab_size=vocab_size, bos_token_id=bos,
                                eos_token_id=eos, **SHAPES[shape])


def shape_tokenizer() -> Any:
    """The embedded model's tokenizer, or the saved copy ``$PROBE_SHAPE_TOKENIZER`` names (a
    folder from ``tokenizer.save_pretrained``: a GPU machine the GGUF cannot reach)."""
    from transformers import AutoTokenizer

    from probe.engine.models import _converted_dir, embedded_gguf

    folder = os.environ.get("PROBE_SHAPE_TOKENIZER")
    if folder:
        if not (Path(folder) / "tokenizer_config.json").is_file():
            raise ConfigError(f"PROBE_SHAPE_TOKENIZER={folder}: no tokenizer_config.json "
                              f"there (save one with tokenizer.save_pretrained)")
        return AutoTokenizer.from_pretrained(folder)
    return AutoTokenizer.from_pretrained(
        str(_converted_dir(DEFAULT_MODEL, embedded_gguf(DEFAULT_MODEL))))


def shape_model(shape: str, device: str, dtype: str, force: bool) -> LoadedModel:
    """A bridged random-weight model with the named architecture (e.g. Llama-2-7B), using
    the embedded model's tokenizer (so its vocabulary: 49152 tokens, not Llama's 32000)."""
    from transformers import AutoModelForCausalLM

    from probe.bench.config import SMALL_SHAPES
    from probe.engine.models import bridge_from_hf, resolve_dtype

    if not device.startswith("cuda") and not force and shape not in SMALL_SHAPES:
        raise ConfigError(f"--shape {shape} builds a ~7B-parameter model (about 14 GB in "
                          f"bfloat16; the plain-HF references share its weights); run it on a GPU "
                          f"with --device cuda, or pass --force")
    tokenizer = shape_tokenizer()
    config = shape_config(shape, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=resolve_dtype(dtype))
    return bridge_from_hf(f"{shape}-shape", model, tokenizer, device, dtype, source=shape)


@dataclass
class Prompts:
    """Rendered prompts of each kind, sorted longest first, with likelihood options."""

    generate: list[str]
    letter: list[str]
    letter_options: list[list[str]]
    text: list[str]
    text_options: list[list[str]]


def bench_prompts(loaded: LoadedModel, data_dir: str, n_items: int) -> Prompts:
    """``n_items`` BBQ items (spread over categories) under the baseline condition."""
    from probe.conditions.prompts import render
    from probe.conditions.registry import get_condition
    from probe.data.bbq import CATEGORIES, load_bbq
    from probe.engine.continuation import prompt_stem
    from probe.scoring.modes import mode_prefix, option_texts

    items, _ = load_bbq(Path(data_dir), limit=max(1, math.ceil(n_items / len(CATEGORIES))))
    items = items[:n_items]
    tok = loaded.tokenizer
    items.sort(key=lambda it: -len(tok(get_condition("baseline").build(it).final.user).input_ids))
    out: dict[str, tuple[list[str], list[list[str]]]] = {}
    for mode in ("generate", "letter", "text"):
        texts, options = [], []
        for item in items:
            final = get_condition("baseline").build(item).final
            prefix = final.assistant_prefix + mode_prefix(item, mode)
            rendered = render(tok, loaded.chat, [], final.user, prefix)
            texts.append(prompt_stem(rendered))
            options.append(option_texts(item, mode, rendered))
        out[mode] = (texts, options)
    return Prompts(out["generate"][0], *out["letter"], *out["text"])

