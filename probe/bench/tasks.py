"""The measured rows: plain Hugging Face references and probe's engine on the same batches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from probe.bench.config import TARGETS, BenchConfig, Row
from probe.bench.models import Prompts
from probe.engine.models import LoadedModel
from probe.engine.plain import twin

# probe with --attention eager, for scale; left out where the default already resolves to it.
EAGER_ROWS = ("probe generate (eager)", "probe letter (eager)")

# A task runs every batch, or only the first when warming up; it returns the outputs to
# compare with the reference row's and the number of tokens it processed.
Task = Callable[[bool], tuple[list[str] | None, int]]


def _chunks(xs: list[Any], size: int, warm: bool = False) -> list[list[Any]]:
    return [xs[i:i + size] for i in range(0, len(xs), size)][:1 if warm else None]


def _hf_generate(model: Any, loaded: LoadedModel, texts: list[str], cfg: BenchConfig,
                 eos: list[int]) -> Task:
    from transformers import GenerationConfig

    tok = loaded.tokenizer
    gen = GenerationConfig(max_new_tokens=cfg.new_tokens, do_sample=False, num_beams=1,
                           pad_token_id=tok.pad_token_id, eos_token_id=eos)

    @torch.inference_mode()
    def task(warm: bool = False) -> tuple[list[str] | None, int]:
        outs, n_new = [], 0
        for chunk in _chunks(texts, cfg.batch_size, warm):
            enc = tok(chunk, add_special_tokens=False, padding=True, return_tensors="pt")
            enc = enc.to(loaded.device)
            new = model.generate(**enc, generation_config=gen)[:, enc.input_ids.shape[1]:]
            # New tokens up to and including the first EOS (the rest is padding).
            is_eos = torch.isin(new, torch.tensor(eos, device=new.device))
            n_new += int((is_eos.cumsum(-1) - is_eos.long() == 0).sum())
            outs += tok.batch_decode(new, skip_special_tokens=True)
        return outs, n_new

    return task


def _hf_forward(model: Any, loaded: LoadedModel, texts: list[str], size: int) -> Task:
    tok = loaded.tokenizer

    @torch.inference_mode()
    def task(warm: bool = False) -> tuple[list[str] | None, int]:
        n_tokens = 0
        for chunk in _chunks(texts, size, warm):
            enc = tok(chunk, add_special_tokens=False, padding=True, return_tensors="pt")
            enc = enc.to(loaded.device)
            positions = (enc.attention_mask.cumsum(-1) - 1).clamp(min=0)
            out = model(**enc, position_ids=positions, logits_to_keep=1)
            torch.log_softmax(out.logits[:, -1].float(), dim=-1)
            n_tokens += int(enc.attention_mask.sum())
        return None, n_tokens

    return task


def _probe_task(engine: Any, texts: list[str], options: list[list[str]] | None,
                cfg: BenchConfig, capture: Any = None) -> Task:
    def task(warm: bool = False) -> tuple[list[str] | None, int]:
        outs: list[str] = []
        for i, chunk in enumerate(_chunks(texts, cfg.batch_size, warm)):
            if capture is not None:
                capture.reset()
            if options is None:
                outs += engine.generate_batch(chunk, cfg.new_tokens, capture=capture)
            else:
                opts = options[i * cfg.batch_size:(i + 1) * cfg.batch_size]
                engine.option_logprobs_batch(chunk, opts, capture=capture)
            if capture is not None:
                capture.take()
        return (outs if options is None else None), 0

    return task


def _hf_packed(model: Any, engine: Any, texts: list[str], options: list[list[str]],
               size: int) -> Task:
    """Plain HF scoring the options exactly as probe does: the same packed prompt+option rows
    and block mask (built before timing, so the reference pays only the model call)."""
    from probe.engine.packing import model_attention_mask, option_logprob_sums

    packs = [engine.pack_batch(texts[i:i + size], options[i:i + size])
             for i in range(0, len(texts), size)]
    lengths = [engine.n_tokens(t) for t in texts]

    @torch.inference_mode()
    def task(warm: bool = False) -> tuple[list[str] | None, int]:
        n_rows = 0
        for packed in packs[:1 if warm else None]:
            width = packed.input_ids.shape[1]
            out = model(input_ids=packed.input_ids, position_ids=packed.position_ids,
                        attention_mask=model_attention_mask(packed, model.config, model.dtype),
                        use_cache=False, logits_to_keep=width - packed.first_read)
            option_logprob_sums(torch.log_softmax(out.logits.float(), dim=-1), packed)
            n_rows += len(packed.conts)
        # Prompt tokens, as the other forward rows count them.
        return None, sum(lengths[:n_rows])

    return task


def plan_rows(loaded: LoadedModel, prompts: Prompts, cfg: BenchConfig) -> list[tuple[Row, Task]]:
    """Every row with its task: the plain-HF references (eager and sdpa) of each group, then
    probe's engine with its default kernel (``--attention auto``; hook-free passes run through
    the plain twin) and, for scale, the engine with eager attention and with every pass in the
    bridge (``bridge only``)."""
    from probe.engine.hooks import Capture, resid_hook_names
    from probe.engine.inference import Engine

    engine, slow = Engine(loaded, cfg.batch_size), Engine(loaded, cfg.batch_size, "eager")
    bridged = Engine(loaded, cfg.batch_size, plain=False)
    # The references: the engine's own cached un-bridged twins (same weights, no bridge).
    eager, sdpa = twin(loaded, "eager"), twin(loaded, "sdpa")
    capture = Capture(resid_hook_names(loaded.n_layers), 1)
    eos, b = engine.eos_ids(), cfg.batch_size
    gen, ref_g = prompts.generate, "hf generate (eager)"
    # Greedy outputs are compared with the reference of the same kernel: across kernels a
    # near-tie can flip in bfloat16 (random weights have many), which says nothing of probe.
    ref_k = f"hf generate ({engine.attention})"
    letter, l_opts = prompts.letter, prompts.letter_options
    text, t_opts = prompts.text, prompts.text_options
    ref_l, ref_t = "hf forward (eager) letter", "hf forward (eager) text"
    # (name, group, row whose outputs (generate) or token count it shares, is a
    # reference, task)
    spec: list[tuple[str, str, str | None, bool, Task]] = [
        (ref_g, "generate", None, True, _hf_generate(eager, loaded, gen, cfg, eos)),
        ("hf generate (sdpa)", "generate", ref_g, True,
         _hf_generate(sdpa, loaded, gen, cfg, eos)),
        ("probe generate", "generate", ref_k, False, _probe_task(engine, gen, None, cfg)),
        ("probe generate + capture", "generate", ref_k, False,
         _probe_task(engine, gen, None, cfg, capture)),
        ("probe generate (eager)", "generate", ref_g, False, _probe_task(slow, gen, None, cfg)),
        ("probe generate (bridge only)", "generate", ref_k, False,
         _probe_task(bridged, gen, None, cfg)),
        ("probe generate + capture (bridge only)", "generate", ref_k, False,
         _probe_task(bridged, gen, None, cfg, capture)),
        (ref_l, "letter", None, True, _hf_forward(eager, loaded, letter, b)),
        ("hf forward (sdpa) letter", "letter", None, True, _hf_forward(sdpa, loaded, letter, b)),
        ("probe letter", "letter", ref_l, False, _probe_task(engine, letter, l_opts, cfg)),
        ("probe letter + capture", "letter", ref_l, False,
         _probe_task(engine, letter, l_opts, cfg, capture)),
        ("probe letter (eager)", "letter", ref_l, False, _probe_task(slow, letter, l_opts, cfg)),
        (ref_t, "text", None, True, _hf_packed(eager, engine, text, t_opts, b)),
        ("hf forward (sdpa) text", "text", None, True, _hf_packed(sdpa, engine, text, t_opts, b)),
        ("hf forward (eager) text, prompt only", "text", None, True,
         _hf_forward(eager, loaded, text, b)),
        ("probe text", "text", ref_t, False, _probe_task(engine, text, t_opts, cfg)),
    ]
    return [(Row(name, group, ref, is_ref, bound=name.endswith("prompt only"),
                 target=TARGETS.get(name)), task)
            for name, group, ref, is_ref, task in spec
            if engine.attention != "eager" or name not in EAGER_ROWS]

