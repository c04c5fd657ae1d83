"""``python scripts/bench.py [OPTIONS]``: the same as ``probe bench [OPTIONS]``.

For checkouts where the ``probe`` console script is not installed; see docs/benchmarks.md.
"""

from __future__ import annotations

import sys

import click

from probe.commands.scale import bench_cmd
from probe.errors import ProbeError


def main() -> int:
    """Run the bench command; user errors print one line and exit 2, as in ``probe``."""
    try:
        bench_cmd.main(prog_name="bench", standalone_mode=False)
    except click.ClickException as err:  # bad options: usage message, as click prints it
        err.show()
        return err.exit_code
    except ProbeError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
