"""Logit lens: the last layer is the model's own output; the command end to end."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from probe.analysis import answers as ans
from probe.analysis import lens as ln
from probe.analysis import readout as ro
from probe.engine.inference import Engine
from probe.engine.models import LoadedModel, load_model
from tests.test_patching import make_run, sharp_model


@pytest.mark.parametrize(("mode", "options"), [("letter", ("a", "b", "c")),
                                               ("text", ("The grandfather", "The grandson",
                                                         "Can't be determined")),
                                               ("generate", ("The grandfather", "The grandson",
                                                             "Can't be determined"))])
def test_last_layer_is_the_real_readout(mode: str, options: tuple[str, ...]) -> None:
    loaded = sharp_model(seed=2)
    engine = Engine(loaded, batch_size=3)
    texts = ["Who was not comfortable using the phone? The answer is (",
             "hi", "I saw a grandson and their grandfather. The answer is ("]
    queries = [ro.Query(f"x{i}", "c", t, options, i % 3, (i + 1) % 3, None)
               for i, t in enumerate(texts)]
    scores, diff = ln.lens_batch(engine, mode, queries)
    assert scores.shape == (3, loaded.n_layers + 1, 2)
    assert diff < 1e-5
    real = ro.score(engine, mode, queries).numpy()
    np.testing.assert_allclose(scores[:, -1, 0] - scores[:, -1, 1], real, atol=1e-5)
    # earlier layers are a different readout, not a copy of the output
    assert np.abs(scores[:, 0] - scores[:, -1]).max() > 1e-2


def test_letters_must_be_single_tokens() -> None:
    from probe.errors import ConfigError

    class Splitting:  # two tokens per character
        def __call__(self, text: str, add_special_tokens: bool = False) -> object:
            return type("Enc", (), {"input_ids": [i for c in text for i in (ord(c), 0)]})()

    with pytest.raises(ConfigError, match="single tokens"):
        ans.letter_token_ids(Splitting())


def test_answer_pair_rules() -> None:
    meta = {"target_index": 0, "unknown_index": 2}
    assert ans.answer_pair({"context_condition": "ambig", "label": 2, "meta": meta}) == (0, 2)
    assert ans.answer_pair({"context_condition": "disambig", "label": 1, "meta": meta}) == (0, 1)
    assert ans.answer_pair({"context_condition": "disambig", "label": 0, "meta": meta}) is None
    assert ans.answer_pair({"context_condition": "ambig", "label": 2,
                            "meta": {"target_index": None, "unknown_index": 2}}) is None


@pytest.mark.parametrize("mode", ["letter", "text"])
def test_lens_command_matches_run_scores(tmp_path: Path, mode: str) -> None:
    from probe.commands.analysis import lens

    tiny = load_model("tiny-random")
    run_dir = make_run(tmp_path, tiny, mode=mode)
    group = click.Group()
    group.add_command(lens)
    res = CliRunner().invoke(group, ["lens", str(run_dir)])
    assert res.exit_code == 0, res.output
    out = json.loads((run_dir / "lens.json").read_text())
    assert out["meta"]["final_layer_max_abs_diff"] < 1e-5
    assert out["readout"]["mode"] == mode
    rows = {(r["item_id"], r["condition"]): r for r in
            map(json.loads, (run_dir / "generations.jsonl").read_text().splitlines())}
    for cond, block in out["conditions"].items():
        assert len(block["layers"]) == tiny.n_layers + 1
        # The last layer's readout is the run's own score difference.
        expect = []
        for item_id in block["item_ids"]:
            row = rows[(item_id, cond)]
            biased, unbiased = ans.answer_pair(row)  # type: ignore[misc]
            expect.append(row["option_scores"][unbiased] - row["option_scores"][biased])
        assert block["layers"][-1]["readout"]["mean"] == pytest.approx(np.mean(expect),
                                                                       abs=1e-5)
    assert (run_dir / "plots" / "lens.png").stat().st_size > 1000


@pytest.mark.slow
def test_lens_on_the_real_model(tmp_path: Path, real_model: LoadedModel) -> None:
    run_dir = make_run(tmp_path, real_model, per_cell=1, model="smollm2-135m")
    out = ln.run_lens(str(run_dir), conditions=["baseline"], limit=2, loaded=real_model)
    assert out["meta"]["final_layer_max_abs_diff"] < 1e-4
    layers = out["conditions"]["baseline"]["layers"]
    assert len(layers) == real_model.n_layers + 1
    assert all(rec["unbiased"]["mean"] <= 0 for rec in layers)
