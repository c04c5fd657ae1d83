"""Comparing runs: gains, model size and kind, peaks, outputs, and the command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_plots import make_run, metrics
from test_report import patching, probes_json

from probe.cli import ProbeGroup
from probe.commands.report import compare_cmd
from probe.errors import ConfigError
from probe.presentation import compare
from probe.store.runs import RunFolder


def write_first_row(run: Path, prompt: str) -> None:
    (run / "generations.jsonl").write_text(json.dumps(
        {"item_id": "x", "condition": "baseline", "benchmark": "bbq", "prompt": prompt}) + "\n")


def two_runs(tmp_path: Path) -> tuple[Path, Path, dict]:
    data = metrics()
    data["conditions"]["negate-1"] = json.loads(json.dumps(data["conditions"]["instruct-1"]))
    data["conditions"]["negate-1"]["bbq"]["overall"]["ambig"]["accuracy"] = 0.8
    data["conditions"]["cot"] = data["conditions"]["instruct-1"]  # any condition is compared
    chat = make_run(tmp_path / "chat", data)
    write_first_row(chat, "<|im_start|>user\nWho?<|im_end|>\n<|im_start|>assistant\n")
    base = make_run(tmp_path / "base", metrics())
    write_first_row(base, "Question: Who?\nAnswer:")
    info = json.loads((base / "run.json").read_text())
    info["provenance"]["model"] = {"n_params": 360_000_000, "chat": False}
    (base / "run.json").write_text(json.dumps(info))
    (base / "probes.json").write_text(json.dumps(probes_json({"logreg": [0.6, 0.85, 0.7]})))
    patched = patching({"attn": [0.1, -0.4], "mlp": [0.2, 0.3]})
    patched["meta"] = {"source": "instruct-1", "target": "baseline"}
    (base / "patching.json").write_text(json.dumps(patched))
    return chat, base, data


def test_gains_are_instructed_minus_baseline(tmp_path: Path) -> None:
    chat, base, data = two_runs(tmp_path)
    result = compare.compare_runs([chat, base], {"chat": 135_000_000})
    rows = {(Path(r["run"]).name, r["condition"]): r for r in result["rows"]}
    assert set(rows) == {("chat", "instruct-1"), ("chat", "negate-1"), ("chat", "cot"),
                         ("base", "instruct-1")}
    conds = data["conditions"]
    for cond in ("instruct-1", "negate-1"):
        for metric in ("bias_score", "accuracy"):
            for ctx in ("ambig", "disambig"):
                want = (conds[cond]["bbq"]["overall"][ctx][metric]
                        - conds["baseline"]["bbq"]["overall"][ctx][metric])
                got = rows[("chat", cond)][f"gain_{metric}_{ctx}"]
                assert got == pytest.approx(want)
    assert rows[("chat", "negate-1")]["gain_accuracy_ambig"] != rows[
        ("chat", "instruct-1")]["gain_accuracy_ambig"]


def test_size_kind_and_peaks(tmp_path: Path) -> None:
    chat, base, _ = two_runs(tmp_path)
    runs = {Path(r["run"]).name: r for r in compare.compare_runs([chat, base],
                                                                 {"chat": 135_000_000})["runs"]}
    assert (runs["chat"]["n_params"], runs["chat"]["size_source"]) == (135_000_000, "override")
    assert (runs["base"]["n_params"], runs["base"]["size_source"]) == (360_000_000, "run.json")
    assert runs["chat"]["kind"] == "chat" and runs["base"]["kind"] == "base"
    assert runs["base"]["kind_source"].startswith("run.json")
    assert (runs["base"]["probe_layer"], runs["base"]["probe_accuracy"]) == (1, 0.85)
    assert runs["chat"]["probe_layer"] is None


def test_outputs_written_and_command(tmp_path: Path) -> None:
    chat, base, _ = two_runs(tmp_path)
    group = ProbeGroup("t")
    group.add_command(compare_cmd)
    out = tmp_path / "cmp"
    res = CliRunner().invoke(group, ["compare", str(chat), str(base), "--out", str(out),
                                     "--size", "chat=135M"])
    assert res.exit_code == 0, res.output
    assert "135000000" in res.output and " chat " in res.output
    with (out / "compare.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    saved = json.loads((out / "compare.json").read_text())
    assert len(rows) == len(saved["rows"]) == 4
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    bad = CliRunner().invoke(group, ["compare", str(chat), "--size", "chat=lots"])
    assert bad.exit_code == 2 and "--size" in bad.output


@pytest.mark.parametrize(("text", "count"), [
    ("135M", 135_000_000), ("1.7B", 1_700_000_000), ("360000000", 360_000_000), ("2k", 2000)])
def test_parse_size(text: str, count: int) -> None:
    assert compare.parse_size(text) == count


def test_parse_size_rejects_garbage() -> None:
    with pytest.raises(ConfigError):
        compare.parse_size("big")


def test_safetensors_params_reads_headers(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    shapes = {"a": (3, 4), "b": (5,), "c": (2, 3, 2)}
    save_file({k: np.zeros(s, dtype=np.float32) for k, s in shapes.items()},
              str(tmp_path / "model.safetensors"))
    assert compare.safetensors_params(tmp_path) == sum(int(np.prod(s)) for s in shapes.values())
    assert compare.safetensors_params(tmp_path / "missing") is None


def write_rows(run: Path, items: list[str], conds: list[str]) -> None:
    rows = [{"item_id": i, "condition": c, "benchmark": "bbq", "prompt": "Q"}
            for i in items for c in conds]
    (run / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def set_info(run: Path, **config: object) -> None:
    info = json.loads((run / "run.json").read_text())
    info["config"].update(config)
    (run / "run.json").write_text(json.dumps(info))


def test_identical_runs_give_no_warning(tmp_path: Path) -> None:
    a, b = (make_run(tmp_path / n, metrics()) for n in ("a", "b"))
    for run in (a, b):
        write_rows(run, ["x", "y"], ["baseline", "instruct-1"])
    result = compare.compare_runs([a, b])
    assert result["warnings"] == [] and all(r["differs"] is None for r in result["rows"])
    assert "WARNING" not in compare.format_compare(result)


def test_runs_differing_in_items_mode_and_conditions_are_flagged(tmp_path: Path) -> None:
    data = metrics()
    data["conditions"]["negate-1"] = data["conditions"]["instruct-1"]
    a, b = make_run(tmp_path / "a", data), make_run(tmp_path / "b", metrics())
    write_rows(a, ["x", "y", "z"], ["baseline", "instruct-1"])
    write_rows(b, ["x", "y"], ["baseline", "instruct-1"])
    set_info(a, mode="letter")
    set_info(b, mode="text")
    result = compare.compare_runs([a, b])
    text = "\n".join(result["warnings"])
    assert "differ in items (a 3, b 2; 2 shared)" in text
    assert "differ in scoring mode (a letter, b text)" in text
    assert "b lacks conditions negate-1" in text
    differs = {Path(r["run"]).name: r["differs"] for r in result["runs"]}
    assert differs["a"] == "items, mode letter"
    assert differs["b"] == "mode text, conditions"
    printed = compare.format_compare(result)
    assert printed.count("WARNING:") == 3 and "mode letter" in printed
    out = tmp_path / "cmp"
    compare.write_compare(result, out)
    assert json.loads((out / "compare.json").read_text())["warnings"] == result["warnings"]
    with (out / "compare.csv").open() as fh:
        assert {r["differs"] for r in csv.DictReader(fh)} == {"items, mode letter",
                                                             "mode text, conditions"}


def test_item_settings_differ_when_rows_are_absent(tmp_path: Path) -> None:
    a, b = make_run(tmp_path / "a", metrics()), make_run(tmp_path / "b", metrics())
    set_info(b, limit=8)
    assert "different item settings" in compare.compare_runs([a, b])["warnings"][0]


def test_condition_defined_differently_is_flagged(tmp_path: Path) -> None:
    a, b = make_run(tmp_path / "a", metrics()), make_run(tmp_path / "b", metrics())
    for run, text in ((a, "Please be fair."), (b, "Be biased.")):
        info = json.loads((run / "run.json").read_text())
        info["provenance"]["conditions"] = {"instruct-1": {"text": text, "origin": "file"}}
        (run / "run.json").write_text(json.dumps(info))
    warnings = compare.compare_runs([a, b])["warnings"]
    assert any("instruct-1 is defined differently" in w for w in warnings)


def test_chat_or_base_comes_from_the_model_metadata_not_its_name(tmp_path: Path) -> None:
    named_chat = make_run(tmp_path / "smollm2-instruct-chat", metrics())
    info = json.loads((named_chat / "run.json").read_text())
    info["config"]["model"] = "SmolLM2-135M-Instruct"
    info["provenance"]["model"] = {"chat": False}
    (named_chat / "run.json").write_text(json.dumps(info))
    assert compare.chat_kind(RunFolder.open(named_chat))[0] == "base"
    # No record: the local tokenizer's chat template decides.
    model = tmp_path / "my-base-model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ x }}"}))
    local = make_run(tmp_path / "local", metrics())
    set_info(local, model=str(model))
    assert compare.chat_kind(RunFolder.open(local)) == ("chat", "local tokenizer files")
    # Nothing recorded, no tokenizer, a plain prompt: unknown, not a guess.
    plain = make_run(tmp_path / "plain", metrics())
    write_first_row(plain, "Question: Who?\nAnswer:")
    assert compare.chat_kind(RunFolder.open(plain))[0] is None


def test_every_gain_and_analysis_number_carries_its_interval(tmp_path: Path) -> None:
    from test_gains import bbq_rows

    from probe.scoring.metrics import compute_metrics

    rows = (bbq_rows("baseline") + bbq_rows("instruct-1", shift=0.5)
            + bbq_rows("negate-1", noise_seed=2))
    run = make_run(tmp_path / "run", compute_metrics(rows, n_boot=200))
    accs = {"logreg": [0.55, 0.8]}
    probes = probes_json(accs)
    probes["targets"] = {"self_corrected:instruct-1": probes["targets"]["biased_answer"],
                         "condition:negate-1": json.loads(json.dumps(
                             probes["targets"]["biased_answer"]))}
    probes["targets"]["condition:negate-1"]["layers"][0]["logreg"].update(
        {"accuracy": 0.99, "accuracy_ci": [0.89, 1.0]})
    (run / "probes.json").write_text(json.dumps(probes))
    patched = patching({"attn": [0.1, -0.4], "mlp": [0.2, 0.3]})
    patched["meta"] = {"source": "negate-1", "target": "baseline"}
    (run / "patching.json").write_text(json.dumps(patched))
    result = compare.compare_runs([run])
    by = {r["condition"]: r for r in result["rows"]}
    for row in by.values():
        for key in compare.GAIN_KEYS:
            if row[key] is not None:
                assert row[f"{key}_lo"] <= row[key] <= row[f"{key}_hi"], key
    # each condition shows its own probe and patching numbers, never another's
    assert (by["instruct-1"]["probe_target"], by["instruct-1"]["probe_accuracy"]) == (
        "self_corrected:instruct-1", 0.8)
    assert (by["negate-1"]["probe_target"], by["negate-1"]["probe_accuracy"]) == (
        "condition:negate-1", 0.99)
    assert (by["negate-1"]["probe_accuracy_lo"], by["negate-1"]["probe_accuracy_hi"]) == (
        0.89, 1.0)
    assert by["negate-1"]["patching_peak"] == -0.4
    assert (by["negate-1"]["patching_peak_lo"], by["negate-1"]["patching_peak_hi"]) == (-0.4,
                                                                                         -0.4)
    assert by["instruct-1"]["patching_peak"] is None
    line = next(x for x in compare.format_compare(result).splitlines() if " negate-1 " in x)
    assert "0.990 [0.890,1.000] L0" in line and "-0.400 [-0.400,-0.400] L1 attn" in line


def test_compare_marks_follow_the_reports_verdicts() -> None:
    """A gain over one template is '?' (no verdict), not an effect; an interval containing 0
    is '~0'; an unreliable patching gap prints 'no effect' rather than a largest delta; the
    probe cell carries its control and p; n and k are the ambiguous bias gain's."""
    from probe.presentation.compare_format import NO_EFFECT

    def gain(value: float, ci: list[float], k: int) -> dict:
        return {"value": value, "ci": ci, "n_items": 12, "n_clusters": k,
                "spans_zero": ci[0] <= 0 <= ci[1]}

    row = {"run": "/x/run", "model": "m", "n_params": 1, "kind": "chat", "condition": "c",
           "mode": "letter", "probe_accuracy": 0.9, "probe_accuracy_lo": 0.8,
           "probe_accuracy_hi": 1.0, "probe_layer": 2, "probe_control": 0.51, "probe_p": 0.01,
           "patching_measure": NO_EFFECT}
    cells = {"gain_bias_score_ambig": gain(0.2, [0.2, 0.2], 1),
             "gain_bias_score_disambig": gain(0.1, [-0.1, 0.3], 12),
             "gain_accuracy_ambig": gain(0.3, [0.1, 0.5], 12)}
    for key, g in cells.items():
        row.update({key: g["value"], f"{key}_lo": g["ci"][0], f"{key}_hi": g["ci"][1],
                    f"{key}_n": 12, f"{key}_k": g["n_clusters"],
                    f"{key}_verdict": compare.verdict(g)})
    line = compare.format_compare({"rows": [row], "warnings": []}).splitlines()[1]
    assert "+0.200 [+0.200,+0.200]?" in line and "+0.100 [-0.100,+0.300]~0" in line
    assert "+0.300 [+0.100,+0.500] " in line  # differs from 0: no mark
    assert "L2 ctrl 0.510 p=0.010" in line and "no effect" in line
    assert line.split()[-4:-2] == ["12", "1"]
