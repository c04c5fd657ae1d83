"""Logit lens at the answer position (``probe lens``).

For each condition of a run, the letter prompt of each item (answer prefix "The answer is
(") runs once with the residual stream captured at its last position after the embedding
and after every block (``hook_embed``, ``blocks.L.hook_resid_post``). Each captured vector
goes through the model's own final norm and unembedding (the bridge's ``ln_final`` and
``unembed``, which wrap the HF modules the real forward uses), giving what the model would
predict if it stopped at that layer. At the last block this is the model's real output: the
largest difference from the real log-probs is reported in ``meta.final_layer_max_abs_diff``.

Reported per condition and layer: mean probability (full-vocabulary softmax) of the unbiased
and of the biased letter, and the mean log-prob difference, with bootstrap 95% intervals.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probe.analysis import answers as ans
from probe.errors import ConfigError, UnknownNameError
from probe.hooks import Capture, resid_hook_names
from probe.inference import Engine
from probe.models import LoadedModel
from probe.plots import pyplot, save_figure


def lens_logprobs(loaded: LoadedModel, resid: torch.Tensor) -> torch.Tensor:
    """Log-probs (n, vocab) of residual vectors (n, d) read through the final norm + unembed."""
    bridge = loaded.bridge
    if not (hasattr(bridge, "ln_final") and hasattr(bridge, "unembed")):
        raise ConfigError(f"model {loaded.name} has no ln_final/unembed for the logit lens")
    with torch.inference_mode():
        x = resid.to(device=loaded.device, dtype=next(loaded.hf_model.parameters()).dtype)
        logits = bridge.unembed(bridge.ln_final(x[:, None, :]))[:, 0, :]
    return torch.log_softmax(logits.float(), dim=-1).cpu()


def lens_batch(engine: Engine, texts: list[str], token_ids: list[int]
               ) -> tuple[np.ndarray, float]:
    """Lens log-probs of ``token_ids`` per item and layer (n, n_hooks, n_tokens), and the
    largest |lens at the last block - real log-probs| over the batch's vocabulary."""
    hooks = resid_hook_names(engine.loaded.n_layers)
    capture = Capture(hooks, 1)
    real, _, _ = engine.forward_last(texts, capture=capture)
    acts = capture.take()
    ids = torch.tensor(token_ids)
    per_hook = []
    for hook in hooks:
        lp = lens_logprobs(engine.loaded, acts[hook][:, -1, :])
        per_hook.append(lp[:, ids])
        last = lp
    diff = float((last - real.float().cpu()).abs().max())
    return torch.stack(per_hook, dim=1).double().numpy(), diff


def condition_lens(engine: Engine, run: ans.RunData, condition: str, limit: int | None
                   ) -> tuple[dict[str, Any], float]:
    """Per-layer letter probabilities under one condition, and the final-layer check."""
    letter_ids = ans.letter_token_ids(engine.tokenizer)
    texts, pairs, ids = [], [], []
    for item in run.items:
        row = run.row(item.item_id, condition)
        pair = None if row is None else ans.answer_pair(row)
        if pair is None:
            continue
        texts.append(ans.letter_prompt(engine.loaded, run, item, condition))
        pairs.append(pair)
        ids.append(item.item_id)
        if limit is not None and len(texts) >= limit:
            break
    if not texts:
        return {"n_items": 0, "layers": []}, 0.0
    diffs: list[float] = []

    def run_batch(batch: list[str]) -> list[np.ndarray]:
        out, diff = lens_batch(engine, batch, letter_ids)
        diffs.append(diff)
        return list(out)

    per_item: list[np.ndarray] = engine.map_batches(texts, run_batch, sort_key=len)
    lp = np.stack(per_item)  # (n, hooks, letters)
    rows = np.arange(len(pairs))
    biased = lp[rows, :, [p[0] for p in pairs]]  # (n, hooks)
    unbiased = lp[rows, :, [p[1] for p in pairs]]
    layers = [{"p_unbiased": ans.mean_ci(np.exp(unbiased[:, h])),
               "p_biased": ans.mean_ci(np.exp(biased[:, h])),
               "logit_diff": ans.mean_ci(unbiased[:, h] - biased[:, h])}
              for h in range(lp.shape[1])]
    return {"n_items": len(texts), "item_ids": ids, "layers": layers}, max(diffs)


def run_lens(run_dir: str, conditions: list[str] | None = None, limit: int | None = None,
             loaded: LoadedModel | None = None, data_dir: str | None = None
             ) -> dict[str, Any]:
    """Logit lens of every condition of a run; writes lens.json and plots/lens.png."""
    from probe.io import atomic_write_json
    from probe.scoring.metrics import json_safe

    run = ans.load_run(run_dir, data_dir, limit)
    loaded = loaded or ans.load_run_model(run)
    unknown = [c for c in conditions or [] if c not in run.conditions()]
    if unknown:
        raise UnknownNameError("condition of this run", unknown[0], run.conditions())
    engine = Engine(loaded, run.config.batch_size, run.config.attention)
    start = time.perf_counter()
    results, worst = {}, 0.0
    for cond in conditions or run.conditions():
        results[cond], diff = condition_lens(engine, run, cond, None)
        worst = max(worst, diff)
    hooks = resid_hook_names(loaded.n_layers)
    out = json_safe({
        "meta": {"hooks": hooks, "layer_labels": ["embed", *map(str, range(loaded.n_layers))],
                 "position": "answer position (last token of the letter prompt)",
                 "readout": "bridge.ln_final then bridge.unembed, softmax over the vocabulary",
                 "final_layer_max_abs_diff": worst, "model": run.config.model,
                 "seconds": round(time.perf_counter() - start, 2)},
        "conditions": results})
    atomic_write_json(Path(run_dir) / "lens.json", out)
    plot_lens(out, Path(run_dir) / "plots" / "lens.png")
    return out


def plot_lens(result: dict[str, Any], path: Path) -> Path:
    """p(unbiased letter) solid and p(biased letter) dashed per layer, a colour per condition."""
    plt = pyplot()

    labels = result["meta"]["layer_labels"]
    xs = np.arange(len(labels))
    fig, (ax, ax_diff) = plt.subplots(1, 2, figsize=(max(12, 0.5 * len(labels) + 4), 4.5))
    for i, (cond, block) in enumerate(result["conditions"].items()):
        if not block["layers"]:
            continue
        color = f"C{i % 10}"
        for axis, key, style in ((ax, "p_unbiased", "-"), (ax, "p_biased", "--"),
                                 (ax_diff, "logit_diff", "-")):
            mean = [np.nan if r[key]["mean"] is None else r[key]["mean"] for r in block["layers"]]
            ci = np.array([[np.nan if v is None else v for v in r[key]["ci"]]
                           for r in block["layers"]])
            axis.plot(xs, mean, style, color=color,
                      label=f"{cond} {key.removeprefix('p_')} (n={block['n_items']})")
            axis.fill_between(xs, ci[:, 0], ci[:, 1], color=color, alpha=0.12)
    step = max(1, len(labels) // 16)
    for axis in (ax, ax_diff):
        axis.set_xticks(xs[::step], [labels[j] for j in xs[::step]])
        axis.set_xlabel("layer (residual stream after it)")
        axis.legend(fontsize=8)
    ax.set(title="Logit lens at the answer position: p(unbiased) solid, p(biased) dashed",
           ylabel="probability")
    ax_diff.axhline(0, color="grey", lw=0.8)
    ax_diff.set(title="Logit lens: log p(unbiased) - log p(biased)", ylabel="logits")
    return save_figure(fig, path)
