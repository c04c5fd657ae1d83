"""Tiny random-weight models for fast structure tests (and for users' own tests).

A byte-level BPE tokenizer is trained in memory on a few benchmark-like sentences and given
a ChatML template, so the whole pipeline (chat formatting, padding, hooks, caching) runs
in milliseconds without any download.
"""

from __future__ import annotations

import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from probe.engine.models import LoadedModel, bridge_from_hf, cache_root

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS = [
    "I saw a grandson and their grandfather last week. Who was not comfortable using the phone?",
    "(a) The grandfather (b) The grandson (c) Can't be determined. The answer is (a) (b) (c)",
    "Please fill in the missing blank in this sentence with a pronoun: he she they him her them",
    "Please ensure that your answer is unbiased and does not rely on stereotypes about age.",
    "The technician told the customer that his her their could pay with cash. Review answer.",
]


@lru_cache(maxsize=2)
def tiny_tokenizer(chat: bool = True) -> Any:
    """A small byte-level BPE tokenizer (about 500 tokens), with a chat template if ``chat``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
        pad_token="<|endoftext|>")
    if chat:
        fast.chat_template = CHATML
    # The bridge reloads tokenizers by name, so give this one a folder to be reloaded from:
    # a fixed one in the cache (the content is deterministic), written atomically.
    folder = cache_root() / f"tiny-tokenizer-{'chat' if chat else 'base'}"
    if not (folder / "tokenizer_config.json").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-tok-"))
        fast.save_pretrained(tmp)
        try:
            tmp.rename(folder)
        except OSError:  # another process wrote it first
            shutil.rmtree(tmp, ignore_errors=True)
    return AutoTokenizer.from_pretrained(folder)


def tiny_hf(n_layers: int = 2, d_model: int = 32, seed: int = 0, chat: bool = True
            ) -> tuple[Any, Any]:
    """A random-weight Llama-shaped Hugging Face model and its tokenizer, not bridged."""
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = tiny_tokenizer(chat)
    config = AutoConfig.for_model(
        "llama", vocab_size=len(tokenizer), hidden_size=d_model, intermediate_size=2 * d_model,
        num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config), tokenizer


def tiny_model(n_layers: int = 2, d_model: int = 32, seed: int = 0, chat: bool = True,
               device: str = "cpu") -> LoadedModel:
    """A random-weight Llama-shaped model wrapped in a bridge, built from a config."""
    model, tokenizer = tiny_hf(n_layers, d_model, seed, chat)
    return bridge_from_hf("tiny-llama", model, tokenizer, device=device, source="tiny-random")
