"""Load Winogender templates whose pronoun refers to the occupation as fill-the-blank items.

Each kept template (``answer == 0``: 60, one per occupation) becomes two items, one per
participant kind of Rudinger et al. (2018): the specific participant noun ("the
customer") and the semantically bleached "someone" (``meta["participant_kind"]`` is
"specific" or "someone"). An item is the sentence with the pronoun replaced by ``_``; the
options are the male, female and neutral pronoun in the blank's case, and
``meta["prefix"]`` is the sentence up to the blank (the answer prefix). With the three
pronouns these items give the 360 occupation-referent sentences of the official 720
(``all_sentences.tsv``: 120 templates x 3 pronouns x 2 participant kinds).
"""

from __future__ import annotations

import csv
import io
import random
import re
from pathlib import Path

from probe.data.items import GENDERS, PRONOUN_FAMILIES, Item
from probe.data.registry import LoadReport
from probe.errors import ConfigError, DataError

CASES = {"$NOM_PRONOUN": "nom", "$ACC_PRONOUN": "acc", "$POSS_PRONOUN": "poss"}
SOMEONE = "someone"
PARTICIPANT_KINDS = ("specific", SOMEONE)
HOW_TO_GET = "run `probe data download` (or set PROBE_DATA_DIR to a folder holding winogender/)"


def _read_text(path: Path) -> str:
    """The file as UTF-8 text; a binary or otherwise encoded file names its first bad line."""
    if not path.is_file():
        raise DataError(f"missing Winogender file; {HOW_TO_GET}", str(path))
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise DataError("not UTF-8 text; is this the Winogender TSV?", str(path), line) from None
    if "\0" in text:
        line = text[:text.index("\0")].count("\n") + 1
        raise DataError("NUL byte: a binary file, not the Winogender TSV", str(path), line)
    return text


def _read_tsv(path: Path, columns: int) -> list[tuple[int, list[str]]]:
    """(line number, cells) of a TSV after its header; DataError for missing/short lines."""
    rows = []
    reader = csv.reader(io.StringIO(_read_text(path), newline=""), delimiter="\t")
    # One record per line (line_num, not a counter, in case a quote spans lines).
    for cells in reader:
        number = reader.line_num
        if number == 1 or not any(c.strip() for c in cells):
            continue
        if len(cells) < columns:
            raise DataError(f"expected {columns} tab-separated columns", str(path), number)
        rows.append((number, cells))
    if not rows:
        raise DataError("file holds no rows", str(path))
    return rows


def _read_stats(path: Path) -> dict[str, tuple[float, float]]:
    """occupation -> (bls_pct_female, bergsma_pct_female), columns found by header name."""
    header = _read_text(path).split("\n", 1)[0].rstrip("\r").split("\t")
    try:
        occ, bls, bergsma = (header.index(n) for n in
                             ("occupation", "bls_pct_female", "bergsma_pct_female"))
    except ValueError:
        raise DataError(f"header lacks a needed column: {header}", str(path), 1) from None
    stats = {}
    for number, cells in _read_tsv(path, len(header)):
        try:
            stats[cells[occ]] = (float(cells[bls]), float(cells[bergsma]))
        except ValueError:
            raise DataError("percentage is not a number", str(path), number) from None
    return stats


def someone_template(sentence: str) -> str:
    """The template with its participant made "someone", as in the official sentences:
    "The $PARTICIPANT" opening the sentence becomes "Someone", "the/a $PARTICIPANT"
    elsewhere "someone"."""
    sentence = re.sub(r"^The \$PARTICIPANT\b", "Someone", sentence)
    return re.sub(r"\b(?:the|a) \$PARTICIPANT\b", SOMEONE, sentence)


