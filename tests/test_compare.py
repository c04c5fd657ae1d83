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

from probe import compare
from probe.cli import ProbeGroup
from probe.commands.report import compare_cmd
from probe.errors import ConfigError


def write_first_row(run: Path, prompt: str) -> None:
    (run / "generations.jsonl").write_text(json.dumps(
        {"item_id": "x", "condition": "baseline", "benchmark": "bbq", "prompt": prompt}) + "\n")


def two_runs(tmp_path: Path) -> tuple[Path, Path, dict]:
    data = metrics()
    data["conditions"]["negate-1"] = json.loads(json.dumps(data["conditions"]["instruct-1"]))
    data["conditions"]["negate-1"]["bbq"]["overall"]["ambig"]["accuracy"] = 0.8
    data["conditions"]["cot"] = data["conditions"]["instruct-1"]  # not an instruction: left out
    chat = make_run(tmp_path / "chat", data)
    write_first_row(chat, "<|im_start|>user\nWho?<|im_end|>\n<|im_start|>assistant\n")
    base = make_run(tmp_path / "base", metrics())
    write_first_row(base, "Question: Who?\nAnswer:")
    info = json.loads((base / "run.json").read_text())
    info["provenance"]["model"] = {"n_params": 360_000_000}
    (base / "run.json").write_text(json.dumps(info))
    (base / "probes.json").write_text(json.dumps(probes_json({"logreg": [0.6, 0.85, 0.7]})))
    (base / "patching.json").write_text(json.dumps(
        patching({"attn": [0.1, -0.4], "mlp": [0.2, 0.3]})))
    return chat, base, data


def test_gains_are_instructed_minus_baseline(tmp_path: Path) -> None:
    chat, base, data = two_runs(tmp_path)
    result = compare.compare_runs([chat, base], {"chat": 135_000_000})
    rows = {(Path(r["run"]).name, r["condition"]): r for r in result["rows"]}
    assert set(rows) == {("chat", "instruct-1"), ("chat", "negate-1"), ("base", "instruct-1")}
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
    assert runs["chat"]["kind"] == "aligned/chat" and runs["base"]["kind"] == "base"
    assert (runs["base"]["probe_layer"], runs["base"]["probe_accuracy"]) == (1, 0.85)
    assert (runs["base"]["patching_peak"], runs["base"]["patching_peak_layer"]) == (-0.4, 1)
    assert runs["chat"]["probe_layer"] is None and runs["chat"]["patching_peak"] is None


def test_outputs_written_and_command(tmp_path: Path) -> None:
    chat, base, _ = two_runs(tmp_path)
    group = ProbeGroup("t")
    group.add_command(compare_cmd)
    out = tmp_path / "cmp"
    res = CliRunner().invoke(group, ["compare", str(chat), str(base), "--out", str(out),
                                     "--size", "chat=135M"])
    assert res.exit_code == 0, res.output
    assert "135000000" in res.output and "aligned/chat" in res.output
    with (out / "compare.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    saved = json.loads((out / "compare.json").read_text())
    assert len(rows) == len(saved["rows"]) == 3
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
