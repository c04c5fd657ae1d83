"""A run's activation writers: the main store and, for multi-turn conditions, the rounds store.

The main store (``activations/``) holds every row's last k prompt positions (and generated
tokens with ``--cache-steps``). Rows of a multi-turn condition also get a row in
``activations/rounds/``: the answer position of each round before the scored one (position
label r = round r; see :mod:`probe.engine.rounds`). A batch's activations are complete only
when both stores hold its rows, so resume re-runs a batch one of them lacks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from probe.activations import ShardWriter
from probe.activations.layout import ROUNDS_DIR, Key
from probe.conditions.registry import get_condition
from probe.config import RunConfig
from probe.data.items import GenerationRow
from probe.engine.hooks import STEPS_KEY, Capture, cache_hook_names
from probe.engine.models import LoadedModel
from probe.engine.pipeline import Unit
from probe.engine.rounds import RAN_KEY, split_rounds
from probe.store.runs import RunFolder


@dataclass
class ActWriters:
    """The capture of the scored pass and the stores it is written to."""

    capture: Capture
    main: ShardWriter
    rounds: ShardWriter | None  # None: no condition of the run has more than one turn
    n_turns: dict[Key, int]

    @property
    def n_cols(self) -> int:
        """Earlier rounds stored per row (0 without a rounds store)."""
        return 0 if self.rounds is None else self.rounds.n_positions

    def drain(self) -> None:
        """Wait for both stores' shards in flight."""
        self.main.drain()
        if self.rounds is not None:
            self.rounds.drain()

    def close(self) -> None:
        """Write both stores' last shards."""
        self.main.close()
        if self.rounds is not None:
            self.rounds.close()


def n_turns(units: list[Unit]) -> dict[Key, int]:
    """Turns each unit is asked in (1 for single-turn conditions)."""
    return {u.key: len(get_condition(u.condition).build(u.item).turns) for u in units}


def open_writers(cfg: RunConfig, folder: RunFolder, loaded: LoadedModel,
                 units: list[Unit]) -> ActWriters:
    """Writers for a run with ``--cache-acts`` (resuming the stores already there)."""
    hooks = cache_hook_names(loaded.n_layers, cfg.cache_components)
    capture = Capture(hooks, cfg.act_positions, cfg.act_steps)
    # Shards are written in the background: the next batch runs while one is saved.
    main = ShardWriter(folder.acts_dir, hooks, len(capture.positions), loaded.d_model,
                       cfg.act_dtype, cfg.act_rows_per_shard, positions=capture.positions,
                       background=True)
    turns = n_turns(units)
    n_cols = max(turns.values(), default=1) - 1
    rounds = None
    if n_cols:
        rounds = ShardWriter(folder.acts_dir / ROUNDS_DIR, hooks, n_cols, loaded.d_model,
                             cfg.act_dtype, cfg.act_rows_per_shard,
                             positions=list(range(n_cols)), background=True)
    return ActWriters(capture, main, rounds, turns)


def acts_done(writers: ActWriters, folder: RunFolder) -> set[Key]:
    """Keys whose activations are complete: in the main store (and, for multi-turn rows, in
    the rounds store), or refused as too long (those never get activations)."""
    truncated = {(r["item_id"], r["condition"]) for r in folder.rows() if r.get("truncated")}
    done = writers.main.written_keys() | truncated
    if writers.rounds is not None:
        single = {k for k, n in writers.n_turns.items() if n == 1}
        done &= writers.rounds.written_keys() | truncated | single
    return done


def write_acts(writers: ActWriters, rows: list[GenerationRow], acts: dict[str, torch.Tensor],
               already: set[Key], already_rounds: set[Key]) -> None:
    """Add a batch's activations, skipping rows a complete shard already holds."""
    main, rounds = split_rounds(acts)
    ran = [r for r in rows if not r.truncated]
    _write_main(writers.main, ran, main, already)
    if writers.rounds is not None and rounds:
        _write_rounds(writers.rounds, ran, rounds, already_rounds)


def _write_main(writer: ShardWriter, ran: list[GenerationRow], acts: dict[str, torch.Tensor],
                already: set[Key]) -> None:
    keep = [i for i, r in enumerate(ran) if r.key not in already]
    if not keep:
        return
    steps = acts.pop(STEPS_KEY, None)
    k = sum(1 for p in writer.positions if p < 0)
    # A prompt shorter than k tokens: its first columns hold padding (or nothing), not
    # prompt positions. Store zeros there and record how many prompt columns are real.
    real = [min(k, int(ran[i].n_prompt_tokens or k)) for i in keep]
    metas = [{"item_id": ran[i].item_id, "condition": ran[i].condition,
              "benchmark": ran[i].benchmark, "group": ran[i].group,
              "positions": writer.positions, "n_prompt_positions": n,
              **({} if steps is None else {"n_steps": int(steps[i])})}
             for i, n in zip(keep, real, strict=True)]
    tensors = {name: t[keep] for name, t in acts.items()}
    for row, n in enumerate(real):
        if n < k:
            for t in tensors.values():
                t[row, :k - n] = 0
    writer.add(metas, tensors)


def _write_rounds(writer: ShardWriter, ran: list[GenerationRow],
                  rounds: dict[str, torch.Tensor], already: set[Key]) -> None:
    """Multi-turn rows' earlier rounds; ``rounds_ran[r]`` False where round r's prompt was
    too long to generate from (its column holds zeros)."""
    ran_flags = rounds.pop(RAN_KEY)
    keep = [i for i, r in enumerate(ran)
            if r.key not in already and len(r.meta.get("history") or []) > 0]
    if not keep:
        return
    metas = [{"item_id": ran[i].item_id, "condition": ran[i].condition,
              "benchmark": ran[i].benchmark, "group": ran[i].group,
              "positions": writer.positions,
              "n_rounds": 1 + len(ran[i].meta["history"]),
              "rounds_ran": [bool(x) for x in ran_flags[i]]} for i in keep]
    writer.add(metas, {name: t[keep] for name, t in rounds.items()})
