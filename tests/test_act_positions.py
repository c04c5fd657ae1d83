"""``--act-positions k`` on prompts shorter than k tokens, and flags checked before writing.

A prompt of n < k tokens has only n prompt positions: the first k - n stored columns must
not hold padding (left-padded passes) or wrapped-round columns (packed passes) labelled as
prompt offsets. They are zeros, the index records ``n_prompt_positions`` per row, and the
probes leave such rows out at offsets beyond their prompt.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from probe.activations import ActivationStore
from probe.analysis.targets import key_index
from probe.store.runs import RunFolder
from tests.test_bad_data import data  # noqa: F401 - the fixture
from tests.test_bad_input import run, user_error

K = 400  # tiny-random has 512 positions; every prompt here is shorter than K


@pytest.mark.parametrize("mode", ["text", "letter"])  # packed pass, left-padded pass
def test_short_prompts_store_zeros_and_count_real_positions(data: Path,  # noqa: F811
                                                            tmp_path: Path, mode: str) -> None:
    big, small = tmp_path / "big", tmp_path / "small"
    for out, k in ((big, K), (small, 8)):
        result = run(data, out, "--cache-acts", "--act-positions", str(k), "--mode", mode,
                     "--batch-size", "4")
        assert result.exit_code == 0, (result.output, result.exception)
    rows = {(r["item_id"], r["condition"]): r
            for r in map(json.loads, (big / "generations.jsonl").open())}
    store, ref = ActivationStore(big / "activations"), ActivationStore(small / "activations")
    assert len(store.rows) == len(rows) == 4
    hook = store.hook_names[-1]
    acts, ref_acts = store.load(hook, position=None), ref.load(hook, position=None)
    ref_at = {(m["item_id"], m["condition"]): i for i, m in enumerate(ref.rows)}
    for i, meta in enumerate(store.rows):
        n = rows[(meta["item_id"], meta["condition"])]["n_prompt_tokens"]
        assert 8 < n < K and meta["n_prompt_positions"] == n
        assert torch.count_nonzero(acts[i, :K - n]) == 0  # no padding posing as prompt
        assert torch.count_nonzero(acts[i, K - n:].abs().sum(-1)) == n  # every real one kept
        # The real columns are the prompt's: its last 8 equal a k=8 run's.
        assert torch.equal(acts[i, -8:], ref_acts[ref_at[(meta["item_id"], meta["condition"])]])
    shortest = min(m["n_prompt_positions"] for m in store.rows)
    assert len(key_index(store.rows, -shortest)) == 4
    assert len(key_index(store.rows, -(shortest + 1))) < 4


def test_act_positions_beyond_the_model(data: Path, tmp_path: Path) -> None:  # noqa: F811
    user_error(run(data, tmp_path / "out", "--cache-acts", "--act-positions", "513"),
               "--act-positions 513", "512")
    assert not (tmp_path / "out").exists()


def test_folder_with_nothing_computed_takes_the_corrected_command(tmp_path: Path) -> None:
    out = tmp_path / "run"
    RunFolder.create_or_resume(out, {"reasoning_tokens": -1}, {})
    (out / "generations.jsonl").write_text("")  # opened, nothing written, then it crashed
    folder = RunFolder.create_or_resume(out, {"reasoning_tokens": 96}, {})
    assert folder.config == {"reasoning_tokens": 96}
    (out / "generations.jsonl").write_text('{"item_id": "a", "condition": "b"}\n')
    with pytest.raises(Exception, match="another config"):
        RunFolder.create_or_resume(out, {"reasoning_tokens": 5}, {})
