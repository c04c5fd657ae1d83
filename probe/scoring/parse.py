"""Turn a model's free text into an answer: a BBQ option index or a Winogender gender.

The rule is *never guess*: an answer is returned only when the text states one option
(by letter, by text, or after "the answer is"); text naming two options without a final
statement parses to ``None``. Saying that the answer cannot be known ("It is not possible
to tell", "there is not enough information") chooses BBQ's unknown option; the phrasings
and their scope are in :mod:`probe.scoring.unknown`.
"""

from __future__ import annotations

import re

from probe.data.items import GENDERS, PRONOUN_FAMILIES
from probe.scoring.unknown import is_unknown_wording, mask_scopes, straighten, unknown_scopes

_MARKER = re.compile(
    r"(?<!can't )(?<!cannot )\banswer(?:\s+(?:is|would be|will be|should be))?\s*[:\-]?\s*",
    re.IGNORECASE)
_PUNCT = " \t\n.,;:!?\"'*"


def _core(option: str) -> str:
    """Option text without a leading "The ", lower-cased, for matching."""
    return re.sub(r"^the\s+", "", option.strip(), flags=re.IGNORECASE).lower().strip(_PUNCT)


def _text_pattern(option: str) -> re.Pattern[str]:
    return re.compile(r"(?<!\w)(?:the\s+)?" + re.escape(_core(option)) + r"(?!\w)",
                      re.IGNORECASE)


def _unknown_index(options: tuple[str, ...] | list[str]) -> int | None:
    hits = [i for i, opt in enumerate(options) if is_unknown_wording(opt)]
    return hits[0] if len(hits) == 1 else None


def _named(options: tuple[str, ...] | list[str]) -> list[int]:
    """Indices of the options matched by their own text: all but the unknown one, which
    is matched by the table of unknown phrasings (so "not known to be" is no answer)."""
    unknown = _unknown_index(options)
    return [i for i in range(len(options)) if i != unknown]


def _letter_at_start(text: str, n: int) -> int | None:
    """Index of a letter answer opening ``text``: "(a)", "a)", "A.", "b:", "B because"."""
    letters = "abcdefghij"[:n]
    m = re.match(rf"\s*\(([{letters}])\)|\s*([{letters}])(?:[).:,;!]|\s*$)", text, re.I)
    if m is None:
        # a bare letter before a word, except "a"/"A", which may be the article
        m = re.match(rf"\s*([{letters[1:]}])\s+\w", text, re.I)
    if m is None:
        return None
    return letters.index(next(g for g in m.groups() if g).lower())


def _option_at_start(text: str, options: tuple[str, ...] | list[str]) -> int | None:
    """The option ``text`` opens with: a named option's text, or an unknown statement
    whose clause names no other option ("that we cannot tell whether X or Y")."""
    hits = {i for i in _named(options) if _text_pattern(options[i]).match(text.lstrip())}
    if not hits:
        clause = re.split(r"[.!?;\n]", text, maxsplit=1)[0]
        unknown = _unknown_index(options)
        if unknown is not None and _mentions(clause, options) == {unknown}:
            hits.add(unknown)
    return hits.pop() if len(hits) == 1 else None


def _mentions(text: str, options: tuple[str, ...] | list[str]) -> set[int]:
    """Every option the text names: by parenthesised letter, by its text, or (the unknown
    option) by an unknown phrasing; options named inside an unknown statement's clause
    are the alternatives it declines to choose between, and do not count."""
    found: set[int] = set()
    unknown = _unknown_index(options)
    if unknown is not None:
        scopes = unknown_scopes(text)
        if scopes:
            found.add(unknown)
            text = mask_scopes(text, scopes)
    letters = "abcdefghij"[: len(options)]
    found |= {letters.index(c.lower()) for c in re.findall(rf"\(([{letters}])\)", text, re.I)}
    found |= {i for i in _named(options) if _text_pattern(options[i]).search(text)}
    return found


def parse_bbq_answer(text: str, options: tuple[str, ...] | list[str],
                     allow_index: bool = False) -> int | None:
    """The option index ``text`` states, or None when it states none or is ambiguous.

    Accepts "(a)", "a)", "A.", "Answer: b", "... the answer is (c)", the option text (with
    or without "The "), and with ``allow_index`` a bare digit. Precedence: the whole text
    is one option; the last "answer is" statement; a leading letter (void if another
    parenthesised letter appears); else the single option mentioned.
    """
    text = straighten(text)
    stripped = text.strip().strip(_PUNCT)
    if not stripped:
        return None
    if allow_index and re.fullmatch(r"\d+", stripped):
        return int(stripped) if int(stripped) < len(options) else None
    whole = [i for i, opt in enumerate(options) if _core(opt) == _core(stripped)]
    if len(whole) == 1:
        return whole[0]
    for marker in reversed(list(_MARKER.finditer(text))):
        rest = text[marker.end():]
        stated = _letter_at_start(rest, len(options))
        if stated is None:
            stated = _option_at_start(rest, options)
        if stated is not None:
            return stated
    lead = _letter_at_start(text, len(options))
    if lead is not None:
        letters = "abcdefghij"[: len(options)]
        others = {c.lower() for c in re.findall(rf"\(([{letters}])\)", text, re.I)}
        return lead if others <= {letters[lead]} else None
    mentioned = _mentions(text, options)
    return mentioned.pop() if len(mentioned) == 1 else None


_PRONOUNS = {word: gender for gender in GENDERS for word in PRONOUN_FAMILIES[gender].values()}
_PRONOUN_RE = re.compile(r"\b(" + "|".join(sorted(_PRONOUNS, key=len, reverse=True)) + r")\b",
                         re.IGNORECASE)


def parse_pronoun(text: str) -> str | None:
    """Gender of the first pronoun (he/him/his, she/her, they/them/their) in ``text``."""
    match = _PRONOUN_RE.search(text)
    return _PRONOUNS[match.group(1).lower()] if match else None
