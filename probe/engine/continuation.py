"""Where a prompt ends and an answer begins: one natural text, split in one place.

Byte-level BPE and SentencePiece tokenizers fold the space before a word into the word's
token (" he", "▁he"). A prompt that keeps a trailing space ("... told the customer that ")
followed by an option tokenized on its own ("he") makes the model score ``[" that", " ",
"he"]``, a sequence it almost never saw, instead of the natural ``[" that", " he"]``; the
pronoun log-probs then sit near -10 instead of -1.5 to -6 and every Winogender number moves.

The rule, applied to every benchmark and mode:

1. **Text.** The natural answer text is the prompt followed by the option as a person would
   write it. Trailing spaces of the prompt move onto the option ("that" + " he"); an option
   that follows a word or closing punctuation gets a space ("Assistant:" + " The grandson");
   after a newline or an opening bracket ("The answer is (" + "a") it gets none. Generation
   starts from the same stem, so the model writes " he" itself.
2. **Tokens.** Each option's token ids are the tail of the tokenization of prompt+option as
   *one* string, from the first token where it differs from the prompt's own tokenization
   (the earliest such token over the options, so that all options share one prompt). An
   option is never tokenized on its own, so a tokenizer that merges across the boundary
   (SentencePiece's "▁(a") is scored on the tokens it would really produce.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# After these an option follows without a space ("(a", "\nThe"); after a letter, a digit or
# closing punctuation ("Assistant:", "[/INST]") a space comes first. After anything else
# (e.g. ">" of a special token ending a chat template) the option is joined as it is.
_SPACE_AFTER = ".,:;!?)]"


def prompt_stem(prompt: str) -> str:
    """The prompt as it is fed to the model: without trailing spaces (they belong to the
    answer's first token). Newlines stay: chat templates end their assistant header in one."""
    return prompt.rstrip(" ")


def continuation(prompt: str, option: str) -> str:
    """The text that follows :func:`prompt_stem` when ``option`` answers ``prompt``."""
    stem = prompt_stem(prompt)
    moved = prompt[len(stem):]
    if moved or not stem or option[:1].isspace():
        return moved + option
    last = stem[-1]
    return " " + option if last.isalnum() or last in _SPACE_AFTER else option


def join_answer(prefix: str, generated: str) -> str:
    """An assistant turn's text: its prefix and the generated answer, joined naturally
    (a decoded answer may or may not keep its leading space, depending on the tokenizer)."""
    if not prefix.strip():
        return generated.strip()
    return (prompt_stem(prefix) + continuation(prefix, generated.lstrip(" "))).strip()


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def _common(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of two id lists."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def option_token_ids(tokenizer: Any, prompt: str, continuations: Sequence[str]
                     ) -> tuple[list[int], list[list[int]]]:
    """The prompt's ids and each option's ids, cut from the joint tokenizations.

    For every option ``k``: ``prompt_ids + option_ids[k] == tokenize(prompt + continuations[k])``
    exactly, and ``prompt_ids`` is a prefix of ``tokenize(prompt)`` (shorter only when an
    option merges with the prompt's last token). ``prompt`` should already be a stem and
    ``continuations`` come from :func:`continuation`; text carries its own special tokens.
    """
    base = _ids(tokenizer, prompt)
    joints = [_ids(tokenizer, prompt + c) for c in continuations]
    cut = min([len(base), *(_common(base, j) for j in joints)])
    tails = [j[cut:] for j in joints]
    for text, tail in zip(continuations, tails, strict=True):
        if not tail:
            raise ValueError(f"option {text!r} adds no token to its prompt")
    return base[:cut], tails
