"""Winogender loading: blanks, pronoun options, occupation statistics."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from probe.data.items import GENDERS, PRONOUN_FAMILIES
from probe.data.winogender import load_winogender
from probe.errors import ConfigError, DataError
from tests.conftest_data import shared_data_dir

STATS = "occupation\tbergsma_pct_female\tbls_pct_female\tbls_year\n"


def _write(tmp_path: Path, templates: list[str], stats: str = STATS) -> Path:
    folder = tmp_path / "winogender"
    folder.mkdir(parents=True, exist_ok=True)
    header = "occupation(0)\tother-participant(1)\tanswer\tsentence\n"
    (folder / "templates.tsv").write_text(header + "\n".join(templates) + "\n")
    (folder / "occupations-stats.tsv").write_text(stats)
    return tmp_path


def test_synthetic_template(tmp_path: Path) -> None:
    root = _write(tmp_path, [
        "nurse\tpatient\t0\t$POSS_PRONOUN shift ended, so the $OCCUPATION left the $PARTICIPANT.",
        "nurse\tpatient\t1\tThe $OCCUPATION told the $PARTICIPANT that $NOM_PRONOUN was fine.",
    ], STATS + "nurse\t80.5\t90.0\t2015\n")
    items, report = load_winogender(root)
    assert report.counts == {"winogender": 2} and len(items) == 2
    item, someone = items
    assert item.item_id == "winogender:nurse.patient.0" and item.group == "winogender:nurse"
    assert item.options == ("His", "Her", "Their")  # blank starts the sentence
    assert item.context == "_ shift ended, so the nurse left the patient."
    assert item.meta["prefix"] == "" and item.meta["pronoun_case"] == "poss"
    assert item.meta["bls_pct_female"] == 90.0 and item.meta["bergsma_pct_female"] == 80.5
    assert item.label is None and item.question == "" and item.category == "winogender"
    assert item.meta["participant_kind"] == "specific"
    assert someone.item_id == "winogender:nurse.someone.0" and someone.group == item.group
    assert someone.context == "_ shift ended, so the nurse left someone."
    assert someone.meta["participant_kind"] == "someone"
    assert someone.meta["participant"] == "someone" and someone.options == item.options


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="probe data download"):
        load_winogender(tmp_path)
    root = _write(tmp_path, ["clerk\tcustomer\t0\tThe $OCCUPATION said $NOM_PRONOUN would."],
                  STATS + "nurse\t80.5\t90.0\t2015\n")
    with pytest.raises(DataError, match="templates.tsv:2: occupation 'clerk'"):
        load_winogender(root)
    with pytest.raises(ConfigError):
        load_winogender(root, limit=-1)
    root = _write(tmp_path, ["nurse\tpatient\t0\tThe $OCCUPATION said $NOM_PRONOUN would."],
                  STATS + "nurse\t80.5\t90.0\t2015\n")
    with pytest.raises(DataError, match="templates.tsv:2: cannot make the 'someone'"):
        load_winogender(root)


def _official_sentences(folder: Path) -> dict[str, str]:
    """sentid ("technician.someone.0.male.txt") -> sentence."""
    with (folder / "all_sentences.tsv").open() as handle:
        return {row[0]: row[1] for row in list(csv.reader(handle, delimiter="\t"))[1:]}


def test_real_items_rebuild_official_sentences() -> None:
    """120 items = 60 occupations x 2 participant kinds; with the three pronouns they are
    exactly the 360 occupation-referent sentences of all_sentences.tsv (of 720)."""
    folder = shared_data_dir() / "winogender"
    items, report = load_winogender(folder.parent)
    official = _official_sentences(folder)
    assert len(official) == 720 and len(items) == 120 == report.counts["winogender"]
    kinds = {(it.meta["occupation"], it.meta["participant_kind"]) for it in items}
    assert len(kinds) == 120 and len({occ for occ, _ in kinds}) == 60
    rebuilt = set()
    for item in items:
        case = item.meta["pronoun_case"]
        assert item.options == tuple(PRONOUN_FAMILIES[g][case] for g in GENDERS)
        assert item.context.count("_") == 1
        rest = item.context.split("_", 1)[1]
        for gender, pronoun in zip(GENDERS, item.options, strict=True):
            sentid = f"{item.meta['occupation']}.{item.meta['participant']}.0.{gender}.txt"
            rebuilt.add(sentid)
            sentence = item.meta["prefix"] + pronoun + rest
            # the official neutral sentence may change the verb ("they were"), so only
            # its start is checked
            if gender == "neutral":
                assert official[sentid].startswith(item.meta["prefix"] + pronoun + " ")
            else:
                assert sentence == official[sentid]
        assert 0 <= item.meta["bls_pct_female"] <= 100
    assert rebuilt == {k for k in official if k.split(".")[2] == "0"}


def test_limit_is_seeded_subset() -> None:
    root = shared_data_dir()
    full, _ = load_winogender(root)
    some, _ = load_winogender(root, limit=10, seed=1)
    again, _ = load_winogender(root, limit=10, seed=1)
    assert len(some) == 10 and [i.item_id for i in some] == [i.item_id for i in again]
    assert {i.item_id for i in some} <= {i.item_id for i in full}
    # whole occupations: both participant kinds of each drawn occupation
    occupations = [i.meta["occupation"] for i in some]
    assert all(occupations.count(o) == 2 for o in occupations)
    odd, _ = load_winogender(root, limit=7, seed=1)
    assert len(odd) == 7 and len({i.meta["occupation"] for i in odd}) == 4
