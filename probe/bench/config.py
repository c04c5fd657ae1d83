"""Settings and result rows of ``probe bench``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from probe.engine.models import DEFAULT_MODEL

# Targets against the faster plain Hugging Face row of each group (issue 13).
TARGETS = {"probe generate": 0.95, "probe generate + capture": 0.9, "probe letter": 0.95,
           "probe letter + capture": 0.9, "probe text": 0.95}
# Architectures built with random weights (``--shape``); the vocabulary is the tokenizer's.
# llama-7b: Llama-2-7B. smollm2-135m: the embedded model's own architecture (its config.json),
# for a GPU that the 98 MB GGUF cannot be carried to: same shapes, so the same speed.
SHAPES: dict[str, dict[str, Any]] = {
    "llama-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                     num_attention_heads=32, num_key_value_heads=32,
                     max_position_embeddings=4096, rms_norm_eps=1e-5),
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3,
                         max_position_embeddings=8192, rms_norm_eps=1e-5,
                         rope_parameters={"rope_theta": 100000.0, "rope_type": "default"},
                         tie_word_embeddings=True),
}
SMALL_SHAPES = ("smollm2-135m",)  # small enough to build on a CPU without --force


@dataclass
class BenchConfig:
    """What to measure; defaults keep a CPU run of the embedded model near 3 minutes."""

    model: str = DEFAULT_MODEL
    shape: str | None = None
    force: bool = False
    n_items: int = 8
    batch_size: int = 4
    new_tokens: int = 8
    repeats: int = 3
    device: str = "cpu"
    dtype: str = "float32"
    data_dir: str = "data"
    threads: int | None = None  # torch CPU threads; None keeps torch's default
    # "wall" (perf_counter) or "process" (CPU seconds of this process, all its threads): on
    # a CPU shared with other jobs, their load moves wall time far more than CPU time.
    clock: str = "wall"
    memory_limits: list[int] = field(default_factory=lambda: [1, 4])  # items per category
    # Conditions of the full-BBQ time projection (None: no projection).
    project_conditions: list[str] | None = field(
        default_factory=lambda: ["baseline", "instruct-1", "instruct-2", "instruct-3"])


@dataclass
class Row:
    """One measured configuration. ``ratio`` is the time of the group's fastest plain Hugging
    Face reference (named in ``reference`` once measured) over this row's time; reference rows
    have none. ``reference`` names, before measuring, the row whose outputs this one must
    equal; ``bound`` rows are informative references that do not count as the fastest."""

    name: str
    group: str
    reference: str | None
    is_reference: bool = False
    bound: bool = False
    seconds: float = 0.0
    best: float = 0.0
    items_per_s: float = 0.0
    tokens_per_s: float = 0.0
    peak_mb: float = 0.0
    ratio: float | None = None
    target: float | None = None
    status: str = ""
    same_output: bool | None = None
    tflops: float | None = None  # useful prompt-pass FLOP rate (forward/likelihood rows)
    peak_share: float | None = None  # tflops / the device's measured matmul rate

