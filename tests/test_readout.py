"""The analyses' readout is the run's own score, per mode (no patch = what the run stored)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from probe.analysis import answers as ans
from probe.analysis import readout as ro
from probe.engine.inference import Engine
from probe.engine.models import LoadedModel
from tests.test_patching import make_run, sharp_model


@pytest.fixture(scope="module")
def sharp() -> LoadedModel:
    return sharp_model()


def _queries(run_dir: Path, engine: Engine) -> list[ro.Query]:
    run = ans.load_run(run_dir)
    return [q for cond in run.conditions() for item in run.items
            for q in ro.item_queries(run, engine, item, cond)]


@pytest.mark.parametrize(("mode", "balance"), [("text", False), ("letter", False),
                                               ("letter", True)])
def test_unpatched_readout_equals_the_runs_scores(tmp_path: Path, sharp: LoadedModel,
                                                  mode: str, balance: bool) -> None:
    """Per displayed order against the scores the run stored for it, and per item (the mean
    over orders) against the row's own option_scores difference."""
    engine = Engine(sharp, batch_size=3)
    run_dir = make_run(tmp_path, sharp, mode=mode, counterbalance=balance)
    queries = _queries(run_dir, engine)
    assert len(queries) >= 8 * (3 if balance else 1)
    assert {q.view for q in queries} == ({0, 1, 2} if balance else {0})
    got = np.concatenate([ro.score(engine, mode, queries[i:i + 3]).numpy()
                          for i in range(0, len(queries), 3)])
    stored = np.array([ro.stored_value(q) for q in queries], dtype=float)
    assert np.abs(stored).max() > 0.1  # the comparison is not between zeros
    np.testing.assert_allclose(got, stored, atol=1e-4)
    run = ans.load_run(run_dir)
    keys = [(q.item_id, q.condition) for q in queries]
    ids, per_item = ro.item_means([f"{i}|{c}" for i, c in keys], got)
    rows = [run.rows[tuple(k.split("|"))] for k in ids]  # type: ignore[misc]
    np.testing.assert_allclose(per_item, [ro.row_value(r) for r in rows], atol=1e-4)


def test_generate_readout_is_the_first_differing_token(tmp_path: Path,
                                                       sharp: LoadedModel) -> None:
    """Against a plain forward over prompt + the options' shared leading tokens."""
    engine = Engine(sharp, batch_size=4)
    queries = _queries(make_run(tmp_path, sharp, mode="generate"), engine)
    got = ro.score(engine, "generate", queries[:4]).numpy()
    tok = sharp.tokenizer
    for q, value in zip(queries[:4], got, strict=True):
        assert q.stored is None
        u, b = (tok(q.options[k], add_special_tokens=False).input_ids
                for k in (q.unbiased, q.biased))
        j = next(i for i, (x, y) in enumerate(zip(u, b, strict=False)) if x != y)
        ids = tok(q.prompt, add_special_tokens=False).input_ids + u[:j]
        with torch.no_grad():
            logits = sharp.hf_model(input_ids=torch.tensor([ids])).logits[0, -1].float()
        lp = torch.log_softmax(logits, -1)
        assert value == pytest.approx(float(lp[u[j]] - lp[b[j]]), abs=1e-4)
    # BBQ options here share their first token ("The ..."): the readout is not read there
    assert any(ro.differing_token(ro.pack(engine, [q]), 0, q) for q in queries)
