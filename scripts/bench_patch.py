"""``python scripts/bench_patch.py [--positions N]``: all-position patching cost as a ratio.

Prints seconds per patched run over seconds per plain forward pass of the same prompt on
the embedded model (see probe/bench/patch_cost.py and docs/benchmarks.md); the bound is 3.
"""

from __future__ import annotations

import argparse
import json

import torch

from probe.bench.patch_cost import patch_cost
from probe.engine.models import load_model


def main() -> None:
    """Measure once and print the result as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--positions", type=int, default=8, help="last N prompt positions")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--rounds", type=int, default=2, help="alternations, min kept")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps(patch_cost(load_model(), args.positions, rounds=args.rounds), indent=2))


if __name__ == "__main__":
    main()
