"""Conditions match their sources: verbatim where they say so, flagged where they do not,
and the system prompt is a visible, switchable choice."""

from __future__ import annotations

import copy
import glob
import re

import pytest

from probe.conditions.builtin import IF_BBQ, IF_WINO
from probe.conditions.prompts import render
from probe.conditions.registry import (
    CONDITIONS,
    COT_CUE,
    COT_FOLLOWUP,
    COT_TRIGGER,
    EXAMPLE_ITEMS,
    SAMPLE,
    WINO_COT_TRIGGER,
    describe,
    question_text,
    transcript,
)
from probe.testing import tiny_tokenizer

SMOLLM_DEFAULT = "You are a helpful AI assistant named SmolLM"


def test_every_condition_has_a_source_and_a_consistent_adapted_flag():
    for cond in CONDITIONS.values():
        assert cond.source.strip(), cond.name
        if cond.adapted:
            # No verbatim text is claimed, and the difference is stated.
            assert cond.source_text is None and cond.differs.strip(), cond.name
        else:
            assert cond.source_text is not None and not cond.differs, cond.name
            assert set(cond.source_text) == set(cond.benchmarks), cond.name
        lines = describe(cond)
        assert any(line.startswith("source: ") for line in lines)
        assert any(line.startswith("differs from source: ") for line in lines) == cond.adapted


@pytest.mark.parametrize("name", [n for n, c in CONDITIONS.items() if not c.adapted])
def test_verbatim_conditions_render_the_papers_prompt(name):
    """On the paper's own example item, probe's Human/Assistant text is the printed prompt."""
    cond = CONDITIONS[name]
    for bench, text in (cond.source_text or {}).items():
        assert transcript(cond.build(EXAMPLE_ITEMS[bench])) == text


def test_base_model_prompt_is_the_transcript():
    """What a base model is given equals the paper-style transcript (plus BOS if any)."""
    tok = tiny_tokenizer(chat=False)
    for cond in CONDITIONS.values():
        for bench in cond.benchmarks:
            plan = cond.build(EXAMPLE_ITEMS[bench])
            history = [(t.user, f"{t.assistant_prefix} {SAMPLE}".strip()) for t in plan.turns[:-1]]
            text = render(tok, False, history, plan.final.user, plan.final.assistant_prefix)
            assert text.endswith(transcript(plan))
            assert len(text) - len(transcript(plan)) == len(text.split("Human:", 1)[0])


def test_cot_structure_per_benchmark():
    cot = CONDITIONS["cot"]
    bbq, wino = EXAMPLE_ITEMS["bbq"], EXAMPLE_ITEMS["winogender"]
    first, final = cot.build(bbq).turns
    # question + instruction + trigger; then their follow-up ending in their answer cue
    assert first.user == f"{question_text(bbq)}\n{IF_BBQ}" and first.assistant_prefix == COT_TRIGGER
    assert final.user == COT_FOLLOWUP and final.assistant_prefix == COT_CUE
    first, final = cot.build(wino).turns
    assert first.user == f"{question_text(wino)}\n{IF_WINO}"
    assert first.assistant_prefix == WINO_COT_TRIGGER
    # Winogender re-asks the fill-in question (without the instruction), then the sentence
    assert final.user == question_text(wino)
    assert final.assistant_prefix == wino.meta["prefix"]


def test_bbq_final_turn_ends_with_the_answer_cue():
    for cond in CONDITIONS.values():
        if "bbq" in cond.benchmarks:
            cue = cond.build(EXAMPLE_ITEMS["bbq"]).final.assistant_prefix
            assert cue in ("The answer is", COT_CUE), cond.name


@pytest.fixture(scope="module")
def smollm_tokenizer():
    from transformers import AutoTokenizer

    from probe.engine.models import cache_root

    folders = glob.glob(str(cache_root() / "models" / "smollm2*"))
    if not folders:
        pytest.skip("the embedded SmolLM2 is not converted in this cache")
    return AutoTokenizer.from_pretrained(folders[0])


def test_system_prompt_settings_smollm(smollm_tokenizer):
    tok, hist = smollm_tokenizer, [("first question", "first answer")]
    default = render(tok, True, hist, "Who?", "The answer is", "default")
    none = render(tok, True, hist, "Who?", "The answer is", "none")
    custom = render(tok, True, hist, "Who?", "The answer is", "Be fair to everyone.")
    assert SMOLLM_DEFAULT in default  # the template's own, kept by default
    assert "system" not in none and SMOLLM_DEFAULT not in none
    assert none == default[default.index("<|im_start|>user"):]  # only the block is gone
    assert custom.count("Be fair to everyone.") == 1 and SMOLLM_DEFAULT not in custom
    assert custom.count("system") == 1


# A Llama-3-style template: a system block with dates even when no system message is given.
LLAMA3_LIKE = (
    "{{ bos_token }}<|start_header_id|>system<|end_header_id|>\n\nToday Date: 1 Jan\n\n"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}"
    "{% set messages = messages[1:] %}{% endif %}<|eot_id|>"
    "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")


def test_system_prompt_none_removes_a_llama3_style_block():
    tok = copy.deepcopy(tiny_tokenizer())
    tok.chat_template = LLAMA3_LIKE
    none = render(tok, True, [], "  Who?", "", "none")
    assert "system" not in none and "Today Date" not in none
    assert none == (f"{tok.bos_token}<|start_header_id|>user<|end_header_id|>\n\nWho?<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")
    custom = render(tok, True, [], "Who?", "", "Be fair.")
    assert custom.count("Be fair.") == 1


def test_run_records_and_uses_the_system_prompt(tmp_path, data_dir, one_thread):
    import json

    from probe.config import RunConfig
    from probe.engine.study import run_study
    from probe.testing import tiny_model

    cfg = RunConfig(model="tiny-random", benchmarks=["bbq"], categories=["Age"], limit=2,
                    conditions=["baseline"], mode="letter", data_dir=str(data_dir),
                    system_prompt="Answer carefully.")
    run_study(cfg, tmp_path / "run", loaded=tiny_model())
    config = json.loads((tmp_path / "run" / "run.json").read_text())["config"]
    assert config["system_prompt"] == "Answer carefully."
    rows = [json.loads(line) for line in (tmp_path / "run" / "generations.jsonl").open()]
    assert rows and all(len(re.findall("Answer carefully.", r["prompt"])) == 1 for r in rows)


def test_conditions_command_shows_system_prompt_sources_and_differences():
    import subprocess
    import sys

    from tests.conftest import REPO

    out = subprocess.run([sys.executable, "-m", "probe.cli", "conditions", "--system-prompt",
                          "none"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.startswith("system prompt: none")
    assert out.count("\n  source: ") == len(CONDITIONS)
    assert out.count("differs from source: ") == sum(c.adapted for c in CONDITIONS.values())
