"""Winogender loading: blanks, pronoun options, occupation statistics."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from probe.data.winogender import load_winogender
from probe.errors import ConfigError, DataError
from probe.items import GENDERS, PRONOUN_FAMILIES
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
    assert report.counts == {"winogender": 1} and len(items) == 1
    item = items[0]
    assert item.item_id == "winogender:nurse.patient.0" and item.group == "winogender:nurse"
    assert item.options == ("His", "Her", "Their")  # blank starts the sentence
    assert item.context == "_ shift ended, so the nurse left the patient."
    assert item.meta["prefix"] == "" and item.meta["pronoun_case"] == "poss"
    assert item.meta["bls_pct_female"] == 90.0 and item.meta["bergsma_pct_female"] == 80.5
    assert item.label is None and item.question == "" and item.category == "winogender"


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="probe data download"):
        load_winogender(tmp_path)
    root = _write(tmp_path, ["clerk\tcustomer\t0\tThe $OCCUPATION said $NOM_PRONOUN would."],
                  STATS + "nurse\t80.5\t90.0\t2015\n")
    with pytest.raises(DataError, match="templates.tsv:2: occupation 'clerk'"):
        load_winogender(root)
    with pytest.raises(ConfigError):
        load_winogender(root, limit=-1)


def _official_sentences(folder: Path) -> set[str]:
    with (folder / "all_sentences.tsv").open() as handle:
        return {row[1] for row in csv.reader(handle, delimiter="\t")}


def test_real_items_rebuild_official_sentences() -> None:
    folder = shared_data_dir() / "winogender"
    items, _ = load_winogender(folder.parent)
    official = _official_sentences(folder)
    assert len({it.meta["occupation"] for it in items}) == len(items)
    for item in items:
        case = item.meta["pronoun_case"]
        assert item.options == tuple(PRONOUN_FAMILIES[g][case] for g in GENDERS)
        assert item.context.count("_") == 1
        # prefix + he/she + rest is an official sentence; the official neutral one may
        # change the verb ("they were"), so only its start is checked
        rest = item.context.split("_", 1)[1]
        for pronoun in item.options[:2]:
            assert item.meta["prefix"] + pronoun + rest in official
        start = item.meta["prefix"] + item.options[2] + " "
        assert any(s.startswith(start) for s in official)
        assert 0 <= item.meta["bls_pct_female"] <= 100


def test_limit_is_seeded_subset() -> None:
    root = shared_data_dir()
    full, _ = load_winogender(root)
    some, _ = load_winogender(root, limit=10, seed=1)
    again, _ = load_winogender(root, limit=10, seed=1)
    assert len(some) == 10 and [i.item_id for i in some] == [i.item_id for i in again]
    assert {i.item_id for i in some} <= {i.item_id for i in full}
