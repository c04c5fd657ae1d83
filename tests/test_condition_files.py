"""Conditions from the user's own files (Python, YAML, JSON): loading, errors naming file and
line, the record in run.json, and every later command knowing them without the file."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from probe.conditions.files import load_conditions_file, register_run_conditions
from probe.conditions.registry import (
    CONDITIONS,
    EXAMPLE_ITEMS,
    answer_prefix,
    get_condition,
    question_text,
)
from probe.config import RunConfig
from probe.errors import DataError
from tests.conftest_data import bbq_cells, write_jsonl

YAML = """\
conditions:
  - name: be-fair
    description: Question + a fairness reminder.
    source: test
    instruction: "Please be fair about {dimension}."
  - name: think-first
    benchmarks: [bbq]
    turns:
      - user: "{question}"
        assistant_prefix: "Let me think."
      - user: "So which is it?"
"""
JSON = json.dumps({"conditions": [
    {"name": "be-fair", "description": "Question + a fairness reminder.", "source": "test",
     "instruction": "Please be fair about {dimension}."},
    {"name": "think-first", "benchmarks": ["bbq"],
     "turns": [{"user": "{question}", "assistant_prefix": "Let me think."},
               {"user": "So which is it?"}]}]}, indent=2)
PYTHON = """\
from probe.conditions.registry import Condition, PromptPlan, Turn, question_text, register_condition

register_condition(Condition("py-fair", "registered", "test", ("bbq",),
                             lambda item: PromptPlan((Turn(question_text(item) + "\\nBe fair."),))))
CONDITIONS = [Condition("py-listed", "listed", "test", ("bbq",),
                        lambda item: PromptPlan((Turn("Listed: " + item.question),)))]
