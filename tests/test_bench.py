"""Smoke tests of ``probe bench`` on the tiny random model (no timing assertions)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import pytest
import torch
from click.testing import CliRunner

from probe import bench
from probe.bench.memory import study_child
from probe.cli import ProbeGroup
from probe.commands.scale import bench_cmd
from probe.errors import ConfigError

ROWS = ["hf generate (eager)", "hf generate (sdpa)", "probe generate",
        "probe generate + capture", "probe generate (eager)", "probe generate (bridge only)",
        "probe generate + capture (bridge only)", "hf forward (eager) letter",
        "hf forward (sdpa) letter", "probe letter", "probe letter + capture",
        "probe letter (eager)", "hf forward (eager) text", "hf forward (sdpa) text",
        "hf forward (eager) text, prompt only", "probe text"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_bench_command_reports_every_row(tmp_path, data_dir):
    group = ProbeGroup(name="probe")
    group.add_command(bench_cmd)
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(group, [
        "bench", "--model", "tiny-random", "--items", "3", "--batch-size", "2",
        "--new-tokens", "2", "--repeats", "1", "--data-dir", str(data_dir), "--no-memory",
        "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [r["name"] for r in data["rows"]] == ROWS
    for row in data["rows"]:
        assert row["name"] in result.output
        assert row["seconds"] > 0 and math.isfinite(row["items_per_s"])
        assert math.isfinite(row["tokens_per_s"]) and row["tokens_per_s"] > 0
        if row["is_reference"] and not row["bound"]:
            assert row["ratio"] is None
        else:
            assert math.isfinite(row["ratio"]) and row["ratio"] > 0
        if row["target"] is not None:
            assert row["status"] in ("PASS", "FAIL") and row["status"] in result.output
    # Greedy generation through the bridge equals the un-bridged copy of the weights.
    assert all(r["same_output"] for r in data["rows"] if r["group"] == "generate"
               and r["name"] != "hf generate (eager)")
    assert data["meta"]["n_items"] == 3 and data["memory"] == []
    # Prompt-pass rows carry a FLOP rate and its share of the measured matmul rate.
    peak = data["meta"]["matmul_tflops"]
    assert peak > 0 and "TFLOP/s" in result.output
    for row in data["rows"]:
        if row["group"] == "generate":
            assert row["tflops"] is None
        else:
            assert row["peak_share"] == pytest.approx(row["tflops"] / peak)
    proj = data["projection"]
    assert proj["conditions"] == ["baseline", "instruct-1", "instruct-2", "instruct-3"]
    letter = next(r for r in data["rows"] if r["name"] == "probe letter")
    assert proj["tokens_per_s"] == letter["tokens_per_s"] and "projection" in result.output


def test_bench_refuses_unknown_projection_condition(data_dir):
    group = ProbeGroup(name="probe")
    group.add_command(bench_cmd)
    result = CliRunner().invoke(group, ["bench", "--model", "tiny-random", "--data-dir",
                                        str(data_dir), "--project-condition", "nope"])
    assert result.exit_code == 2 and "nope" in result.output


def test_plain_copy_has_the_same_weights(tiny):
    ref = bench.plain_copy(tiny, "eager")
    # Shared, not copied: every parameter is a view of the bridged model's storage.
    bridged = {p.data_ptr() for p in tiny.hf_model.parameters()}
    assert {p.data_ptr() for p in ref.parameters()} <= bridged
    ids = torch.tensor([[1, 5, 7, 9]])
    with torch.inference_mode():
        assert torch.equal(ref(input_ids=ids).logits, tiny.hf_model(input_ids=ids).logits)


def test_caching_memory_child_reports_rows(data_dir, capsys):
    spec = {**asdict(bench.BenchConfig(model="tiny-random", data_dir=str(data_dir),
                                       batch_size=4)), "memory_limits": [1]}
    study_child(spec)
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["rows"] > 0 and report["limit_per_category"] == 1
    assert report["process_maxrss_mb"] >= report["rss_before_study_mb"] > 0


def test_llama_shape_needs_a_gpu_and_has_llama2_7b_size():
    with pytest.raises(ConfigError, match="GPU"):
        bench.shape_model("llama-7b", "cpu", "bfloat16", force=False)
    from transformers import AutoModelForCausalLM

    config = bench.shape_config("llama-7b", vocab_size=32000)
    with torch.device("meta"):  # shapes only, no memory
        model = AutoModelForCausalLM.from_config(config)
    h, f, n_layers, vocab = 4096, 11008, 32, 32000
    expected = 2 * vocab * h + n_layers * (4 * h * h + 3 * h * f + 2 * h) + h
    assert sum(p.numel() for p in model.parameters()) == expected


def test_ratios_are_against_the_fastest_plain_reference():
    """A row's ratio is the faster of the group's plain-HF references over its time; a bound
    row (a cheaper computation than the task) is never the reference."""
    from probe.bench.config import Row
    from probe.bench.run import measure

    costs = {"hf a": 0.02, "hf b": 0.01, "bound": 0.001, "probe": 0.0125}

    def task_of(name):
        def task(warm):
            import time
            time.sleep(costs[name])
            return None, 10
        return task

    plan = [(Row("hf a", "g", None, is_reference=True), task_of("hf a")),
            (Row("hf b", "g", None, is_reference=True), task_of("hf b")),
            (Row("bound", "g", None, is_reference=True, bound=True), task_of("bound")),
            (Row("probe", "g", None, target=0.95), task_of("probe"))]
    rows = {r.name: r for r in measure(plan, repeats=3, device="cpu", n_items=1)}
    assert rows["probe"].reference == "hf b" and rows["bound"].reference == "hf b"
    assert rows["probe"].ratio == pytest.approx(rows["hf b"].seconds / rows["probe"].seconds)
    assert rows["probe"].ratio < 1 and rows["probe"].status == "FAIL"
    assert rows["hf a"].ratio is None and rows["hf b"].ratio is None


@pytest.mark.slow
def test_smollm2_shape_is_the_embedded_architecture() -> None:
    """--shape smollm2-135m (for a GPU the GGUF cannot be carried to) builds exactly the
    embedded model's architecture, so its speed is the embedded model's."""
    from transformers import AutoConfig

    from probe.bench.models import shape_config
    from probe.engine.models import embedded_dir

    ref = AutoConfig.from_pretrained(str(embedded_dir()))
    got = shape_config("smollm2-135m", ref.vocab_size, ref.bos_token_id, ref.eos_token_id)
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "max_position_embeddings",
                "tie_word_embeddings", "rope_parameters", "hidden_act", "vocab_size"):
        assert getattr(got, key) == getattr(ref, key), key
    assert got.rms_norm_eps == pytest.approx(ref.rms_norm_eps, rel=1e-6)


def test_shape_tokenizer_from_a_saved_folder(tiny, tmp_path, monkeypatch) -> None:
    from probe.bench.models import shape_tokenizer

    tiny.tokenizer.save_pretrained(str(tmp_path / "tok"))
    monkeypatch.setenv("PROBE_SHAPE_TOKENIZER", str(tmp_path / "tok"))
    assert shape_tokenizer()("a grandson").input_ids == tiny.tokenizer("a grandson").input_ids
    monkeypatch.setenv("PROBE_SHAPE_TOKENIZER", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="PROBE_SHAPE_TOKENIZER"):
        shape_tokenizer()
