"""How the scored turn is asked and read in each mode (``generate``, ``letter``, ``text``).

Kept apart from the engine so that a new mode or benchmark needs no change to batching.
"""

from __future__ import annotations

from probe.conditions.registry import LETTERS
from probe.data.items import GENDERS, Item
from probe.engine.continuation import continuation

# Appended to the condition's answer cue (Ganguli et al.'s "The answer is" for BBQ).
LETTER_PREFIX = " ("


def mode_prefix(item: Item, mode: str) -> str:
    """Text the scored answer is made to begin with, on top of the condition's prefix
    (which for BBQ ends with an answer cue, e.g. "The answer is")."""
    return LETTER_PREFIX if mode == "letter" and item.benchmark == "bbq" else ""


def answer_texts(item: Item, mode: str) -> list[str]:
    """Each option as the scored answer writes it: a letter in BBQ letter mode, else its text."""
    if item.benchmark == "bbq" and mode == "letter":
        return list(LETTERS[: len(item.options)])
    return list(item.options)


def option_texts(item: Item, mode: str, prompt: str) -> list[str]:
    """The continuations of ``prompt`` whose likelihood is compared in the likelihood modes
    (joined as :mod:`probe.engine.continuation` says: they follow ``prompt_stem(prompt)``)."""
    return [continuation(prompt, a) for a in answer_texts(item, mode)]


def pred_from_scores(item: Item, scores: list[float]) -> int | str:
    """The answer a likelihood mode picks: the option with the highest score."""
    best = max(range(len(scores)), key=lambda i: scores[i])
    return GENDERS[best] if item.benchmark == "winogender" else best


def pred_from_text(item: Item, text: str) -> int | str | None:
    """Parse a generated answer; None when it cannot be read (never guessed)."""
    from probe.scoring.parse import parse_bbq_answer, parse_pronoun

    if item.benchmark == "winogender":
        return parse_pronoun(text)
    return parse_bbq_answer(text, list(item.options))
