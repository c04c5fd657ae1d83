"""How many torch threads to use: fewer when the machine is already oversubscribed.

torch starts one compute thread per core. On a shared machine whose load average already
is near or above its core count, those threads contend with the other processes' (every
thread waits for a core, and for the slowest one at each parallel region), so a probe
command asks only for the cores that are free, ``max(1, floor(cores - load))``, and leaves
torch's default alone on an idle machine. ``probe --threads N`` (or ``$PROBE_THREADS``)
overrides the choice; the tests set it, so that no result depends on the machine's load.
The choice is logged at INFO, not printed: a one-line error must stay one line.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def choose_threads(cores: int, load: float | None, override: int | None = None
                   ) -> tuple[int | None, str | None]:
    """The thread count to set (None: leave torch's default) and why, for the log.

    A pure function of the core count, the 1-minute load average (None where the platform
    has none) and the user's ``--threads`` override, so that the rule can be tested.
    """
    if override is not None:
        if override < 1:
            from probe.errors import ConfigError

            raise ConfigError(f"--threads {override}: need at least 1")
        return override, f"--threads {override}"
    if load is None or cores < 1:
        return None, None
    free = max(1, int(cores - load))
    if free >= cores:  # idle enough: torch's one thread per core is right
        return None, None
    return free, (f"load average {load:.1f} on {cores} cores: using {free} torch "
                  f"thread{'s' if free > 1 else ''} (override with --threads N)")


def apply_threads(override: int | None = None) -> int | None:
    """Set torch's thread count as :func:`choose_threads` decides; log the choice once."""
    try:
        load: float | None = os.getloadavg()[0]
    except (OSError, AttributeError):  # no load average on this platform
        load = None
    n, why = choose_threads(os.cpu_count() or 1, load, override)
    if n is None:
        return None
    import torch

    torch.set_num_threads(n)
    log.info("%s", why)
    return n
