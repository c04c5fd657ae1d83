"""Probe targets built from hand-made generation rows: labels, keys, skips, hooks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from probe.analysis import targets as tg
from probe.errors import ConfigError, DataError, UnknownNameError


def bbq(item: str, cond: str, pred: int | None, *, target: int | None = 0, label: int = 2,
        context: str = "ambig", group: str = "T1") -> dict:
    """A BBQ row in GenerationRow.to_json shape (only the fields targets read)."""
    return {"benchmark": "bbq", "item_id": item, "condition": cond, "pred": pred,
            "label": label, "group": group, "category": "Age", "context_condition": context,
            "question_polarity": "neg", "mode": "likelihood", "option_scores": None,
            "meta": {"target_index": target, "unknown_index": 2}}


ROWS = [
    bbq("a", "baseline", 0), bbq("a", "instruct-1", 2), bbq("a", "negate-1", 0),
    bbq("b", "baseline", 1, target=1), bbq("b", "instruct-1", 1, target=1),
    bbq("c", "baseline", 2, group="T2"), bbq("c", "instruct-1", 0, group="T2"),
    bbq("d", "baseline", 0, label=0, context="disambig", group="T2"),
    bbq("e", "baseline", None, group="T3"), bbq("f", "baseline", 1, target=None, group="T3"),
    {"benchmark": "winogender", "item_id": "w", "condition": "baseline", "pred": "male",
     "label": None, "group": "W1", "category": "occ", "context_condition": None,
     "question_polarity": None, "mode": "generate", "meta": {}},
]


def labels(target: tg.Target) -> dict:
    return dict(zip(target.keys, target.y.tolist(), strict=True))


def build(name: str, rows: list | None = None, **kw) -> tg.Target:
    return tg.build_target(name, ROWS if rows is None else rows, min_per_class=1, **kw)


def test_condition_target_pairs_instruction_against_baseline_only():
    got = labels(build("condition:instruct-1"))
    assert got[("a", "instruct-1")] == 1 and got[("c", "instruct-1")] == 1
    assert got[("a", "baseline")] == 0 and got[("w", "baseline")] == 0
    assert ("a", "negate-1") not in got  # neither side of the pair
    assert sum(got.values()) == 3 and len(got) == 3 + 7
    negate = labels(build("condition:negate-*"))
    assert {k for k, v in negate.items() if v == 1} == {("a", "negate-1")}


def test_biased_answer_uses_ambiguous_bbq_rows_with_pred_and_target():
    got = labels(build("biased_answer"))
    expected = {("a", "baseline"): 1, ("a", "instruct-1"): 0, ("a", "negate-1"): 1,
                ("b", "baseline"): 1, ("b", "instruct-1"): 1,
                ("c", "baseline"): 0, ("c", "instruct-1"): 1}
    assert got == expected  # d is disambiguated, e has no pred, f no target, w not BBQ
    assert labels(build("biased_answer:baseline")) == {
        k: v for k, v in expected.items() if k[1] == "baseline"}


def test_correct_compares_pred_with_label():
    got = labels(build("correct"))
    assert got[("d", "baseline")] == 1 and got[("a", "instruct-1")] == 1
    assert got[("a", "baseline")] == 0
    assert ("e", "baseline") not in got and ("w", "baseline") not in got


def test_self_corrected_means_the_answer_became_unknown():
    got = labels(build("self_corrected:instruct-1"))
    assert got == {("a", "instruct-1"): 1, ("b", "instruct-1"): 0}  # c was unknown already
    # g switched from the stereotyped to the counter-stereotyped answer: not corrected
    switched = ROWS + [bbq("g", "baseline", 0), bbq("g", "instruct-1", 1)]
    assert labels(build("self_corrected:instruct-1", switched))[("g", "instruct-1")] == 0
    from_baseline = labels(build("self_corrected:instruct-1:baseline"))
    assert from_baseline == {("a", "baseline"): 1, ("b", "baseline"): 0}
    with pytest.raises(UnknownNameError):
        build("self_corrected:instruct-1:elsewhere")


def test_self_corrected_counts_each_item_once_per_condition():
    twice = ROWS + [bbq("a", "instruct-1", 0), bbq("a", "instruct-2", 2)]
    target = build("self_corrected:instruct-*", twice)
    assert len(target.keys) == len(set(target.keys)) == 3
    # one baseline row cannot carry two conditions' labels
    with pytest.raises(ConfigError, match="instruct-1, instruct-2"):
        build("self_corrected:instruct-*:baseline", twice)


def test_groups_follow_rows_and_summary_counts_classes():
    target = build("biased_answer")
    assert dict(zip(target.keys, target.groups, strict=True))[("c", "baseline")] == "T2"
    summary = target.summary()
    assert summary["n"] == 7 and summary["n_pos"] == 5 and summary["n_neg"] == 2
    assert summary["n_groups"] == 2 and summary["skipped"] is None


def test_skipped_reasons_instead_of_errors():
    assert "too few" in str(tg.build_target("biased_answer", ROWS, min_per_class=3).skipped)
    one_class = [r for r in ROWS if r["item_id"] == "a" and r["condition"] != "baseline"]
    one_class += [bbq("a", "baseline", 0)]
    assert "single class" in str(build("self_corrected:instruct-1", one_class).skipped)
    assert "no rows" in str(build("self_corrected:cot").skipped)
    assert "templates" in str(build("self_corrected:instruct-1", min_groups=2).skipped)


def test_available_drops_rows_without_activations():
    available = {("a", "baseline"), ("b", "baseline"), ("c", "baseline")}
    target = build("biased_answer", available=available)
    assert set(target.keys) == available and target.n_missing_acts == 4


def test_names_and_errors():
    with pytest.raises(UnknownNameError):
        build("nonsense")
    with pytest.raises(UnknownNameError):
        build("condition")
    names = tg.default_target_names(ROWS)
    assert names == ["condition:instruct-1", "condition:negate-1", "biased_answer:baseline",
                     "correct:baseline", "self_corrected:instruct-*"]
    assert tg.instruction_conditions(ROWS) == ["instruct-1", "negate-1"]


def test_hooks_are_ordered_by_layer_and_filtered():
    names = ["blocks.10.hook_resid_post", "hook_embed", "blocks.2.hook_resid_post",
             "blocks.2.attn.hook_z"]
    assert tg.select_hooks(names) == ["hook_embed", "blocks.2.hook_resid_post",
                                      "blocks.10.hook_resid_post"]
    assert tg.select_hooks(names, [-1, 10]) == ["hook_embed", "blocks.10.hook_resid_post"]


def test_read_rows_reports_bad_line(tmp_path):
    path = tmp_path / "generations.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n{oops\n" + json.dumps(ROWS[1]) + "\n")
    with pytest.raises(DataError, match=":2:"):
        tg.read_rows(path)
    path.write_text(json.dumps({"item_id": "x", "condition": "baseline"}) + "\n")
    with pytest.raises(DataError, match=":1: row lacks group"):
        tg.read_rows(path)
    with pytest.raises(DataError):
        tg.read_rows(tmp_path / "missing.jsonl")


def test_array_source_is_a_store():
    arrays = {"hook_embed": np.arange(6.0).reshape(3, 2)}
    rows = [{"item_id": str(i), "condition": "baseline"} for i in range(3)]
    source = tg.ArraySource(arrays, rows)
    assert tg.key_index(source.rows) == {("0", "baseline"): 0, ("1", "baseline"): 1,
                                         ("2", "baseline"): 2}
    np.testing.assert_array_equal(tg.load_matrix(source, "hook_embed"), arrays["hook_embed"])
