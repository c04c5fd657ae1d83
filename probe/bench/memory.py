"""Peak memory of a block of work, and the caching-memory check in fresh subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from probe.bench.config import BenchConfig


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



def caching_memory(cfg: BenchConfig) -> list[dict[str, Any]]:
    """Peak memory of ``run_study(cache_acts=True)`` at each per-category limit, each in a
    fresh subprocess so one measurement's allocations cannot hide another's."""
    results = []
    for limit in cfg.memory_limits:
        spec = {**asdict(cfg), "memory_limits": [limit]}
        proc = subprocess.run([sys.executable, "-m", "probe.bench.memory", json.dumps(spec)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"caching-memory subprocess failed:\n{proc.stderr[-2000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results



def study_child(spec: dict[str, Any]) -> None:
    """Subprocess body of :func:`caching_memory`: one cached run, numbers on stdout."""
    import resource

    from probe.bench.models import shape_model
    from probe.config import RunConfig
    from probe.engine.models import load_model
    from probe.engine.study import run_study

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



if __name__ == "__main__":
    study_child(json.loads(sys.argv[1]))