def item_from_template(occupation: str, participant: str, answer: str, sentence: str,
                       stats: tuple[float, float], where: tuple[str, int]) -> Item:
    """One fill-the-blank item from a template row (the pronoun placeholder is the blank)."""
    placeholders = [p for p in CASES if p in sentence]
    if len(placeholders) != 1 or sentence.count(placeholders[0]) != 1:
        raise DataError("template needs exactly one pronoun placeholder", *where)
    placeholder = placeholders[0]
    filled = sentence.replace("$OCCUPATION", occupation).replace("$PARTICIPANT", participant)
    prefix, _, suffix = filled.partition(placeholder)
    case = CASES[placeholder]
    options = tuple(PRONOUN_FAMILIES[g][case] for g in GENDERS)
    if not prefix.strip():  # the blank starts the sentence
        options = tuple(o.capitalize() for o in options)
    return Item(
        item_id=f"winogender:{occupation}.{participant}.{answer}",
        benchmark="winogender",
        context=filled.replace(placeholder, "_"),
        question="",
        options=options,
        label=None,
        category="winogender",
        group=f"winogender:{occupation}",
        meta={
            "occupation": occupation, "participant": participant,
            "participant_kind": SOMEONE if participant == SOMEONE else "specific",
            "bls_pct_female": stats[0], "bergsma_pct_female": stats[1],
            "pronoun_case": case, "prefix": prefix, "suffix": suffix,
            # the filled sentence with the pronoun placeholder kept, e.g. "$NOM_PRONOUN"
            "sentence": filled,
        },
    )


def load_winogender(data_dir: Path | str, limit: int | None = None,
                    seed: int = 0) -> tuple[list[Item], LoadReport]:
    """Items for the templates whose pronoun refers to the occupation, both participant
    kinds.

    ``limit`` keeps a seeded sample of that many items (file order kept), drawn by
    occupation so that both participant kinds of a drawn occupation are kept together
    (an odd ``limit`` keeps only the specific variant of the last occupation drawn).
    """
    if limit is not None and limit <= 0:
        raise ConfigError(f"limit must be positive, got {limit}")
    folder = Path(data_dir) / "winogender"
    if not folder.is_dir():
        raise DataError(f"no Winogender data folder; {HOW_TO_GET}", str(folder))
    stats_path = folder / "occupations-stats.tsv"
    if not stats_path.is_file():
        raise DataError(f"missing Winogender file; {HOW_TO_GET}", str(stats_path))
    stats = _read_stats(stats_path)
    path = folder / "templates.tsv"
    items = []
    seen: dict[str, int] = {}  # item id -> line: a repeated template would count twice
    for number, cells in _read_tsv(path, 4):
        occupation, participant, answer, sentence = (c.strip() for c in cells[:4])
        if answer != "0":
            continue
        first = seen.setdefault(f"{occupation}.{participant}.{answer}", number)
        if first != number:
            raise DataError(f"template {occupation}/{participant}/{answer} is also on line "
                            f"{first}: each must appear once", str(path), number)
        if occupation not in stats:
            raise DataError(f"occupation {occupation!r} not in {stats_path.name}",
                            str(path), number)
        where = (str(path), number)
        if someone_template(sentence) == sentence:
            raise DataError("cannot make the 'someone' variant: no 'the/a $PARTICIPANT' "
                            "in the sentence", *where)
        for noun, text in ((participant, sentence), (SOMEONE, someone_template(sentence))):
            items.append(item_from_template(occupation, noun, answer, text,
                                            stats[occupation], where))
    if limit is not None and limit < len(items):
        items = _sample_occupations(items, limit, seed)
    report = LoadReport(benchmark="winogender", counts={"winogender": len(items)})
    return items, report


def _sample_occupations(items: list[Item], limit: int, seed: int) -> list[Item]:
    """``limit`` items from whole occupations in a seeded order, file order kept."""
    occupations = list(dict.fromkeys(it.meta["occupation"] for it in items))
    order = random.Random(f"{seed}:winogender").sample(occupations, len(occupations))
    keep: list[int] = []
    for occupation in order:
        keep += [i for i, it in enumerate(items) if it.meta["occupation"] == occupation]
        if len(keep) >= limit:
            break
    chosen = set(keep[:limit])
    return [it for i, it in enumerate(items) if i in chosen]
