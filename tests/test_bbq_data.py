"""BBQ loading: fields, target derivation, errors, stratified limits."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from probe.data.bbq import CATEGORIES, item_from_bbq_row, load_bbq
from probe.errors import ConfigError, DataError, UnknownNameError
from tests.conftest_data import bbq_cells, bbq_row, shared_data_dir, write_jsonl


def _target(**overrides: object) -> int | None:
    return item_from_bbq_row(bbq_row(**overrides), "f.jsonl", 1).meta["target_index"]


def test_item_fields() -> None:
    item = item_from_bbq_row(bbq_row(example_id=7, question_index="4"), "f.jsonl", 1)
    assert item.item_id == "bbq:Age:7" and item.group == "bbq:Age:4"
    assert item.options == ("The grandfather", "The grandson", "Can't be determined")
    assert item.label == 2 and item.context_condition == "ambig"
    assert item.meta["unknown_index"] == 2 and item.meta["stereotyped_groups"] == ["old"]


def test_target_neg_is_stereotyped_answer_nonneg_is_other() -> None:
    assert _target(question_polarity="neg") == 0
    assert _target(question_polarity="nonneg") == 1


def test_age_nonold_is_not_matched_by_old() -> None:
    meta = {"stereotyped_groups": ["nonOld"]}
    assert _target(additional_metadata=meta) == 1


def test_no_match_and_double_match_give_none() -> None:
    assert _target(additional_metadata={"stereotyped_groups": ["disabled"]}) is None
    info = {"ans0": ["x", "old"], "ans1": ["y", "old"], "ans2": ["Unknown", "unknown"]}
    assert _target(answer_info=info) is None


def test_gender_tags_normalised() -> None:
    info = {"ans0": ["man", "man"], "ans1": ["Unknown", "unknown"], "ans2": ["woman", "woman"]}
    meta = {"stereotyped_groups": ["F"]}
    assert _target(category="Gender_identity", answer_info=info, additional_metadata=meta) == 2
    info = {"ans0": ["Unknown", "unknown"], "ans1": ["girl", "girl"], "ans2": ["male", "M"]}
    assert _target(category="Gender_identity", answer_info=info, additional_metadata=meta,
                   question_polarity="nonneg") == 2


def test_trans_tags_match_transgender_groups() -> None:
    info = {"ans0": ["trans woman", "trans_F"], "ans1": ["cis man", "nonTrans_M"],
            "ans2": ["Unknown", "unknown"]}
    meta = {"stereotyped_groups": ["transgender women", "trans"]}
    assert _target(category="Gender_identity", answer_info=info, additional_metadata=meta) == 0


def test_nationality_matches_answer_text_not_region() -> None:
    info = {"ans0": ["British", "Europe"], "ans1": ["Japanese", "AsiaPacific"],
            "ans2": ["Can't answer", "unknown"]}
    meta = {"stereotyped_groups": ["Japanese"]}
    assert _target(category="Nationality", answer_info=info, additional_metadata=meta) == 1


def test_bad_rows_name_file_and_line(tmp_path: Path) -> None:
    bad = [bbq_row(), "{not json", bbq_row()]
    write_jsonl(tmp_path / "bbq" / "Age.jsonl", bad)
    with pytest.raises(DataError, match=r"Age\.jsonl:2: malformed JSON"):
        load_bbq(tmp_path, ["Age"])
    row = bbq_row()
    del row["label"]
    row["example_id"] = 2
    write_jsonl(tmp_path / "bbq" / "Age.jsonl", [bbq_row(), bbq_row(example_id=1), row])
    with pytest.raises(DataError, match=r"Age\.jsonl:3: missing field 'label'"):
        load_bbq(tmp_path, ["Age"])
    write_jsonl(tmp_path / "bbq" / "Age.jsonl", [bbq_row(label="2")])
    with pytest.raises(DataError, match=r":1: field 'label' has type str"):
        load_bbq(tmp_path, ["Age"])
    (tmp_path / "bbq" / "Age.jsonl").write_text("")
    with pytest.raises(DataError, match="no BBQ items"):
        load_bbq(tmp_path, ["Age"])


def test_unknown_category_lists_valid(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError) as err:
        load_bbq(tmp_path, ["Ages"])
    assert all(cat in str(err.value) for cat in CATEGORIES)


def test_missing_data_dir_says_how_to_get_data(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="probe data download"):
        load_bbq(tmp_path / "nowhere")


def test_missing_categories_reported(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "bbq" / "Religion.jsonl", bbq_cells("Religion", 1))
    items, report = load_bbq(tmp_path)
    assert {it.category for it in items} == {"Religion"}
    assert set(report.missing) == set(CATEGORIES) - {"Religion"}
    assert report.counts == {"Religion": 4}


def test_stratified_limit_balanced_and_seeded(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "bbq" / "Age.jsonl", bbq_cells("Age", 10))
    items, _ = load_bbq(tmp_path, ["Age"], limit=8, seed=3)
    cells = Counter((it.context_condition, it.question_polarity) for it in items)
    assert len(items) == 8 and set(cells.values()) == {2} and len(cells) == 4
    again, _ = load_bbq(tmp_path, ["Age"], limit=8, seed=3)
    assert [it.item_id for it in again] == [it.item_id for it in items]
    picks = {tuple(it.item_id for it in load_bbq(tmp_path, ["Age"], limit=8, seed=s)[0])
             for s in range(5)}
    assert len(picks) > 1
    odd, _ = load_bbq(tmp_path, ["Age"], limit=6)
    assert sorted(Counter((i.context_condition, i.question_polarity) for i in odd).values()) \
        == [1, 1, 2, 2]
    with pytest.raises(ConfigError):
        load_bbq(tmp_path, ["Age"], limit=0)


def test_real_data_loads_with_targets() -> None:
    items, report = load_bbq(shared_data_dir())
    assert report.counts and all(n > 0 for n in report.counts.values())
    for item in items:
        target, unknown = item.meta["target_index"], item.meta["unknown_index"]
        assert target != unknown
    for cat, n in report.counts.items():
        # the official analysis finds a target for nearly every item
        assert report.no_target[cat] <= 0.01 * n, cat


def _partners_sampled(items) -> list[bool]:
    from probe.data.bbq import polarity_key

    keys = Counter((polarity_key(it), it.question_polarity) for it in items)
    return [keys[(polarity_key(it), "nonneg" if it.question_polarity == "neg" else "neg")] > 0
            for it in items]


@pytest.mark.parametrize("limit", [2, 8, 56])
def test_limit_keeps_polarity_partners_together(limit: int) -> None:
    """Every sampled item's partner (same category, template, fill and context condition,
    other polarity) is sampled too, so the two polarities cancel as BBQ intends."""
    items, _ = load_bbq(shared_data_dir(), ["Age", "Religion", "Gender_identity"], limit=limit)
    assert len(items) == 3 * limit and all(_partners_sampled(items))
    for cat in ("Age", "Religion", "Gender_identity"):
        cells = Counter((it.context_condition, it.question_polarity) for it in items
                        if it.category == cat)
        assert max(cells.values()) - min(cells.values()) <= 1


def test_odd_limit_leaves_exactly_one_item_unpaired() -> None:
    items, _ = load_bbq(shared_data_dir(), ["Age"], limit=7)
    assert len(items) == 7 and _partners_sampled(items).count(False) == 1
