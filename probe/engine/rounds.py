"""Activations at the answer position of each round before the scored one.

Multi-turn conditions (``review``, ``cot``) generate an answer to every turn but the last
(:func:`probe.engine.pipeline.run_batch`). With ``--cache-acts`` the hooks are read on each
of those generation passes at the last prompt token, the position the model writes that
round's answer from (left padding puts it in the last column of every row). They travel in
the batch's activation dict under :data:`ROUND_PREFIX` + hook name, ``(n, n_cols, d_model)``,
with :data:`RAN_KEY` ``(n, n_cols)`` saying which rounds ran (a turn whose prompt was too
long to generate from did not); the study writes them to ``activations/rounds/``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from probe.engine.hooks import Capture

ROUND_PREFIX = "rounds/"
RAN_KEY = "rounds/ran"


class RoundAnswers:
    """Per asked prompt, each earlier turn's hook vectors at its answer position."""

    def __init__(self, hook_names: Sequence[str], n_asked: int):
        self.hook_names = list(hook_names)
        self.got: list[dict[int, dict[str, torch.Tensor]]] = [{} for _ in range(n_asked)]

    def capture(self) -> Capture:
        """A capture of the last prompt token for one generation pass."""
        return Capture(self.hook_names, 1)

    def record(self, turn: int, asked: Sequence[int], capture: Capture) -> None:
        """Keep the pass's vectors: row ``j`` of the pass is asked prompt ``asked[j]``."""
        taken = capture.take()
        for j, i in enumerate(asked):
            self.got[i][turn] = {h: taken[h][j, -1] for h in self.hook_names}


def round_tensors(got: Sequence[dict[int, dict[str, torch.Tensor]]], hook_names: Sequence[str],
                  n_cols: int, d_model: int) -> dict[str, torch.Tensor]:
    """The rows' earlier rounds as batch tensors: zeros (and not ran) where a row has no
    such round or its turn was too long to generate from."""
    out = {ROUND_PREFIX + h: torch.zeros((len(got), n_cols, d_model)) for h in hook_names}
    ran = torch.zeros((len(got), n_cols), dtype=torch.bool)
    for i, turns in enumerate(got):
        for turn, vectors in turns.items():
            ran[i, turn] = True
            for h in hook_names:
                out[ROUND_PREFIX + h][i, turn] = vectors[h].float()
    out[RAN_KEY] = ran
    return out


def split_rounds(acts: dict[str, torch.Tensor]
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(main hooks' tensors, round tensors keyed by plain hook name plus RAN_KEY)."""
    main = {k: v for k, v in acts.items() if not k.startswith(ROUND_PREFIX)}
    rounds = {(k if k == RAN_KEY else k[len(ROUND_PREFIX):]): v
              for k, v in acts.items() if k.startswith(ROUND_PREFIX)}
    return main, rounds
