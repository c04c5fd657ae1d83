"""Fault injection, a testing aid: make a real ``probe`` process die at a named point.

Set ``PROBE_FAULT="point:count"`` (or ``"point:count:INT"``; several specs separated by
commas) and the process sends itself SIGKILL (or INT, i.e. a Ctrl-C; TERM; STOP, a pause)
the ``count``-th time the code calls :func:`point` with that name. Tests use it to kill a
``probe run`` subprocess at exact places and check that a rerun finishes with the same
folder as an uninterrupted run. Unset (the normal case) :func:`point` does nothing but read one
environment variable.

Points called by the engine (see ``probe/engine/study.py``):

- ``batch-acts``: a batch's activations were handed to the shard writer (which may have
  just written a shard: a background write in flight is finished before the kill) and its
  rows are not yet in ``generations.jsonl``;
- ``batch-rows``: a batch's rows were appended to ``generations.jsonl``;
- ``metrics``: every row is written and sorted, ``metrics.json`` is not yet written.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

ENV = "PROBE_FAULT"
# STOP pauses the process (it keeps its files and locks) until a SIGCONT: tests use it to
# hold a run folder's lock while a second process tries the same folder.
SIGNALS = {"KILL": signal.SIGKILL, "INT": signal.SIGINT, "TERM": signal.SIGTERM,
           "STOP": signal.SIGSTOP}

# Calls per point name in this process; only counted while a fault is configured.
_hits: dict[str, int] = {}


def parse(spec: str) -> dict[str, tuple[int, signal.Signals]]:
    """``"a:2,b:1:INT"`` -> ``{"a": (2, SIGKILL), "b": (1, SIGINT)}``; bad specs raise."""
    faults: dict[str, tuple[int, signal.Signals]] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        fields = part.split(":")
        if len(fields) not in (2, 3) or not fields[1].isdigit() or int(fields[1]) < 1:
            raise ValueError(f"{ENV}: expected point:count[:KILL|INT|TERM|STOP], got {part!r}")
        sig = fields[2].upper() if len(fields) == 3 else "KILL"
        if sig not in SIGNALS:
            raise ValueError(f"{ENV}: unknown signal {sig!r} in {part!r}")
        faults[fields[0]] = (int(fields[1]), SIGNALS[sig])
    return faults


def point(name: str, before: Callable[[], None] | None = None) -> None:
    """Mark a point in the code; signal this process if ``$PROBE_FAULT`` says so.

    ``before`` runs only when the signal is about to be sent, to settle work in flight
    (a background shard write) so that what the kill leaves behind is deterministic.
    """
    spec = os.environ.get(ENV)
    if not spec:
        return
    wanted = parse(spec).get(name)
    if wanted is None:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == wanted[0]:
        if before is not None:
            before()
        os.kill(os.getpid(), wanted[1])


def reset() -> None:
    """Forget the counts (for in-process tests that run several times)."""
    _hits.clear()
