"""Review rounds of a run's cached activations: :meth:`RoundsView.at_round` on ``run.cache``.

A multi-turn condition (``review``: answer, then "review your answer" and answer again;
``cot``: reason, then answer) asks the model once per turn. Round ``r``'s answer position is
the last prompt token before the model writes round ``r``'s answer. The final (scored)
round's is the main store's position -1; the earlier rounds' are stored beside it, in
``activations/rounds/`` (see :mod:`probe.activations`). A single-turn condition has one
round, round 0, at position -1. Runs cached before rounds were stored have no
``activations/rounds/``: their final round still reads, earlier rounds raise DataError.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from probe.activations import INDEX, ActivationStore
from probe.activations.layout import ROUNDS_DIR
from probe.errors import ConfigError, DataError, UnknownNameError


def row_rounds(row: dict[str, Any]) -> int:
    """Number of rounds (turns) a generation row was asked in: its earlier turns + 1."""
    return 1 + len((row.get("meta") or {}).get("history") or [])


class RoundsView:
    """Per-round activations of run rows; mixed into ``ActivationCache``."""

    store: ActivationStore
    rows: Sequence[dict[str, Any]]

    def _rounds_store(self) -> ActivationStore | None:
        """``activations/rounds/`` of this run, or None (no multi-turn rows, or older run)."""
        if not hasattr(self, "_rounds"):
            folder = Path(self.store.acts_dir) / ROUNDS_DIR
            self._rounds = ActivationStore(folder) if (folder / INDEX).is_file() else None
        return self._rounds

    def n_rounds(self, condition: str) -> int:
        """Rounds of ``condition`` that :meth:`at_round` reads: 1 for a single-turn condition,
        2 for ``review`` and ``cot`` (the most any of its rows has, should a user condition
        vary by item); 0 for a multi-turn condition of a run cached before earlier rounds
        were stored (its final round is ``cache[hook]`` at position -1)."""
        counts = [row_rounds(r) for r in self.rows if str(r["condition"]) == condition]
        if not counts:
            names = sorted({str(r["condition"]) for r in self.rows})
            raise UnknownNameError("condition", condition, names)
        most = max(counts)
        return most if most == 1 or self._rounds_store() is not None else 0

    def round_mask(self, round: int) -> torch.Tensor:
        """(n_rows,) bool: which rows have an activation for ``round`` (see :meth:`at_round`)."""
        return ~torch.isnan(self._round_values(self.store.hook_names[0], round)[:, 0])

    def at_round(self, hook: str, round: int) -> torch.Tensor:
        """(n_rows, d_model) float32: ``hook`` at round ``round``'s answer position, row-aligned
        with ``run.rows``. The final round of each row is its position -1 (as ``cache[hook]``);
        earlier rounds come from ``activations/rounds/``. NaN for rows whose condition has no
        such round, rows without activations (prompts refused as too long) and earlier rounds
        whose own prompt was too long to generate from; :meth:`round_mask` is False there.
        """
        return self._round_values(hook, round).clone()

    def _round_values(self, hook: str, round: int) -> torch.Tensor:
        from probe.store.act_cache import hook_name

        name = hook_name(hook)
        if name not in self.store.hook_names:
            raise UnknownNameError("hook", name, self.store.hook_names)
        if round < 0:
            raise ConfigError(f"round {round}: rounds count from 0")
        memo: dict[tuple[str, int], torch.Tensor] = self.__dict__.setdefault("_round_memo", {})
        if (name, round) not in memo:
            memo[(name, round)] = self._load_round(name, round)
        return memo[(name, round)]

    def _load_round(self, name: str, round: int) -> torch.Tensor:
        n_of = [row_rounds(r) for r in self.rows]
        out = torch.full((len(self.rows), self.store.d_model), float("nan"))
        final = [i for i, n in enumerate(n_of) if n == round + 1]
        if final:
            last = self[name][:, self.position(-1)]  # type: ignore[index, attr-defined]
            out[final] = last[final]
        earlier = [i for i, n in enumerate(n_of) if n > round + 1]
        if earlier:
            self._fill_earlier(out, earlier, name, round)
        return out

    def _fill_earlier(self, out: torch.Tensor, wanted: list[int], name: str, round: int) -> None:
        """Rows ``wanted`` at a round before their last, from the rounds store."""
        rounds = self._rounds_store()
        if rounds is None:
            raise DataError(f"round {round} of multi-turn rows is not stored: this run's "
                            f"activations were cached before review rounds were (rerun "
                            f"`probe run --cache-acts` into a new --out)", str(self.store.acts_dir))
        if round not in rounds.positions:
            return  # no condition of this run has that many rounds stored
        col = rounds.positions.index(round)
        where = {(str(m["item_id"]), str(m["condition"])): j for j, m in enumerate(rounds.rows)
                 if bool(m["rounds_ran"][col])}
        pairs = [(i, where.get((str(self.rows[i]["item_id"]), str(self.rows[i]["condition"]))))
                 for i in wanted]
        have = [(i, j) for i, j in pairs if j is not None]
        if have:
            out[[i for i, _ in have]] = rounds.load(name, [j for _, j in have], position=round)
