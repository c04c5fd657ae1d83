"""Throughput and memory of probe's engine against plain Hugging Face, in one process.

The reference is an un-bridged copy of the same weights (eager attention, as the bridge
uses; sdpa as a second row). Every row runs the same BBQ prompts (baseline condition) in
the same length-sorted batches; after one warm-up each, rows are timed round-robin
``repeats`` times (so load from other processes spreads over all rows) and the median is
kept. Memory is the peak above the level before the measurement: RSS sampled from
``/proc/self/statm`` on CPU (tracemalloc does not see torch), ``max_memory_allocated`` on
GPU. The caching-memory check runs ``run_study(cache_acts=True)`` in fresh subprocesses.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from probe.errors import ConfigError
from probe.models import DEFAULT_MODEL, LoadedModel

TARGETS = {"probe generate": 0.8, "probe generate + capture": 0.7, "probe letter": 0.9,
           "probe letter + capture": 0.7, "probe text": 0.9}
# Llama-2-7B's architecture (random weights); the vocabulary is the tokenizer's.
SHAPES: dict[str, dict[str, Any]] = {"llama-7b": dict(
    hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5)}


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
    memory_limits: list[int] = field(default_factory=lambda: [1, 4])  # items per category


@dataclass
class Row:
    """One measured configuration; ``ratio`` is reference time / this row's time."""

    name: str
    group: str
    reference: str | None
    seconds: float = 0.0
    best: float = 0.0
    items_per_s: float = 0.0
    tokens_per_s: float = 0.0
    peak_mb: float = 0.0
    ratio: float | None = None
    target: float | None = None
    status: str = ""
    same_output: bool | None = None