"""


pytestmark = pytest.mark.usefixtures("clean_registry")


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_and_json_give_the_same_prompts(tmp_path: Path) -> None:
    plans = {}
    for name, text in (("c.yaml", YAML), ("c.json", JSON)):
        record = load_conditions_file(_file(tmp_path, name, text))
        assert [c["name"] for c in record["conditions"]] == ["be-fair", "think-first"]
        plans[name] = {(c, b): get_condition(c).build(EXAMPLE_ITEMS[b])
                       for c in ("be-fair", "think-first") for b in ("bbq", "winogender")
                       if b in get_condition(c).benchmarks}
    assert plans["c.yaml"] == plans["c.json"]
    bbq, wino = EXAMPLE_ITEMS["bbq"], EXAMPLE_ITEMS["winogender"]
    fair = plans["c.yaml"][("be-fair", "bbq")]
    assert fair.final.user == question_text(bbq) + "\nPlease be fair about age."
    # Winogender's answer continues the sentence, as in every built-in condition.
    assert plans["c.yaml"][("be-fair", "winogender")].final.assistant_prefix == \
        wino.meta["prefix"]
    think = plans["c.yaml"][("think-first", "bbq")]
    # The last turn's prefix defaults to the answer cue every built-in condition ends with.
    assert [t.assistant_prefix for t in think.turns] == ["Let me think.", answer_prefix(bbq)]
    assert ("think-first", "winogender") not in plans["c.yaml"]


def test_python_file_registers_and_lists(tmp_path: Path) -> None:
    record = load_conditions_file(_file(tmp_path, "mine.py", PYTHON))
    assert {c["name"] for c in record["conditions"]} == {"py-fair", "py-listed"}
    assert record["format"] == "python" and record["content"] == PYTHON
    assert get_condition("py-listed").build(EXAMPLE_ITEMS["bbq"]).final.user.startswith(
        "Listed: ")


BAD = [
    ("bad.yaml", "conditions:\n  - name: x\n    instruction: [unclosed\n", "bad.yaml:3"),
    ("bad.yaml", YAML.replace("{dimension}", "{colour}"),
     "bad.yaml:2: condition 1 ('be-fair'), field 'instruction': unknown placeholder {colour}"),
    ("bad.yaml", YAML.replace("benchmarks: [bbq]", "benchmark: [bbq]"),
     "bad.yaml:6: condition 2 ('think-first'), field 'benchmark': unknown field"),
    ("bad.yaml", YAML.replace("name: be-fair", "name: baseline"), "'baseline' is built in"),
    ("bad.yaml", YAML.replace("name: think-first", "name: be-fair"), "name used twice"),
    ("bad.json", JSON.replace('"Let me think."', '"Let me {think}."'),
     "field 'turns[0].assistant_prefix': unknown placeholder {think}"),
    ("bad.json", '{"conditions": [', "bad.json:1: invalid JSON"),
    ("bad.py", "x = 1\ndef f(:\n", "bad.py:2: syntax error"),
    ("bad.py", "x = 1\nraise RuntimeError('nope')\n", "bad.py:2: RuntimeError: nope"),
    ("bad.py", "x = 1\n", "defines no condition"),
    ("bad.py", PYTHON.replace('"Listed: " + item.question', "item.nothing"),
     "bad.py:6: condition 'py-listed' fails on a bbq item: AttributeError"),
    ("bad.txt", "", "expected a .py, .yaml, .yml or .json file"),
]


@pytest.mark.parametrize(("name", "text", "message"), BAD)
def test_bad_files_fail_in_one_line_naming_file_and_place(tmp_path: Path, name: str,
                                                          text: str, message: str) -> None:
    from probe.cli import cli

    before = dict(CONDITIONS)
    path = _file(tmp_path, name, text)
    res = CliRunner().invoke(cli, ["conditions", "--conditions-file", str(path)])
    assert res.exit_code == 2, res.output
    lines = [x for x in res.output.splitlines() if x.startswith("probe: error")]
    assert len(lines) == 1 and message in lines[0], res.output
    assert str(path) in lines[0] or name == "bad.txt"
    assert dict(CONDITIONS) == before  # a bad file registers nothing


def _run(tmp_path: Path, tiny, conditions_file: Path, conditions: list[str],
         out: str = "run", **extra: object) -> Path:
    from probe.engine.study import run_study

    data = tmp_path / "data"
    if not data.exists():
        write_jsonl(data / "bbq" / "Age.jsonl", bbq_cells("Age", per_cell=2))
    cfg = RunConfig(model="tiny-random", benchmarks=["bbq"], conditions=conditions,
                    mode="letter", data_dir=str(data), batch_size=8,
                    conditions_file=str(conditions_file), **extra)  # type: ignore[arg-type]
    run_study(cfg, tmp_path / out, loaded=tiny)
    return tmp_path / out


def test_run_records_the_file_and_later_commands_know_it(tmp_path: Path, tiny) -> None:
    user = _file(tmp_path, "mine.py", PYTHON)
    run = _run(tmp_path, tiny, user, ["baseline", "py-fair"], cache_acts=True)
    info = json.loads((run / "run.json").read_text())
    record = info["provenance"]["conditions_file"]
    assert record["content"] == PYTHON and record["sha256"] == \
        info["provenance"]["files"]["conditions_file"]["sha256"]
    rows = [json.loads(x) for x in (run / "generations.jsonl").open()]
    assert all(r["prompt"].count("Be fair.") == (r["condition"] == "py-fair") for r in rows)
    # A later session: the file is gone and the condition is not registered.
    user.unlink()
    del CONDITIONS["py-fair"], CONDITIONS["py-listed"]
    assert register_run_conditions(run) == ["py-fair", "py-listed"]
    assert get_condition("py-fair").description == "registered"
    with pytest.raises(Exception, match="pass --conditions-file"):
        get_condition("py-fair").build(EXAMPLE_ITEMS["bbq"])
    del CONDITIONS["py-fair"], CONDITIONS["py-listed"]
    from probe.analysis.lens import run_lens
    from probe.commands.probes import probes

    lensed = run_lens(str(run), ["baseline", "py-fair"], loaded=tiny)
    assert lensed["conditions"]["py-fair"]["n_items"] > 0
    group = click.Group()
    group.add_command(probes)
    res = CliRunner().invoke(group, ["probes", str(run), "--kind", "diffmeans"])
    assert res.exit_code == 0, res.output
    assert "condition:py-fair" in json.loads((run / "probes.json").read_text())["targets"]


def test_yaml_run_rebuilds_conditions_from_the_record(tmp_path: Path, tiny) -> None:
    user = _file(tmp_path, "c.yaml", YAML)
    run = _run(tmp_path, tiny, user, ["baseline", "be-fair"])
    want = get_condition("be-fair").build(EXAMPLE_ITEMS["bbq"])
    user.unlink()
    del CONDITIONS["be-fair"], CONDITIONS["think-first"]
    register_run_conditions(run)
    assert get_condition("be-fair").build(EXAMPLE_ITEMS["bbq"]) == want


def test_resume_with_an_edited_file_is_refused(tmp_path: Path, tiny) -> None:
    user = _file(tmp_path, "c.yaml", YAML)
    _run(tmp_path, tiny, user, ["baseline", "be-fair"])
    user.write_text(YAML.replace("Please be fair", "Be fair"))
    with pytest.raises(Exception, match="conditions_file"):
        _run(tmp_path, tiny, user, ["baseline", "be-fair"])


def test_altered_record_is_refused(tmp_path: Path, tiny) -> None:
    run = _run(tmp_path, tiny, _file(tmp_path, "c.yaml", YAML), ["baseline", "be-fair"])
    info = json.loads((run / "run.json").read_text())
    info["provenance"]["conditions_file"]["content"] += "\n# edited\n"
    (run / "run.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match="altered"):
        register_run_conditions(run)


def test_default_conditions_are_built_in_and_the_files_only(tmp_path: Path, tiny) -> None:
    """A condition registered earlier in the same process (a notebook) is not silently
    added to a run that did not ask for it; the file's conditions are; run.json says where
    each condition came from."""
    from probe.conditions.registry import Condition, PromptPlan, Turn, register_condition

    register_condition(Condition("leftover", "", "", ("bbq",),
                                 lambda item: PromptPlan((Turn("x"),))))
    user = _file(tmp_path, "c.yaml", YAML)
    run = _run(tmp_path, tiny, user, [], limit=1)
    conds = {json.loads(x)["condition"] for x in (run / "generations.jsonl").open()}
    assert "leftover" not in conds and {"be-fair", "think-first", "baseline"} <= conds
    origins = json.loads((run / "run.json").read_text())["provenance"]["conditions"]
    assert origins["be-fair"]["origin"] == "conditions_file"
    assert origins["baseline"]["origin"] == "probe"
    assert set(origins) == conds


def test_shards_with_a_conditions_file_merge(tmp_path: Path, tiny) -> None:
    from probe.store.merge import merge_runs

    user = _file(tmp_path, "c.yaml", YAML)
    whole = _run(tmp_path, tiny, user, ["baseline", "be-fair"], out="whole")
    shards = [_run(tmp_path, tiny, user, ["baseline", "be-fair"], out=f"s{i}", shard=f"{i}/2")
              for i in range(2)]
    del CONDITIONS["be-fair"], CONDITIONS["think-first"]  # a later session, file unknown
    merged = merge_runs(shards, tmp_path / "merged")
    assert (merged.path / "metrics.json").read_bytes() == (whole / "metrics.json").read_bytes()


def test_two_runs_with_one_name_keep_their_own_conditions(tmp_path: Path, tiny) -> None:
    """In one session, run B's 'be-fair' (another text) is described and analysed as B's."""
    import probe

    first = _run(tmp_path, tiny, _file(tmp_path, "a.yaml", YAML), ["baseline", "be-fair"],
                 out="a")
    del CONDITIONS["be-fair"], CONDITIONS["think-first"]
    second = _run(tmp_path, tiny, _file(tmp_path, "b.yaml", YAML.replace(
        "Question + a fairness reminder.", "Other text.").replace("Please be fair",
                                                                 "Be very fair")),
                  ["baseline", "be-fair"], out="b")
    del CONDITIONS["be-fair"], CONDITIONS["think-first"]
    runs = [probe.open_run(first), probe.open_run(second)]
    assert [r.condition_info()["be-fair"]["description"] for r in runs] == [
        "Question + a fairness reminder.", "Other text."]
    lensed = probe.lens(second, ["be-fair"], loaded=tiny)  # rows carry B's own prompts
    assert lensed["conditions"]["be-fair"]["n_items"] > 0
