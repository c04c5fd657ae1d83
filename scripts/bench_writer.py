"""``python scripts/bench_writer.py``: how long the study loop waits on activation writes.

Synthetic rows of two model shapes (SmolLM2-135M: 31 hooks x 576; Llama-2-7B: 33 x 4096),
batches of 32, 256-row shards; synchronous writes vs the background writer the study uses.
"""

from __future__ import annotations

from probe.bench.writer import writer_stall

SHAPES = {"smollm2-135m": (576, 31), "llama-7b": (4096, 33)}


def main() -> None:
    """Print one line per shape and mode."""
    print(f"{'shape':14} {'mode':10} {'median wait ms':>14} {'wait at shard ms':>16} "
          f"{'sum of waits s':>14} {'close s':>8}")
    for name, (d_model, n_hooks) in SHAPES.items():
        for background in (False, True):
            r = writer_stall(d_model, n_hooks, background=background)
            print(f"{name:14} {'background' if background else 'sync':10} "
                  f"{1000 * r['median_wait_s']:14.1f} {1000 * r['max_wait_at_shard_s']:16.1f} "
                  f"{r['sum_wait_s']:14.2f} {r['close_s']:8.2f}")


if __name__ == "__main__":
    main()
