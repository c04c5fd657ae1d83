"""Logit lens on the run's own readout (``probe lens``).

For each condition of a run, each item's scored prompt runs once through the same packed
prompt+options pass the run scored (:mod:`probe.analysis.readout`), with the residual
stream captured at every column after the embedding and after every block (``hook_embed``,
``blocks.L.hook_resid_post``). The columns the readout reads (the last prompt token, and in
text mode the option tokens) go through the model's own final norm and unembedding (the
bridge's ``ln_final`` and ``unembed``, which wrap the HF modules the real forward uses), and
the readout is computed from those log-probs exactly as from the model's: what the model
would score if it stopped at that layer. At the last block this is the run's own score; the
largest difference is reported in ``meta.final_layer_max_abs_diff``.

Reported per condition and layer: the unbiased and the biased option's score and the
readout (their difference), item means with bootstrap 95% intervals.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probe.analysis import answers as ans
from probe.analysis import readout as ro
from probe.analysis.checkpoint import Checkpoint, run_fingerprint
from probe.engine.hooks import HookFn, resid_hook_names
from probe.engine.inference import Engine
from probe.engine.models import LoadedModel
from probe.errors import ConfigError, UnknownNameError
from probe.presentation.plots import pyplot, save_figure
from probe.store.runlock import locks_run


def lens_logprobs(loaded: LoadedModel, resid: torch.Tensor) -> torch.Tensor:
    """Log-probs (..., vocab) of residual vectors (..., d) read through the final norm and
    the unembedding."""
    bridge = loaded.bridge
    if not (hasattr(bridge, "ln_final") and hasattr(bridge, "unembed")):
        raise ConfigError(f"model {loaded.name} has no ln_final/unembed for the logit lens")
    with torch.inference_mode():
        x = resid.to(device=loaded.device, dtype=next(loaded.hf_model.parameters()).dtype)
        flat = x.reshape(-1, 1, x.shape[-1])
        logits = bridge.unembed(bridge.ln_final(flat))[:, 0, :]
    return torch.log_softmax(logits.float(), dim=-1).reshape(*x.shape[:-1], -1)


def lens_batch(engine: Engine, mode: str, queries: list[ro.Query]
               ) -> tuple[np.ndarray, float]:
    """Option scores (n, n_hooks, 2: unbiased, biased) read through the lens after each
    hook, and the largest |lens readout at the last block - real readout| of the batch.

    The run's packed prompt+options pass runs once with the residual stream captured at
    every column; each hook's columns from ``first_read`` on go through the lens, and the
    readout is computed from them exactly as from the model's own log-probs.
    """
    hooks = resid_hook_names(engine.loaded.n_layers)
    store: dict[str, torch.Tensor] = {}

    def keep(name: str) -> HookFn:
        def fn(tensor: torch.Tensor, hook: Any) -> None:
            store[name] = tensor.detach()
        return fn

    packed = ro.pack(engine, queries)
    real = ro.option_pair(mode, packed, engine.packed_logprobs(
        packed, [(h, keep(h)) for h in hooks]), queries)
    per_hook = [ro.option_pair(mode, packed, lens_logprobs(
        engine.loaded, store[h][:, packed.first_read:]), queries) for h in hooks]
    diff = (per_hook[-1] - real).abs()
    finite = diff[diff.isfinite()]
    return torch.stack(per_hook, dim=1).numpy(), float(finite.max()) if finite.numel() else 0.0


def condition_lens(engine: Engine, run: ans.RunData, condition: str
                   ) -> tuple[dict[str, Any], float]:
    """Per-layer option scores and readout under one condition, and the final-layer check."""
    queries = [q for it in run.items for q in ro.item_queries(run, engine, it, condition)]
    if not queries:
        return {"n_items": 0, "layers": []}, 0.0
    diffs: list[float] = []
    mode = run.config.mode

    def run_batch(batch: list[ro.Query]) -> list[np.ndarray]:
        out, diff = lens_batch(engine, mode, batch)
        diffs.append(diff)
        return list(out)

    per_item: list[np.ndarray] = engine.map_batches(queries, run_batch,
                                                    sort_key=lambda q: len(q.prompt))
    # (n items, hooks, 2); a counterbalanced run's displayed orders averaged per item
    item_ids, scores = ro.item_means([q.item_id for q in queries], np.stack(per_item))
    ok = np.isfinite(scores).all(axis=(1, 2))
    scores = scores[ok]
    ids = [i for i, keep in zip(item_ids, ok, strict=True) if keep]
    keys = ans.item_clusters(run, ids)  # intervals resample templates, as the metrics do
    layers = [{"unbiased": ans.mean_ci(scores[:, h, 0], clusters=keys),
               "biased": ans.mean_ci(scores[:, h, 1], clusters=keys),
               "readout": ans.mean_ci(scores[:, h, 0] - scores[:, h, 1], clusters=keys)}
              for h in range(scores.shape[1])]
    return {"n_items": len(ids), "item_ids": ids, "layers": layers,
            "n_undefined": int((~ok).sum())}, max(diffs)


@locks_run("lens")
def run_lens(run_dir: str, conditions: list[str] | None = None, limit: int | None = None,
             loaded: LoadedModel | None = None, data_dir: str | None = None
             ) -> dict[str, Any]:
    """Logit lens of every condition of a run; writes lens.json and plots/lens.png."""
    from probe.scoring.metrics import json_safe
    from probe.store.io import atomic_write_json

    run = ans.load_run(run_dir, data_dir, limit)
    loaded = loaded or ans.load_run_model(run)
    unknown = [c for c in conditions or [] if c not in run.conditions()]
    if unknown:
        raise UnknownNameError("condition of this run", unknown[0], run.conditions())
    engine = Engine(loaded, run.config.batch_size, run.config.attention)
    start = time.perf_counter()
    results, worst = {}, 0.0
    chosen = list(conditions or run.conditions())
    # Resumable per condition (one forward pass gives every layer): RUN/lens.partial.jsonl.
    ckpt = Checkpoint(run_dir, "lens", {"--instruction": chosen, "--limit": limit,
                                        "run rows (generations.jsonl sha256)":
                                            run_fingerprint(run_dir)})
    bar = ckpt.bar(len(chosen), "lens conditions")
    try:
        for cond in chosen:
            results[cond], diff = ckpt.unit(cond, partial(condition_lens, engine, run, cond))
            worst = max(worst, diff)
            bar.update()
    finally:
        bar.close()
        ckpt.close()
    hooks = resid_hook_names(loaded.n_layers)
    out = json_safe({
        "readout": ro.readout_meta(run.config.mode),
        "meta": {"hooks": hooks, "layer_labels": ["embed", *map(str, range(loaded.n_layers))],
                 "position": "the readout's own positions in the run's packed prompt+options "
                             "rows (the last prompt token, and option tokens in text mode)",
                 "lens": "bridge.ln_final then bridge.unembed, softmax over the vocabulary",
                 "final_layer_max_abs_diff": worst, "model": run.config.model,
                 "seconds": round(time.perf_counter() - start, 2)},
        "conditions": results})
    atomic_write_json(Path(run_dir) / "lens.json", out)
    ckpt.finish()
    plot_lens(out, Path(run_dir) / "plots" / "lens.png")
    return out


def plot_lens(result: dict[str, Any], path: Path) -> Path:
    """Option scores per layer (unbiased solid, biased dashed) and the readout, a colour per
    condition, with 95% intervals."""
    plt = pyplot()

    labels = result["meta"]["layer_labels"]
    units = (result.get("readout") or {}).get("definition", "readout")
    xs = np.arange(len(labels))
    fig, (ax, ax_diff) = plt.subplots(1, 2, figsize=(max(12, 0.5 * len(labels) + 4), 4.5))
    for i, (cond, block) in enumerate(result["conditions"].items()):
        if not block["layers"]:
            continue
        color = f"C{i % 10}"
        for axis, key, style in ((ax, "unbiased", "-"), (ax, "biased", "--"),
                                 (ax_diff, "readout", "-")):
            mean = [np.nan if r[key]["mean"] is None else r[key]["mean"] for r in block["layers"]]
            ci = np.array([[np.nan if v is None else v for v in r[key]["ci"]]
                           for r in block["layers"]])
            axis.plot(xs, mean, style, color=color, label=f"{cond} {key} (n={block['n_items']})")
            axis.fill_between(xs, ci[:, 0], ci[:, 1], color=color, alpha=0.12)
    step = max(1, len(labels) // 16)
    for axis in (ax, ax_diff):
        axis.set_xticks(xs[::step], [labels[j] for j in xs[::step]])
        axis.set_xlabel("layer (residual stream after it)")
        axis.legend(fontsize=8)
    ax.set(title="Logit lens: option score, unbiased solid, biased dashed (95% CI)",
           ylabel="log-prob (nats)")
    ax_diff.axhline(0, color="grey", lw=0.8)
    ax_diff.set(title="Logit lens: readout (unbiased - biased), 95% CI", ylabel="nats")
    fig.text(0.5, -0.02, f"readout: {units}", ha="center", fontsize=8)
    return save_figure(fig, path)
