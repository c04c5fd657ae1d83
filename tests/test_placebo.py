"""Placebo conditions and token-aligned counterparts (instruct-k / negate-k / placebo-k)."""

from __future__ import annotations

from typing import Any

import pytest

from probe.conditions.placebo import alignment, placebo_text
from probe.conditions.registry import EXAMPLE_ITEMS, conditions_for, get_condition


def test_placebos_are_registered_for_both_benchmarks() -> None:
    for bench in ("bbq", "winogender"):
        names = conditions_for(bench)
        assert {"placebo-1", "placebo-2", "placebo-3"} <= set(names)
    item = EXAMPLE_ITEMS["bbq"]
    user = get_condition("placebo-2").build(item).final.user
    assert user.endswith(placebo_text(2, item)) and "about age" in user
    assert "stereotyp" not in placebo_text(3, item) and "bias" not in placebo_text(3, item)


class _Words:
    """A whitespace tokenizer: one token per word, each distinct word its own id (str hash
    is salted per process, so ``hash(w) % n`` made two words collide now and then)."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def __call__(self, text: str, add_special_tokens: bool = False) -> Any:
        ids = [self.vocab.setdefault(w, len(self.vocab)) for w in text.split()]
        return type("Enc", (), {"input_ids": ids})()


def test_alignment_labels_and_differing_positions() -> None:
    item = EXAMPLE_ITEMS["bbq"]
    same = alignment(_Words(), item, "instruct-1", "negate-1")
    # unbiased -> biased, not -> indeed: the same word count, two words differ
    assert same["label"] == "aligned" and len(same["differing_positions"]) == 2
    other = alignment(_Words(), item, "instruct-1", "baseline")
    assert other["label"] == "unaligned" and other["differing_positions"] == []


@pytest.mark.slow
def test_counterparts_align_for_the_embedded_model(real_model: Any, data_dir: Any) -> None:
    from probe.config import RunConfig
    from probe.engine.study import load_items

    items, _ = load_items(RunConfig(benchmarks=["bbq"], data_dir=str(data_dir), limit=1))
    assert len({it.category for it in items}) >= 7
    tok = real_model.tokenizer
    for item in [*items, EXAMPLE_ITEMS["winogender"]]:
        for level in (1, 2, 3):
            kinds = ["placebo"] + (["negate"] if item.benchmark == "bbq" else [])
            for kind in kinds:
                got = alignment(tok, item, f"instruct-{level}", f"{kind}-{level}")
                assert got["label"] == "aligned", (item.item_id, kind, level, got)
