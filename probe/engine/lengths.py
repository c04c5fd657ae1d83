"""Prompt length against the model's context, without tokenizing texts far too long for it.

A token covers at most as many characters of a text as its longest vocabulary entry has
(byte-level BPE spells each byte as one character, SentencePiece each character as one,
byte-fallback tokens like ``<0xE2>`` cover one byte with six), so a text of ``c``
characters has at least ``c / longest`` tokens. A text that this bound already puts over
the budget is refused without running the tokenizer over it: a 20 MB context would
otherwise take minutes and gigabytes only to be marked too long. (The bound assumes the
tokenizer's normalizer does not delete characters, true of the byte-level and
SentencePiece tokenizers of causal LMs; texts under the bound are counted exactly.)
"""

from __future__ import annotations

import math
from typing import Any

# id(tokenizer) -> its longest vocabulary entry, in characters.
_LONGEST: dict[int, int] = {}


def longest_token(tokenizer: Any) -> int:
    """Characters in the longest entry of ``tokenizer``'s vocabulary (added tokens too)."""
    key = id(tokenizer)
    if key not in _LONGEST:
        _LONGEST[key] = max(1, max((len(t) for t in tokenizer.get_vocab()), default=1))
    return _LONGEST[key]


def count_tokens(engine: Any, text: str, budget: int) -> tuple[int, bool]:
    """``(n, exact)``: the token count of ``text``, or, when ``text`` is provably longer
    than ``budget`` tokens, a lower bound on it (``exact`` False) found without tokenizing."""
    longest = longest_token(engine.tokenizer)
    if len(text) > longest * budget:
        return math.ceil(len(text) / longest), False
    return engine.n_tokens(text), True
