"""The Python API: docs/api.md runs as written, activations line up with the rows (checked by
re-running stored prompts through plain Hugging Face), and the API and the CLI agree."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import probe
from tests.conftest import REPO

OPTIONS = {"model": "tiny-random", "benchmarks": ["bbq"], "categories": ["Age", "Religion"],
           "limit": 3, "conditions": ["baseline", "instruct-1"], "mode": "letter",
           "cache_acts": True, "act_positions": 2, "batch_size": 4}


pytestmark = pytest.mark.usefixtures("clean_registry")


@pytest.fixture(scope="module")
def api_run(tmp_path_factory, data_dir, tiny):
    out = tmp_path_factory.mktemp("api") / "run"
    return probe.run_study(out=out, data_dir=data_dir, loaded=tiny, **OPTIONS)


def test_import_is_fast_and_dir_lists_the_api() -> None:
    code = "import sys, probe; print('torch' in sys.modules); print(','.join(dir(probe)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert out[0] == "False"  # nothing heavy until a function is used
    names = set(out[1].split(","))
    assert {"open_run", "run_study", "score", "probes", "patch", "steer", "lens",
            "write_report", "compare_runs", "ActivationCache", "Run"} <= names
    assert all(callable(getattr(probe, n)) for n in probe.__all__ if n != "__version__")


def test_rows_align_with_activations(api_run, tiny) -> None:
    run = probe.open_run(api_run.path)
    cache = run.cache
    keys = [(r["item_id"], r["condition"]) for r in run.rows]
    stored = [(m["item_id"], m["condition"]) for m in cache.store.rows]
    assert sorted(keys) == sorted(stored) and keys != stored  # the join is not a no-op
    assert bool(cache.mask.all())
    hf, tok = tiny.hf_model, tiny.tokenizer
    for i in range(0, len(run.rows), 5):
        ids = tok(run.rows[i]["prompt"], add_special_tokens=False,
                  return_tensors="pt").input_ids
        with torch.no_grad():
            hidden = hf(input_ids=ids, output_hidden_states=True).hidden_states
        # HF's hidden_states[0] is the embedding, [L + 1] block L's output (the last one
        # is after the final norm in HF, so only blocks before the last are compared).
        for hook, ref in (("hook_embed", hidden[0]), ("blocks.0.hook_resid_post", hidden[1])):
            want = ref[0, -2:].float()  # the stored positions -2, -1
            # float16 storage: a relative rounding of 2**-11
            assert torch.allclose(cache[hook][i], want, rtol=2e-3, atol=1e-5), (i, hook)
        # Another item's row differs (block 0 mixes in the whole prompt, unlike the
        # embedding of the shared answer cue), so a misaligned join would fail above.
        other = next(j for j, r in enumerate(run.rows) if r["item_id"] != run.rows[i]["item_id"])
        assert not torch.allclose(cache["blocks.0.hook_resid_post"][other], hidden[1][0, -2:],
                                  rtol=2e-3, atol=1e-5)


def test_cache_accessors_agree(api_run) -> None:
    cache = probe.open_run(api_run.path).cache
    name = "blocks.1.hook_resid_post"
    assert torch.equal(cache["resid_post", 1], cache[name])
    assert torch.equal(cache["embed"], cache["hook_embed"])
    assert "resid_post", 1 in cache and "blocks.9.hook_resid_post" not in cache
    stack, labels = cache.accumulated_resid(pos=-1, return_labels=True)
    assert labels == ["embed", "0_post", "1_post"]
    assert torch.equal(stack[2], cache[name][:, cache.position(-1)])
    assert cache.accumulated_resid(layer=1, pos=None).shape == (2, *cache[name].shape)
    # Row i of the cache is the store's row for that key, read directly.
    run = probe.open_run(api_run.path)
    index = {(m["item_id"], m["condition"]): j for j, m in enumerate(cache.store.rows)}
    j = index[(run.rows[3]["item_id"], run.rows[3]["condition"])]
    assert torch.equal(cache[name][3], cache.store.load(name, [j], position=None)[0])


def test_metrics_match_the_file_and_a_rescore(api_run) -> None:
    from probe.scoring.metrics import compute_metrics

    run = probe.open_run(api_run.path)
    on_disk = json.loads((run.path / "metrics.json").read_text())
    assert run.metrics == on_disk
    again = json.loads(json.dumps(compute_metrics(run.rows)))
    assert again == on_disk
    assert probe.score(run) == on_disk
    assert run.conditions == ["baseline", "instruct-1"]
    assert len(run.where(condition="instruct-1")) == len(run.rows) // 2
    pandas = pytest.importorskip("pandas")
    frame = run.dataframe()
    assert isinstance(frame, pandas.DataFrame) and len(frame) == len(run.rows)


def test_api_run_study_writes_what_the_cli_writes(tmp_path: Path, data_dir: Path) -> None:
    from probe.cli import cli

    args = ["run", "--model", "tiny-random", "--benchmark", "bbq", "--category", "Age",
            "--limit", "2", "--condition", "baseline", "--condition", "instruct-1",
            "--mode", "letter", "--data-dir", str(data_dir), "--out", str(tmp_path / "cli")]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    run = probe.run_study(model="tiny-random", benchmarks=["bbq"], categories=["Age"],
                          limit=2, conditions=["baseline", "instruct-1"], mode="letter",
                          data_dir=data_dir, out=tmp_path / "api")
    for name in ("metrics.json", "generations.jsonl"):
        assert (tmp_path / "cli" / name).read_bytes() == (run.path / name).read_bytes(), name
    cli_cfg = json.loads((tmp_path / "cli" / "run.json").read_text())["config"]
    assert cli_cfg == {**run.config.to_dict(), "data_dir": cli_cfg["data_dir"]}


def test_analysis_functions_return_what_they_write(api_run, tiny) -> None:
    run = probe.open_run(api_run.path)
    steered = probe.steer(run, "instruct-1", layers=[1], alphas=[0.0, 4.0], limit=1,
                          loaded=tiny)
    assert steered == run.result("steering")
    assert steered["meta"]["n_items"] == 2  # one item per category, two categories
    lensed = probe.lens(api_run.path, ["instruct-1"], limit=1, loaded=tiny)
    assert lensed == run.result("lens") and list(lensed["conditions"]) == ["baseline",
                                                                           "instruct-1"]


def test_unknown_option_is_one_line(tmp_path: Path) -> None:
    from probe.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown keys.*'modle'"):
        probe.run_study(modle="tiny-random", out=tmp_path / "x")


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_docs_api_example_runs(tmp_path: Path, data_dir: Path, monkeypatch) -> None:
    """Every python block of docs/api.md, in order, in an empty folder."""
    blocks = python_blocks((REPO / "docs" / "api.md").read_text())
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROBE_DATA_DIR", str(data_dir))
    torch.set_num_threads(1)
    namespace: dict[str, object] = {}
    for n, code in enumerate(blocks):
        exec(compile(code, f"docs/api.md block {n + 1}", "exec"), namespace)
    run = namespace["run"]
    assert (tmp_path / "artifacts/runs/api-demo/report.html").is_file()
    assert namespace["stack"].shape[:2] == (3, len(run.rows))  # type: ignore[union-attr]
    assert namespace["mine"].condition_info()["be-fair"]["from_file"] is True  # type: ignore[union-attr]
