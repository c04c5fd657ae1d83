"""Time every row round-robin, fill in rates and ratios, and describe the setting."""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from probe.bench.config import BenchConfig, Row
from probe.bench.flops import forward_flops, matmul_tflops, project_study
from probe.bench.memory import caching_memory, peak_memory
from probe.bench.models import Prompts, bench_prompts, shape_model
from probe.bench.tasks import Task, plan_rows
from probe.engine.attention import resolve_attention
from probe.engine.models import LoadedModel


def measure(plan: list[tuple[Row, Task]], repeats: int, device: str, n_items: int,
            clock: str = "wall") -> list[Row]:
    """Warm up every row (on one batch), time them round-robin, fill in rates, ratios and
    PASS/FAIL. ``clock`` "process" times CPU seconds of this process instead of wall time."""
    now = time.process_time if clock == "process" else time.perf_counter
    times: dict[str, list[float]] = {row.name: [] for row, _ in plan}
    outputs, tokens = {}, {}
    for rnd in range(repeats + 1):  # round 0 is the warm-up
        for row, task in plan:
            with peak_memory(device) as mem:
                start = now()
                out, n_tok = task(rnd == 0)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                elapsed = now() - start
            row.peak_mb = max(row.peak_mb, mem["peak_mb"])
            if rnd == 1:
                outputs[row.name], tokens[row.name] = out, n_tok
            if rnd > 0:
                times[row.name].append(elapsed)
    rows = {row.name: row for row, _ in plan}
    for row in rows.values():
        row.seconds, row.best = statistics.median(times[row.name]), min(times[row.name])
        # Probe rows count the reference's tokens: greedy outputs are the same text.
        n_tok = tokens[row.name] or tokens[row.reference or row.name]
        row.items_per_s, row.tokens_per_s = n_items / row.seconds, n_tok / row.seconds
    for row in rows.values():
        if row.reference is not None and outputs[row.name] is not None:
            row.same_output = outputs[row.name] == outputs[row.reference]
        if row.is_reference and not row.bound:
            continue
        fastest = min((r for r in rows.values() if r.group == row.group and r.is_reference
                       and not r.bound), key=lambda r: r.seconds)
        row.reference, row.ratio = fastest.name, fastest.seconds / row.seconds
        if row.target is not None:
            row.status = "PASS" if row.ratio >= row.target else "FAIL"
    return list(rows.values())


def _meta(cfg: BenchConfig, loaded: LoadedModel, prompts: Prompts) -> dict[str, Any]:
    import transformers

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next((x.split(":", 1)[1].strip() for x in info.splitlines()
                if x.startswith("model name")), platform.processor())
    tok = loaded.tokenizer
    n_prompt = [len(tok(t, add_special_tokens=False).input_ids) for t in prompts.generate]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpu": cpu, "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if cfg.device.startswith("cuda") else None,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "clock": cfg.clock,
        "transformers": transformers.__version__,
        "load_avg_1m": os.getloadavg()[0],
        "model": f"{cfg.shape} (random weights)" if cfg.shape else loaded.name,
        "n_params": sum(p.numel() for p in {id(p): p for p in loaded.hf_model.parameters()}
                        .values()),
        # The kernel the `probe ...` rows run (--attention auto), not the bridged model's
        # config, which stays eager while sdpa_attention swaps the kernel in per call.
        "probe_attention": resolve_attention("auto", loaded.hf_model),
        "n_items": len(prompts.generate), "mean_prompt_tokens": statistics.mean(n_prompt),
        **{k: v for k, v in asdict(cfg).items() if k not in ("model", "shape", "n_items")},
    }


def run_bench(cfg: BenchConfig, memory: bool = True) -> dict[str, Any]:
    """Measure every row (and the caching memory, unless ``memory`` is False)."""
    from probe.engine.models import load_model, resolve_device

    cfg.device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.shape:
        loaded = shape_model(cfg.shape, cfg.device, cfg.dtype, cfg.force)
    else:
        loaded = load_model(cfg.model, cfg.device, cfg.dtype)
    prompts = bench_prompts(loaded, cfg.data_dir, cfg.n_items)
    meta = _meta(cfg, loaded, prompts)
    rows = measure(plan_rows(loaded, prompts, cfg), cfg.repeats, cfg.device,
                   len(prompts.generate), cfg.clock)
    meta["load_avg_1m_after"] = os.getloadavg()[0]
    meta["matmul_tflops"] = matmul_tflops(cfg.device, cfg.dtype)
    add_flop_rates(rows, loaded, prompts, meta["matmul_tflops"])
    projection = None
    if cfg.project_conditions:
        letter = next(r for r in rows if r.name == "probe letter")
        projection = project_study(loaded, cfg.data_dir, cfg.project_conditions,
                                   letter.tokens_per_s)
    return {"meta": meta, "rows": [asdict(r) for r in rows], "projection": projection,
            "memory": caching_memory(cfg) if memory else []}


def add_flop_rates(rows: list[Row], loaded: LoadedModel, prompts: Prompts,
                   matmul: float) -> None:
    """Fill in each forward/likelihood row's useful FLOP rate and its share of ``matmul``.

    Every row of a group is credited with the same useful work, that of its reference (one
    prompt-only pass; probe's extra option tokens in text mode count as overhead).
    """
    tok = loaded.tokenizer
    flops = {group: forward_flops(loaded.hf_model, [len(tok(t, add_special_tokens=False)
                                                        .input_ids) for t in texts])
             for group, texts in (("letter", prompts.letter), ("text", prompts.text))}
    for row in rows:
        if row.group not in flops:
            continue
        row.tflops = flops[row.group] / row.seconds / 1e12
        row.peak_share = row.tflops / matmul

