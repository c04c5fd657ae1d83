"""Batched inference through the bridge: greedy generation and option likelihoods.

Calls go to the bridged Hugging Face model (``bridge.original_model``), whose modules the
bridge has wrapped: TransformerLens hooks fire on every pass while generation keeps HF's
KV cache and speed. Batches are length-sorted and left-padded, with an attention mask and
matching position ids everywhere, so batched results equal one-at-a-time results.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from probe.engine.attention import (
    needs_bridge_attention,
    resolve_attention,
    sdpa_active,
    sdpa_attention,
)
from probe.engine.continuation import option_token_ids
from probe.engine.hooks import Capture, HookFn, hooked
from probe.engine.models import LoadedModel
from probe.engine.packing import Packed, model_attention_mask, option_logprob_sums, pack_options
from probe.engine.plain import bridge_observed, twin
from probe.errors import ConfigError

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Batch:
    """Left-padded token ids with their mask and position ids, on the model's device."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    lengths: list[int]


def is_oom(err: BaseException) -> bool:
    """Whether an exception is an out-of-memory error worth retrying with a smaller batch."""
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


class Engine:
    """Runs prompts through one loaded model; ``batch_size`` halves on out-of-memory.

    ``attention="sdpa"`` runs attention with PyTorch's fused kernel on every call whose
    hooks allow it (see :mod:`probe.engine.attention`); "eager" keeps the bridge's own
    attention; "auto" (the default) is sdpa where the model's attention allows it, else eager
    (:func:`~probe.engine.attention.resolve_attention`). ``attention`` holds the resolved kernel.
    A pass that no hook observes runs through the un-bridged twin over the same weights
    (:mod:`probe.engine.plain`; ``plain=False`` keeps every pass in the bridge).
    """

    def __init__(self, loaded: LoadedModel, batch_size: int = 16, attention: str = "auto",
                 plain: bool = True):
        self.loaded = loaded
        self.batch_size = batch_size
        self.attention = resolve_attention(attention, loaded.hf_model)
        self.tokenizer = loaded.tokenizer
        self.model = loaded.hf_model
        self.plain = plain

    def _unobserved(self, hooks: Sequence[tuple[str, HookFn]]) -> bool:
        """Whether a pass with ``hooks`` may run through the plain twin: none of its own,
        and none attached anywhere else (see :func:`probe.engine.plain.bridge_observed`)."""
        return self.plain and not hooks and not bridge_observed(self.loaded)

    @contextmanager
    def running(self, hooks: Sequence[tuple[str, HookFn]]) -> Iterator[Any]:
        """Attach ``hooks`` around model calls, with the fast attention where it may serve
        (``--attention sdpa``, no hook that needs the bridge's attention); yields the model to
        call: the bridged one, or the plain twin when nothing observes the pass. Nests."""
        if self._unobserved(hooks):
            yield twin(self.loaded, self.attention)
            return
        fast = self.attention == "sdpa" and not needs_bridge_attention(
            [n for n, _ in hooks], self.model)
        if self.attention == "sdpa" and not fast and sdpa_active(self.model):
            # An enclosing block already swapped the bridge's attention out.
            raise ConfigError(f"hooks {[n for n, _ in hooks][:3]} need the bridge's own "
                              f"attention, inside a block that runs sdpa; use --attention eager")
        with hooked(self.loaded.bridge, hooks), \
                (sdpa_attention(self.model) if fast else nullcontext()):
            yield self.model

    # -- batching ---------------------------------------------------------------------
    def map_batches(self, items: Sequence[T], fn: Callable[[list[T]], list[R]],
                    sort_key: Callable[[T], int] | None = None,
                    on_batch: Callable[[list[int], list[R]], None] | None = None) -> list[R]:
        """Apply ``fn`` to length-sorted batches; results come back in input order.

        On out-of-memory the batch size halves and the same batch is retried; batches already
        done are kept (and were already handed to ``on_batch``), and the size that worked is
        remembered for later calls.
        """
        order = sorted(range(len(items)), key=(lambda i: -sort_key(items[i])) if sort_key
                       else (lambda i: i))
        results: list[R | None] = [None] * len(items)
        start = 0
        while start < len(order):
            idx = order[start:start + self.batch_size]
            try:
                out = fn([items[i] for i in idx])
            except RuntimeError as err:
                if not is_oom(err) or self.batch_size == 1:
                    raise
                self.batch_size = max(1, self.batch_size // 2)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            for i, r in zip(idx, out, strict=True):
                results[i] = r
            if on_batch is not None:
                on_batch(idx, out)
            start += len(idx)
        return results  # type: ignore[return-value]  # every slot is filled above

    def encode(self, texts: Sequence[str]) -> Batch:
        """Tokenize prompts that already carry their special tokens; pad on the left."""
        enc = self.tokenizer(list(texts), add_special_tokens=False, padding=True,
                             return_tensors="pt")
        return self._batch(enc.input_ids, enc.attention_mask)

    def encode_ids(self, rows: Sequence[Sequence[int]]) -> Batch:
        """Left-pad token id lists into a batch (as :meth:`encode` pads tokenized text)."""
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, row in enumerate(rows):
            ids[b, width - len(row):] = torch.tensor(list(row), dtype=torch.long)
            mask[b, width - len(row):] = 1
        return self._batch(ids, mask)

    def _batch(self, ids: torch.Tensor, mask: torch.Tensor) -> Batch:
        mask = mask.to(self.loaded.device)
        # Positions count real tokens only, as HF generate does for left padding.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return Batch(ids.to(self.loaded.device), mask, positions, mask.sum(-1).tolist())

    def n_tokens(self, text: str) -> int:
        """Number of tokens of a prompt text."""
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    # -- generation -------------------------------------------------------------------
    @torch.inference_mode()
    def generate_batch(self, texts: Sequence[str], max_new_tokens: int,
                       capture: Capture | None = None,
                       hooks: Sequence[tuple[str, HookFn]] = ()) -> list[str]:
        """Greedy continuations of one batch; hooks fire on the prompt pass and every step
        (``capture`` keeps the prompt pass and, if it asks, the first ``n_steps`` steps)."""
        from transformers import GenerationConfig

        batch = self.encode(texts)
        config = GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
            pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.eos_ids())
        all_hooks = [*(capture.hooks() if capture else []), *hooks]
        if capture is not None and not capture.n_steps and self._unobserved(hooks):
            new = self._generate_after_capture(batch, config, capture)
        else:
            with self.running(all_hooks) as model:
                out = model.generate(input_ids=batch.input_ids,
                                     attention_mask=batch.attention_mask,
                                     generation_config=config)
            new = out[:, batch.input_ids.shape[1]:]
        if capture is not None and capture.n_steps:
            capture.keep_steps(self.n_before_eos(new))
        return self.tokenizer.batch_decode(new, skip_special_tokens=True)

    def _generate_after_capture(self, batch: Batch, config: Any, capture: Capture
                                ) -> torch.Tensor:
        """Greedy generation whose prompt pass runs through the bridge with ``capture``'s
        hooks and whose decoding steps (which the capture ignores) run through the plain twin
        over the prompt pass's KV cache: the same tokens as one bridged ``generate``, which
        picks each token as the argmax of the float32 logits and pads a finished row."""
        with self.running(capture.hooks()) as model:
            out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                        position_ids=batch.position_ids, use_cache=True, logits_to_keep=1)
        first = out.logits[:, -1, :].float().argmax(-1, keepdim=True)
        eos = torch.tensor(self.eos_ids(), device=first.device)
        if config.max_new_tokens == 1 or bool(torch.isin(first, eos).all()):
            return first
        ones = torch.ones_like(first, dtype=batch.attention_mask.dtype)
        rest = copy.copy(config)
        rest.max_new_tokens = config.max_new_tokens - 1
        with self.running(()) as model:
            ids = model.generate(input_ids=torch.cat([batch.input_ids, first], -1),
                                 attention_mask=torch.cat([batch.attention_mask, ones], -1),
                                 past_key_values=out.past_key_values, generation_config=rest)
        new = ids[:, batch.input_ids.shape[1]:]
        # A row whose first token ended it was not known to generate as finished: pad what
        # it wrote after, as generate pads every finished row.
        is_eos = torch.isin(new, eos).long()
        done = is_eos.cumsum(-1) - is_eos > 0
        return new.masked_fill(done, self.tokenizer.pad_token_id)

    def n_before_eos(self, new: torch.Tensor) -> list[int]:
        """Per row, the new tokens before the first EOS: the answer's own tokens. (A row
        generated alone stops at its EOS, so counting past it would depend on the batch.)"""
        is_eos = torch.isin(new, torch.tensor(self.eos_ids(), device=new.device))
        return (is_eos.long().cumsum(-1) == 0).sum(-1).tolist()

    def eos_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        if isinstance(configured, int):
            ids.add(configured)
        elif isinstance(configured, list):
            ids.update(configured)
        return sorted(i for i in ids if i is not None)

    # -- likelihood -------------------------------------------------------------------
    @torch.inference_mode()
    def forward_last(self, texts: Sequence[str], capture: Capture | None = None,
                     hooks: Sequence[tuple[str, HookFn]] = (), use_cache: bool = False
                     ) -> tuple[torch.Tensor, Any, Batch]:
        """One prompt pass: log-probs at the last position (batch, vocab), the KV cache."""
        batch = self.encode(texts)
        all_hooks = [*(capture.hooks() if capture else []), *hooks]
        with self.running(all_hooks) as model:
            out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                        position_ids=batch.position_ids, use_cache=use_cache,
                        logits_to_keep=1)
        logprobs = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
        return logprobs, out.past_key_values if use_cache else None, batch

    @torch.inference_mode()
    def option_logprobs_batch(self, texts: Sequence[str], options: Sequence[Sequence[str]],
                              capture: Capture | None = None,
                              hooks: Sequence[tuple[str, HookFn]] = ()) -> list[list[float]]:
        """Mean log-prob per token of each option continuing its prompt, in one forward pass.

        ``texts[b] + options[b][k]`` is tokenized as one string and the option's tokens are
        its tail (:func:`probe.engine.continuation.option_token_ids`), so they are the tokens the
        model would read in the joined text. Prompt and option tails are packed into one
        row per prompt with a block attention mask (see :mod:`probe.engine.packing`). ``capture``
        reads each row's prompt columns; ``hooks`` see the whole packed rows.
        """
        packed = self.pack_batch(texts, options)
        all_hooks = [*(capture.hooks(end=packed.prompt_end) if capture else []), *hooks]
        return self.option_means(packed, self.packed_logprobs(packed, all_hooks))

    def pack_batch(self, texts: Sequence[str], options: Sequence[Sequence[str]]) -> Packed:
        """The packed prompt+option rows that option scoring runs (:mod:`probe.engine.packing`)."""
        n_opt = len(options[0])
        if any(len(o) != n_opt for o in options):
            raise ValueError("every prompt in a batch needs the same number of options")
        split = [option_token_ids(self.tokenizer, t, o) for t, o in zip(texts, options,
                                                                           strict=True)]
        conts = [tails for _, tails in split]
        batch = self.encode_ids([prompt for prompt, _ in split])
        return pack_options(batch.input_ids, batch.attention_mask, conts,
                            self.tokenizer.pad_token_id)

    @torch.inference_mode()
    def packed_logprobs(self, packed: Packed, hooks: Sequence[tuple[str, HookFn]] = ()
                        ) -> torch.Tensor:
        """Log-softmaxed logits of packed rows from column ``packed.first_read`` on."""
        width = packed.input_ids.shape[1]
        with self.running(hooks) as model:
            out = model(input_ids=packed.input_ids,
                        attention_mask=model_attention_mask(
                            packed, self.model.config, self.model.dtype),
                        position_ids=packed.position_ids, use_cache=False,
                        logits_to_keep=width - packed.first_read)
        return torch.log_softmax(out.logits.float(), dim=-1)

    @staticmethod
    def option_means(packed: Packed, logprobs: torch.Tensor) -> list[list[float]]:
        """Mean log-prob per token of each option, from :meth:`packed_logprobs`."""
        sums = option_logprob_sums(logprobs, packed)
        lengths = torch.tensor([[len(ids) for ids in row] for row in packed.conts],
                               dtype=torch.float64)
        return (sums / lengths).tolist()

    @torch.inference_mode()
    def option_logprobs_reference(self, text: str, options: Sequence[str]) -> list[float]:
        """The slow, obviously-correct path: each prompt+option in its own full forward."""
        prompt_ids, conts = option_token_ids(self.tokenizer, text, options)
        scores = []
        for cont in conts:
            ids = torch.tensor([prompt_ids + cont], device=self.loaded.device)
            logits = self.model(input_ids=ids).logits[0].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            positions = torch.arange(len(prompt_ids) - 1, len(prompt_ids) + len(cont) - 1)
            scores.append(logprobs[positions, torch.tensor(cont)].mean().item())
        return scores