# -- memory ----------------------------------------------------------------------------
def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux /proc; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@contextmanager
def peak_memory(device: str, interval: float = 0.01) -> Iterator[dict[str, float]]:
    """Yield a dict that holds, on exit, ``peak_mb``: the peak above the starting level."""
    out = {"peak_mb": 0.0}
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        yield out
        torch.cuda.synchronize()
        out["peak_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
        return
    start, peak, stop = rss_mb(), [rss_mb()], threading.Event()

    def sample() -> None:  # torch kernels release the GIL, so this thread keeps sampling
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        out["peak_mb"] = max(peak[0], rss_mb()) - start


# -- models and prompts ----------------------------------------------------------------
def shape_config(shape: str, vocab_size: int, bos: int | None = None,
                 eos: int | None = None) -> Any:
    """The Hugging Face config of a named architecture (``SHAPES``) with this vocabulary."""
    from transformers import AutoConfig

    if shape not in SHAPES:
        raise ConfigError(f"--shape {shape!r}: known shapes are {', '.join(SHAPES)}")
    return AutoConfig.for_model("llama", vocab_size=vocab_size, bos_token_id=bos,
                                eos_token_id=eos, **SHAPES[shape])


def shape_model(shape: str, device: str, dtype: str, force: bool) -> LoadedModel:
    """A bridged random-weight model with the named architecture (e.g. Llama-2-7B), using
    the embedded model's tokenizer (so its vocabulary: 49152 tokens, not Llama's 32000)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from probe.models import _converted_dir, bridge_from_hf, embedded_gguf, resolve_dtype

    if not device.startswith("cuda") and not force:
        raise ConfigError(f"--shape {shape} builds a ~7B-parameter model (about 14 GB in "
                          f"bfloat16, twice that with the reference copy); run it on a GPU "
                          f"with --device cuda, or pass --force")
    tokenizer = AutoTokenizer.from_pretrained(
        str(_converted_dir(DEFAULT_MODEL, embedded_gguf(DEFAULT_MODEL))))
    config = shape_config(shape, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=resolve_dtype(dtype))
    return bridge_from_hf(f"{shape}-shape", model, tokenizer, device, dtype, source=shape)


def plain_copy(loaded: LoadedModel, attn: str) -> Any:
    """An un-bridged Hugging Face model holding a copy of ``loaded``'s weights."""
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    bridged = loaded.hf_model
    # The weights are overwritten below: skip the (slow) random initialisation.
    with torch.device(loaded.device), no_init_weights():
        ref = AutoModelForCausalLM.from_config(copy.deepcopy(bridged.config),
                                               attn_implementation=attn, dtype=bridged.dtype)
    # The bridge wraps each module as `<name>._original_component`; strip that to get HF keys.
    state = {k.replace("._original_component", ""): v for k, v in bridged.state_dict().items()}
    missing = ref.load_state_dict(state, strict=False).missing_keys
    if missing:
        raise RuntimeError(f"weights not found in the bridged model: {missing[:3]}")
    return ref.eval()


@dataclass
class Prompts:
    """Rendered prompts of each kind, sorted longest first, with likelihood options."""

    generate: list[str]
    letter: list[str]
    letter_options: list[list[str]]
    text: list[str]
    text_options: list[list[str]]


def bench_prompts(loaded: LoadedModel, data_dir: str, n_items: int) -> Prompts:
    """``n_items`` BBQ items (spread over categories) under the baseline condition."""
    from probe.conditions import get_condition
    from probe.data.bbq import CATEGORIES, load_bbq
    from probe.prompts import render
    from probe.scoring_modes import mode_prefix, option_texts

    items, _ = load_bbq(Path(data_dir), limit=max(1, math.ceil(n_items / len(CATEGORIES))))
    items = items[:n_items]
    tok = loaded.tokenizer
    items.sort(key=lambda it: -len(tok(get_condition("baseline").build(it).final.user).input_ids))
    out: dict[str, tuple[list[str], list[list[str]]]] = {}
    for mode in ("generate", "letter", "text"):
        texts, options = [], []
        for item in items:
            final = get_condition("baseline").build(item).final
            prefix = final.assistant_prefix + mode_prefix(item, mode)
            texts.append(render(tok, loaded.chat, [], final.user, prefix))
            options.append(option_texts(item, mode, prefix))
        out[mode] = (texts, options)
    return Prompts(out["generate"][0], *out["letter"], *out["text"])


# -- measured tasks --------------------------------------------------------------------
# A task runs every batch, or only the first when warming up; it returns the outputs to
# compare with the reference row's and the number of tokens it processed.
Task = Callable[[bool], tuple[list[str] | None, int]]


def _chunks(xs: list[Any], size: int, warm: bool = False) -> list[list[Any]]:
    return [xs[i:i + size] for i in range(0, len(xs), size)][:1 if warm else None]


def _hf_generate(model: Any, loaded: LoadedModel, texts: list[str], cfg: BenchConfig,
                 eos: list[int]) -> Task:
    from transformers import GenerationConfig

    tok = loaded.tokenizer
    gen = GenerationConfig(max_new_tokens=cfg.new_tokens, do_sample=False, num_beams=1,
                           pad_token_id=tok.pad_token_id, eos_token_id=eos)

    @torch.inference_mode()
    def task(warm: bool = False) -> tuple[list[str] | None, int]:
        outs, n_new = [], 0
        for chunk in _chunks(texts, cfg.batch_size, warm):
            enc = tok(chunk, add_special_tokens=False, padding=True, return_tensors="pt")
            enc = enc.to(loaded.device)
            new = model.generate(**enc, generation_config=gen)[:, enc.input_ids.shape[1]:]
            # New tokens up to and including the first EOS (the rest is padding).
            is_eos = torch.isin(new, torch.tensor(eos, device=new.device))
            n_new += int((is_eos.cumsum(-1) - is_eos.long() == 0).sum())
            outs += tok.batch_decode(new, skip_special_tokens=True)
        return outs, n_new

    return task


def _hf_forward(model: Any, loaded: LoadedModel, texts: list[str], size: int) -> Task:
    tok = loaded.tokenizer

    @torch.inference_mode()
    def task(warm: bool = False) -> tuple[list[str] | None, int]:
        n_tokens = 0
        for chunk in _chunks(texts, size, warm):
            enc = tok(chunk, add_special_tokens=False, padding=True, return_tensors="pt")
            enc = enc.to(loaded.device)
            positions = (enc.attention_mask.cumsum(-1) - 1).clamp(min=0)
            out = model(**enc, position_ids=positions, logits_to_keep=1)
            torch.log_softmax(out.logits[:, -1].float(), dim=-1)
            n_tokens += int(enc.attention_mask.sum())
        return None, n_tokens

    return task


def _probe_task(engine: Any, texts: list[str], options: list[list[str]] | None,
                cfg: BenchConfig, capture: Any = None) -> Task:
    def task(warm: bool = False) -> tuple[list[str] | None, int]:
        outs: list[str] = []
        for i, chunk in enumerate(_chunks(texts, cfg.batch_size, warm)):
            if capture is not None:
                capture.reset()
            if options is None:
                outs += engine.generate_batch(chunk, cfg.new_tokens, capture=capture)
            else:
                opts = options[i * cfg.batch_size:(i + 1) * cfg.batch_size]
                engine.option_logprobs_batch(chunk, opts, capture=capture)
            if capture is not None:
                capture.take()
        return (outs if options is None else None), 0

    return task


def _plan(loaded: LoadedModel, prompts: Prompts, cfg: BenchConfig) -> list[tuple[Row, Task]]:
    from probe.hooks import Capture, resid_hook_names
    from probe.inference import Engine

    engine = Engine(loaded, cfg.batch_size)
    eager, sdpa = plain_copy(loaded, "eager"), plain_copy(loaded, "sdpa")
    capture = Capture(resid_hook_names(loaded.n_layers), 1)
    eos, b = engine.eos_ids(), cfg.batch_size
    gen, ref_g = prompts.generate, "hf generate (eager)"
    ref_l, ref_t = "hf forward (eager) letter", "hf forward (eager) text"
    spec: list[tuple[str, str, str | None, Task]] = [
        (ref_g, "generate", None, _hf_generate(eager, loaded, gen, cfg, eos)),
        ("hf generate (sdpa)", "generate", ref_g, _hf_generate(sdpa, loaded, gen, cfg, eos)),
        ("probe generate", "generate", ref_g, _probe_task(engine, gen, None, cfg)),
        ("probe generate + capture", "generate", ref_g,
         _probe_task(engine, gen, None, cfg, capture)),
        (ref_l, "letter", None, _hf_forward(eager, loaded, prompts.letter, b)),
        ("hf forward (sdpa) letter", "letter", ref_l, _hf_forward(sdpa, loaded, prompts.letter, b)),
        ("probe letter", "letter", ref_l,
         _probe_task(engine, prompts.letter, prompts.letter_options, cfg)),
        ("probe letter + capture", "letter", ref_l,
         _probe_task(engine, prompts.letter, prompts.letter_options, cfg, capture)),
        (ref_t, "text", None, _hf_forward(eager, loaded, prompts.text, b)),
        ("probe text", "text", ref_t,
         _probe_task(engine, prompts.text, prompts.text_options, cfg)),
    ]
    return [(Row(name, group, ref, target=TARGETS.get(name)), task)
            for name, group, ref, task in spec]


def measure(plan: list[tuple[Row, Task]], repeats: int, device: str, n_items: int) -> list[Row]:
    """Warm up every row (on one batch), time them round-robin, fill in rates, ratios and
    PASS/FAIL."""
    times: dict[str, list[float]] = {row.name: [] for row, _ in plan}
    outputs, tokens = {}, {}
    for rnd in range(repeats + 1):  # round 0 is the warm-up
        for row, task in plan:
            with peak_memory(device) as mem:
                start = time.perf_counter()
                out, n_tok = task(rnd == 0)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - start
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
        if row.reference is not None:
            ref = rows[row.reference]
            row.ratio = ref.seconds / row.seconds
            if outputs[row.name] is not None:
                row.same_output = outputs[row.name] == outputs[ref.name]
        if row.target is not None and row.ratio is not None:
            row.status = "PASS" if row.ratio >= row.target else "FAIL"
    return list(rows.values())


# -- caching memory --------------------------------------------------------------------
def caching_memory(cfg: BenchConfig) -> list[dict[str, Any]]:
    """Peak memory of ``run_study(cache_acts=True)`` at each per-category limit, each in a
    fresh subprocess so one measurement's allocations cannot hide another's."""
    results = []
    for limit in cfg.memory_limits:
        spec = {**asdict(cfg), "memory_limits": [limit]}
        proc = subprocess.run([sys.executable, "-m", "probe.bench", json.dumps(spec)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"caching-memory subprocess failed:\n{proc.stderr[-2000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


def _study_child(spec: dict[str, Any]) -> None:
    """Subprocess body of :func:`caching_memory`: one cached run, numbers on stdout."""
    import resource

    from probe.config import RunConfig
    from probe.models import load_model
    from probe.study import run_study

    cfg = BenchConfig(**spec)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    loaded = (shape_model(cfg.shape, cfg.device, cfg.dtype, cfg.force) if cfg.shape
              else load_model(cfg.model, cfg.device, cfg.dtype))
    run_cfg = RunConfig(model=cfg.model, benchmarks=["bbq"], conditions=["baseline"],
                        limit=cfg.memory_limits[0], mode="letter", batch_size=cfg.batch_size,
                        device=cfg.device, dtype=cfg.dtype, data_dir=cfg.data_dir,
                        cache_acts=True)
    before = rss_mb()
    with tempfile.TemporaryDirectory() as tmp, peak_memory(cfg.device) as mem:
        result = run_study(run_cfg, Path(tmp) / "run", loaded=loaded)
    print(json.dumps({
        "limit_per_category": cfg.memory_limits[0], "rows": result.n_rows,
        "study_peak_mb": round(mem["peak_mb"], 1), "rss_before_study_mb": round(before, 1),
        # ru_maxrss is KiB on Linux: the process's lifetime peak, model load included.
        "process_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


# -- the whole benchmark ---------------------------------------------------------------
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
        "transformers": transformers.__version__,
        "load_avg_1m": os.getloadavg()[0],
        "model": f"{cfg.shape} (random weights)" if cfg.shape else loaded.name,
        "n_params": sum(p.numel() for p in {id(p): p for p in loaded.hf_model.parameters()}
                        .values()),
        "attn_bridged": getattr(loaded.hf_model.config, "_attn_implementation", None),
        "n_items": len(prompts.generate), "mean_prompt_tokens": statistics.mean(n_prompt),
        **{k: v for k, v in asdict(cfg).items() if k not in ("model", "shape", "n_items")},
    }


def run_bench(cfg: BenchConfig, memory: bool = True) -> dict[str, Any]:
    """Measure every row (and the caching memory, unless ``memory`` is False)."""
    from probe.models import load_model, resolve_device

    cfg.device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.shape:
        loaded = shape_model(cfg.shape, cfg.device, cfg.dtype, cfg.force)
    else:
        loaded = load_model(cfg.model, cfg.device, cfg.dtype)
    prompts = bench_prompts(loaded, cfg.data_dir, cfg.n_items)
    meta = _meta(cfg, loaded, prompts)
    rows = measure(_plan(loaded, prompts, cfg), cfg.repeats, cfg.device, len(prompts.generate))
    meta["load_avg_1m_after"] = os.getloadavg()[0]
    return {"meta": meta, "rows": [asdict(r) for r in rows],
            "memory": caching_memory(cfg) if memory else []}


if __name__ == "__main__":
    _study_child(json.loads(sys.argv[1]))
