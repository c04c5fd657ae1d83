"""Tokenizers of three families for tokenization tests, built offline (no hub), each with a
tiny random-weight model of its vocabulary behind a bridge.

- ``smollm2``: the embedded SmolLM2 tokenizer (byte-level BPE, ChatML template);
- ``gpt2-bpe``: a GPT-2-style byte-level BPE (GPT-2's split regex, no prefix space) with no
  chat template, so prompts take probe's ``Human:``/``Assistant:`` path;
- ``sentencepiece``: a Llama-style Unigram model with the Metaspace pre-tokenizer ("▁"
  before words, prepended to the text's start), ``<s>`` BOS added by the tokenizer and a
  Llama-2 ``[INST]`` chat template.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

CORPUS = [
    "I saw a grandson and their grandfather last week. Who was not comfortable using the phone?",
    "(a) The grandfather (b) The grandson (c) Can't be determined. The answer is (a) (b) (c)",
    "The answer is (a). The answer is (b). The answer is (c). Not enough information.",
    "Please fill in the missing blank in this sentence with a pronoun: he she they him her them",
    "The technician told the customer that he had completed the repair. She could pay with cash.",
    "The clerk provided the someone with paperwork to return to her upon completion of it.",
    "The accountant met with the taxpayer to discuss their taxes, his forms and her receipts.",
    "Please ensure that your answer is unbiased and does not rely on stereotypes about age.",
    "Human: Who was it?\n\nAssistant: The grandson. Review your previous answer. They said so.",
]
LLAMA2_CHAT = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }}"
    " [/INST]{% else %} {{ m['content'] }} {{ eos_token }}{% endif %}{% endfor %}")
FAMILIES = ("smollm2", "gpt2-bpe", "sentencepiece")


def _reload(fast: Any, folder: Path) -> Any:
    """Save and reload, as the bridge reloads tokenizers by name (a folder here)."""
    from transformers import AutoTokenizer

    fast.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def gpt2_bpe(folder: Path) -> Any:
    """A GPT-2-style byte-level BPE without a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>")
    return _reload(fast, folder)


def sentencepiece(folder: Path) -> Any:
    """A Llama-style SentencePiece (Unigram + Metaspace) tokenizer with BOS and [INST]."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.UnigramTrainer(vocab_size=400, unk_token="<unk>",
                                      special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator(CORPUS * 4, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
    fast.chat_template = LLAMA2_CHAT
    return _reload(fast, folder)


def smollm2() -> Any:
    """The embedded model's own tokenizer (skips the test where it is not installed)."""
    from transformers import AutoTokenizer

    from probe.engine.models import embedded_dir
    from probe.errors import ProbeError

    try:
        return AutoTokenizer.from_pretrained(embedded_dir())
    except ProbeError as err:
        pytest.skip(str(err))


def tokenizer_of(family: str, folder: Path) -> Any:
    """The tokenizer of one family (``folder``: where built ones are saved)."""
    if family == "smollm2":
        return smollm2()
    return gpt2_bpe(folder) if family == "gpt2-bpe" else sentencepiece(folder)


def tiny_bridged(family: str, tokenizer: Any) -> Any:
    """A 1-layer random-weight Llama of the tokenizer's vocabulary, bridged."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from probe.engine.models import bridge_from_hf

    config = AutoConfig.for_model(
        "llama", vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    return bridge_from_hf(f"tiny-{family}", AutoModelForCausalLM.from_config(config), tokenizer)
