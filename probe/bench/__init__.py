"""``probe bench``: probe's engine against plain Hugging Face, in one process.

The reference is an un-bridged copy of the same weights (eager attention, as the bridge
uses; sdpa as a second row). Every row runs the same BBQ prompts (baseline condition) in
the same length-sorted batches; after one warm-up each, rows are timed round-robin
``repeats`` times (so load from other processes spreads over all rows) and the median is
kept. Memory is the peak above the level before the measurement: RSS sampled from
``/proc/self/statm`` on CPU (tracemalloc does not see torch), ``max_memory_allocated`` on
GPU. The caching-memory check runs ``run_study(cache_acts=True)`` in fresh subprocesses.
"""

from __future__ import annotations

from probe.bench.config import SHAPES, TARGETS, BenchConfig, Row
from probe.bench.models import bench_prompts, shape_config, shape_model
from probe.bench.run import measure, run_bench
from probe.engine.plain import plain_copy

__all__ = ["SHAPES", "TARGETS", "BenchConfig", "Row", "bench_prompts", "measure",
           "plain_copy", "run_bench", "shape_config", "shape_model"]
