"""What ``probe compare`` must know before setting runs side by side.

Gains of two runs are comparable only over the same items, scored the same way, under the
same conditions. :func:`differences` names every way the runs differ (items, scoring mode,
conditions and their definitions) as warnings for the terminal, compare.json and the
figure, and per run as a "differs" column. :func:`chat_kind` says whether a run's model
was prompted through a chat template, from the model's own metadata (what run.json
recorded from its tokenizer, else the tokenizer files of a local copy), never its name.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from probe.store.runs import RunFolder

# Prompt text only a chat template produces: evidence that the run used one (its absence
# proves nothing, since templates vary: then the kind is unknown).
CHAT_MARKERS = ("<|im_start|>", "[INST]", "<|start_header_id|>", "<start_of_turn>", "<|user|>")
CHAT, BASE = "chat", "base"


def _tokenizer_has_template(path: Path) -> bool | None:
    tok = path / "tokenizer_config.json"
    if (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file():
        return True
    if not tok.is_file():
        return None
    return bool(json.loads(tok.read_text(encoding="utf-8")).get("chat_template"))


def chat_kind(folder: RunFolder) -> tuple[str | None, str]:
    """("chat" or "base", source): whether the model's tokenizer has a chat template (the
    run then rendered its prompts with it), or (None, "unknown")."""
    from probe.presentation.compare import model_dirs  # deferred: compare imports this module

    recorded = (folder.provenance.get("model") or {}).get("chat")
    if isinstance(recorded, bool):
        return (CHAT if recorded else BASE), "run.json (tokenizer chat template)"
    for path in model_dirs(str(folder.config.get("model"))):
        has = _tokenizer_has_template(path)
        if has is not None:
            return (CHAT if has else BASE), "local tokenizer files"
    if folder.generations.is_file():
        with folder.generations.open(encoding="utf-8") as fh:
            first = json.loads(fh.readline() or "{}")
        if any(m in str(first.get("prompt", "")) for m in CHAT_MARKERS):
            return CHAT, "prompt rendered by a chat template"
    return None, "unknown (not recorded in run.json, no local tokenizer)"


def run_facts(folder: RunFolder, metrics: dict[str, Any]) -> dict[str, Any]:
    """The facts a comparison must agree on: items, mode, conditions and definitions."""
    items = {(str(r.get("benchmark")), str(r["item_id"])) for r in folder.rows()}
    cfg = folder.config
    return {"run": str(folder.path), "mode": cfg.get("mode"),
            "items": items or None,
            "item_config": {k: cfg.get(k) for k in ("benchmarks", "categories", "limit")},
            "conditions": sorted(metrics.get("conditions", {})),
            "definitions": folder.provenance.get("conditions") or {}}


def _name(run: str) -> str:
    return Path(run).name


def _items_warning(facts: Sequence[dict[str, Any]]) -> tuple[str | None, set[str]]:
    known = [f for f in facts if f["items"] is not None]
    if len(known) == len(facts):
        if all(f["items"] == known[0]["items"] for f in known):
            return None, set()
        shared = set.intersection(*(f["items"] for f in known))
        counts = ", ".join(f"{_name(f['run'])} {len(f['items'])}" for f in known)
        odd = {f["run"] for f in known if f["items"] != shared}
        return (f"runs differ in items ({counts}; {len(shared)} shared): their gains are "
                "over different items"), odd
    configs = {json.dumps(f["item_config"], sort_keys=True) for f in facts}
    if len(configs) > 1:
        return ("runs were drawn with different item settings (benchmarks, categories, "
                "--limit): their gains are over different items"), {f["run"] for f in facts}
    return None, set()


def differences(facts: Sequence[dict[str, Any]]) -> tuple[list[str], dict[str, list[str]]]:
    """Warnings about how the runs differ, and per run what it differs in."""
    warnings: list[str] = []
    per_run: dict[str, list[str]] = {f["run"]: [] for f in facts}
    if len(facts) < 2:
        return warnings, per_run
    text, odd = _items_warning(facts)
    if text:
        warnings.append(text)
        for run in odd:
            per_run[run].append("items")
    modes = {f["mode"] for f in facts}
    if len(modes) > 1:
        warnings.append("runs differ in scoring mode (" + ", ".join(
            f"{_name(f['run'])} {f['mode']}" for f in facts) + "): their metrics are not "
            "measured the same way")
        for f in facts:
            per_run[f["run"]].append(f"mode {f['mode']}")
    every = sorted(set().union(*(f["conditions"] for f in facts)))
    for f in facts:
        missing = [c for c in every if c not in f["conditions"]]
        if missing:
            warnings.append(f"{_name(f['run'])} lacks conditions {', '.join(missing)}")
            per_run[f["run"]].append("conditions")
    for cond in every:
        defs = {json.dumps(f["definitions"][cond], sort_keys=True) for f in facts
                if cond in f["definitions"]}
        if len(defs) > 1:
            warnings.append(f"condition {cond} is defined differently across runs (run.json "
                            "provenance.conditions): same name, different prompts")
            for f in facts:
                per_run[f["run"]].append(f"{cond} definition")
    return warnings, per_run
