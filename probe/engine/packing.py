"""Pack prompts and their answer options into one sequence per prompt, for one forward pass.

Scoring ``n`` options by likelihood needs ``log p(option | prompt)`` for each. Running
prompt+option ``n`` times repeats the prompt; a KV cache avoids that but costs a second
pass and ``n`` copies of the cache. Packing does it in one pass over barely more tokens than
the prompt alone::

    [pad pad pad p0 p1 p2 p3 a0 a1 b0 c0 c1]
    [p0  p1  p2  p3 p4 p5 p6 a0 b0 c0 c1 c2]
     left padding, the prompt, then each option's tail (options a, b, c)

Each option contributes all tokens but its last (its first token is predicted from the
prompt's last position, token ``j + 1`` from the option's own token ``j``). A block mask lets
option tokens see the prompt and the earlier tokens of *their own* option only, and their
position ids continue from the prompt's length, so each option is computed exactly as if it
alone followed the prompt. Prompt columns see only the prompt (causal), so anything read at
prompt positions (cached activations) is the same as in a prompt-only pass.

Sliding-window layers (Mistral, Phi-3 with ``sliding_window``, Gemma-2's local layers, Qwen
with ``use_sliding_window``) let a query see only keys fewer than ``window`` positions back.
Hugging Face builds that window into the mask it makes from a 2-D padding mask, but takes a
4-D mask as given, so :func:`model_attention_mask` applies the window to the block mask
itself, counted in position ids (each option's own positions), and passes one mask per layer
type where the model mixes windowed and full layers.

Rows are left-padded to the longest prompt+tails, so a row's options may sit where a longer
prompt's tokens are in another row; each row has its own ``prompt_end`` column. (Ending
every prompt at one column and appending the options after it would add the widest row's
options to every row: 4 % more columns on the benchmark's BBQ batches.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from probe.errors import ConfigError

PROMPT, PAD = -1, -2  # segment ids of prompt and padding columns; options are 0..n-1


@dataclass
class Packed:
    """One batch of packed prompt+options rows, ready for the model.

    ``prompt_end[b]`` is the column after row ``b``'s prompt; ``tail_cols[b][k]`` are the
    columns holding option ``k``'s tail in row ``b``.
    """

    input_ids: torch.Tensor  # (batch, length)
    allowed: torch.Tensor  # (batch, 1, length, length) bool: query may attend to key
    position_ids: torch.Tensor  # (batch, length)
    prompt_end: list[int]
    conts: list[list[list[int]]]
    tail_cols: list[list[list[int]]]

    @property
    def first_read(self) -> int:
        """The first column whose logits are needed (the earliest prompt's last token)."""
        return min(self.prompt_end) - 1

    def additive_mask(self, dtype: torch.dtype, window: int | None = None) -> torch.Tensor:
        """The mask as eager attention adds it to scores: 0 where allowed, a large negative
        (not -inf, so no row's softmax turns into NaN) elsewhere. With ``window``, a query
        also skips keys ``window`` or more positions back (a sliding-window layer)."""
        allowed = self.allowed
        if window is not None:
            back = self.position_ids[:, :, None] - self.position_ids[:, None, :]
            # As HF's sliding_window_overlay (key visible iff kv_idx > q_idx - window), in
            # positions, not columns: an option's tail sits after the other options' columns.
            allowed = allowed & (back < window)[:, None]
        mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        return mask.masked_fill_(~allowed, torch.finfo(dtype).min)


LAYER_TYPES = ("full_attention", "sliding_attention")


def model_attention_mask(packed: Packed, config: Any, dtype: torch.dtype
                         ) -> torch.Tensor | dict[str, torch.Tensor]:
    """The packed mask as this model needs it: one additive mask for every layer, or (when
    ``config.layer_types`` mixes full and sliding-window layers) one per layer type, the
    mapping that Gemma-2, Qwen2/3 and their kin accept in place of a mask.

    Models without ``layer_types`` apply ``config.sliding_window``, when set, to every layer
    (Mistral, Phi-3). Layer types other than full and sliding attention (chunked, linear,
    recurrent) are refused: a packed block mask cannot keep their options apart.
    """
    if getattr(config, "alibi", False):
        raise ConfigError("--mode text/letter pack the options with a 4-D attention mask, "
                          "which this model's ALiBi position bias (built from a 2-D padding "
                          "mask) cannot take; use --mode generate")
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if types is None:
        return packed.additive_mask(dtype, window)
    other = sorted(set(types) - set(LAYER_TYPES))
    if other:
        raise ConfigError(f"--mode text/letter pack the options with a block attention mask, "
                          f"which this model's {', '.join(other)} layers cannot take; use "
                          f"--mode generate")
    if "sliding_attention" not in types:
        return packed.additive_mask(dtype)
    return {"full_attention": packed.additive_mask(dtype),
            "sliding_attention": packed.additive_mask(dtype, window)}


def pack_options(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                 conts: list[list[list[int]]], pad_id: int) -> Packed:
    """Rows of prompt + option tails, left-padded to the longest, with the block mask."""
    ids_in, mask_in = prompt_ids.cpu(), prompt_mask.cpu().bool()
    prompts = [ids_in[b][mask_in[b]] for b in range(len(conts))]
    tails = [[ids[:-1] for ids in row] for row in conts]
    sizes = [len(p) + sum(len(t) for t in row) for p, row in zip(prompts, tails, strict=True)]
    length = max(sizes)
    ids = torch.full((len(conts), length), pad_id, dtype=torch.long)
    segment = torch.full((len(conts), length), PAD, dtype=torch.long)
    positions = torch.zeros((len(conts), length), dtype=torch.long)
    ends: list[int] = []
    tail_cols: list[list[list[int]]] = []
    for b, (prompt, row) in enumerate(zip(prompts, tails, strict=True)):
        col = length - sizes[b]
        pieces = [(PROMPT, prompt.tolist(), 0)] + [
            (k, tail, len(prompt)) for k, tail in enumerate(row)]
        cols_b = []
        for seg, tokens, first_pos in pieces:
            end = col + len(tokens)
            ids[b, col:end] = torch.tensor(tokens, dtype=torch.long)
            segment[b, col:end] = seg
            # Tails continue the prompt's own positions: as if each alone followed it.
            positions[b, col:end] = first_pos + torch.arange(len(tokens))
            if seg == PROMPT:
                ends.append(end)
            else:
                cols_b.append(list(range(col, end)))
            col = end
        tail_cols.append(cols_b)
    dev = prompt_ids.device
    return Packed(ids.to(dev), _block_mask(segment).to(dev), positions.to(dev), ends, conts,
                  tail_cols)


def _block_mask(segment: torch.Tensor) -> torch.Tensor:
    """Causal, and a key is visible if it is prompt or in the query's own option."""
    length = segment.shape[1]
    query, key = segment[:, :, None], segment[:, None, :]
    causal = torch.ones(length, length, dtype=torch.bool).tril()[None]
    allowed = causal & ((key == PROMPT) | (key == query)) & (query != PAD)
    # Every column sees at least itself, so padding rows stay finite (their outputs are
    # never read, but a NaN there would reach other rows through 0 * NaN in attention).
    allowed |= torch.eye(length, dtype=torch.bool)[None]
    return allowed[:, None]


def option_logprob_sums(logprobs: torch.Tensor, packed: Packed) -> torch.Tensor:
    """Sum of log-probs of every option's tokens, shape (batch, n_options).

    ``logprobs`` are the log-softmaxed logits from column ``packed.first_read`` to the end.
    """
    rows, cols, targets, owner = [], [], [], []
    for b, (conts, cols_b) in enumerate(zip(packed.conts, packed.tail_cols, strict=True)):
        for k, (ids, tail) in enumerate(zip(conts, cols_b, strict=True)):
            # Token 0 is read at the prompt's last column, token j + 1 at tail column j.
            for col, target in zip([packed.prompt_end[b] - 1, *tail], ids, strict=True):
                rows.append(b)
                cols.append(col - packed.first_read)
                targets.append(target)
                owner.append(b * len(conts) + k)
    dev = logprobs.device
    picked = logprobs[torch.tensor(rows, device=dev), torch.tensor(cols, device=dev),
                      torch.tensor(targets, device=dev)].float().cpu()
    n_batch, n_opt = len(packed.conts), len(packed.conts[0])
    sums = torch.zeros(n_batch * n_opt, dtype=torch.float64)
    sums.index_add_(0, torch.tensor(owner), picked.double())
    return sums.view(n_batch, n_opt)
