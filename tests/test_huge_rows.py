"""A row far longer than the model's context is refused without tokenizing all of it.

The bound (probe/engine/lengths.py): a text of c characters has at least c / longest-token
tokens. Checked here: the bound never exceeds the true count, texts within the budget get
their exact count, and a multi-megabyte context never reaches the tokenizer, in a plain
condition and in one that generates a first turn (cot).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from probe.config import RunConfig
from probe.engine.inference import Engine
from probe.engine.study import run_study
from tests.conftest_data import bbq_cells, bbq_row, shared_data_dir, write_jsonl

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bound_is_below_the_true_count_and_exact_within_budget(tiny) -> None:
    from probe.engine.lengths import count_tokens, longest_token

    engine = Engine(tiny, 4)
    words = (shared_data_dir() / "bbq" / "Age.jsonl").read_text()[:20000].split()
    rng = random.Random(0)
    longest = longest_token(tiny.tokenizer)
    for size in (10, 200, 3000):
        text = " ".join(rng.choice(words) for _ in range(size))
        true = engine.n_tokens(text)
        assert len(text) / longest <= true
        assert count_tokens(engine, text, budget=true) == (true, True)
        n, exact = count_tokens(engine, text, budget=len(text) // longest - 1)
        assert not exact and n <= true  # the bound, not a count


def test_megabyte_context_never_reaches_the_tokenizer(tiny, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    huge = "The grandfather and the grandson met. " * 60_000  # 2.3 MB
    write_jsonl(data / "bbq" / "Age.jsonl", [*bbq_cells("Age", 1), bbq_row(example_id=99,
                                                                          context=huge)])
    seen: list[int] = []
    n_tokens, encode = Engine.n_tokens, Engine.encode

    def counting(self: Engine, text: str) -> int:
        seen.append(len(text))
        return n_tokens(self, text)

    def encoding(self: Engine, texts: list[str]) -> object:
        seen.extend(len(t) for t in texts)
        return encode(self, texts)

    monkeypatch.setattr(Engine, "n_tokens", counting)
    monkeypatch.setattr(Engine, "encode", encoding)
    cfg = RunConfig(model="tiny-random", benchmarks=["bbq"], conditions=["baseline", "cot"],
                    mode="generate", max_new_tokens=4, reasoning_tokens=4, data_dir=str(data))
    run_study(cfg, tmp_path / "out", loaded=tiny)
    assert seen and max(seen) < 100_000
    rows = [json.loads(x) for x in (tmp_path / "out" / "generations.jsonl").open()]
    big = [r for r in rows if r["item_id"] == "bbq:Age:99"]
    assert len(big) == 2 and all(r["truncated"] and r["pred"] is None for r in big)
    assert all(r["n_prompt_tokens"] > tiny.n_ctx and r["meta"]["n_prompt_tokens_at_least"]
               for r in big)
    assert not any(r["truncated"] for r in rows if r["item_id"] != "bbq:Age:99")
