"""Where inside the model the effect appears: the report's localisation summary.

Read defensively from patching.json and probes.json (their formats are still evolving): a
missing analysis says so, and patching whose source-target gap is not reliable (too small,
or its interval contains 0) reports "no localisable effect" rather than a peak of noise.
Every number shown carries its interval and n, next to its control where the file has one.
"""

from __future__ import annotations

from typing import Any

from probe.analysis.patch_control import MIN_ITEMS
from probe.analysis.summary import probe_best, read_analysis
from probe.presentation.report_html import esc, fmt, table, with_ci, words

CONTROL_KEYS = ("control", "placebo", "controls")


def _get(data: Any, *keys: Any) -> Any:
    """``data[k1][k2]...`` or None when any step is missing or of another type."""
    for key in keys:
        if isinstance(data, dict):
            data = data.get(key)
        elif isinstance(data, list) and isinstance(key, int) and -len(data) <= key < len(data):
            data = data[key]
        else:
            return None
    return data


def _block(cell: Any, measure: str) -> tuple[float | None, list[Any] | None]:
    value = _get(cell, measure, "mean")
    return (float(value) if isinstance(value, (int, float)) else None), _get(cell, measure, "ci")


def _excludes_zero(ci: Any) -> bool:
    return (isinstance(ci, list) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci)
            and not ci[0] <= 0 <= ci[1])


ONSET_SHARE = 0.5  # normalised effect an onset must carry: at least half of the gap


def resid_onset(data: dict[str, Any], measure: str, share: float = ONSET_SHARE
                ) -> dict[str, Any] | None:
    """The first residual hook whose denoising effect at the last position carries at least
    ``share`` of the gap (normalised measure) with an interval excluding 0: the layer from
    which the effect is carried, with its value. (An interval excluding 0 alone names
    layers with negligible but consistent effects; the planted-mechanism validation,
    docs/validation.md, shows such a -0.002 effect one layer before the planted one.)"""
    labels = _get(data, "resid", "labels") or []
    for i, row in enumerate(_get(data, "resid", "denoise") or []):
        value, ci = _block(_get(row, -1), measure)
        big = measure != "normalised" or (value is not None and value >= share)
        if value is not None and big and _excludes_zero(ci):
            label = labels[i] if i < len(labels) else f"hook {i}"
            return {"label": label, "value": value, "ci": ci, "n": _get(row, -1, "n")}
    return None


def component_peak(data: dict[str, Any], measure: str) -> dict[str, Any] | None:
    """The attn/mlp output (denoising) of largest |effect|, with its interval and n."""
    layers = _get(data, "components", "layers") or []
    best = None
    for comp, cells in (_get(data, "components", "denoise") or {}).items():
        for i, cell in enumerate(cells if isinstance(cells, list) else []):
            value, ci = _block(cell, measure)
            if value is not None and (best is None or abs(value) > abs(best["value"])):
                best = {"component": f"{comp}_out", "layer": layers[i] if i < len(layers)
                        else i, "value": value, "ci": ci, "n": _get(cell, "n"),
                        "band": _band(data, comp, i, measure)}
    return best


def _band(data: dict[str, Any], comp: str, i: int, measure: str) -> list[Any] | None:
    """The cell's sup-t simultaneous band (patching.json ``components.simultaneous``), when
    it was computed for this measure."""
    sim = _get(data, "components", "simultaneous") or {}
    pairs = sim.get(comp) if sim.get("measure") == measure else None
    band = pairs[i] if isinstance(pairs, list) and i < len(pairs) else None
    ok = isinstance(band, list) and len(band) == 2 and all(
        isinstance(v, (int, float)) and v == v for v in band)
    return band if ok else None


def _placebo_text(data: dict[str, Any], found: dict[str, Any]) -> str | None:
    """A placebo control as patching.json records it: its gap to the same target, and the
    instruction-minus-control difference with interval, n and verdict."""
    source = _get(data, "meta", "source")
    diff = found.get(f"{source}_minus_control")
    if not isinstance(diff, dict) or "mean" not in diff:
        return None
    gap = found.get("gap") or {}
    name, target = found.get("name") or "control", found.get("target") or "the target"
    k = diff.get("n_clusters")
    text = (f"Control {name} (n={found.get('n')} items"
            + (f", {k} templates" if k is not None else "") + f"): its readout gap to {target} "
            f"{with_ci(gap.get('mean'), gap.get('ci'))}; {source} − {name} "
            f"{with_ci(diff.get('mean'), diff.get('ci'))}: {found.get('verdict')}")
    return text + (f" ({found['note']})" if found.get("note") else "")


def _control_text(data: dict[str, Any]) -> str:
    """The patching control (a placebo pair, say) if the file records one."""
    placebo = data.get("control")
    if isinstance(placebo, dict) and (text := _placebo_text(data, placebo)):
        return text
    for place in (data, data.get("meta") or {}):
        for key in CONTROL_KEYS:
            found = place.get(key) if isinstance(place, dict) else None
            if isinstance(found, dict):
                gap = found.get("gap") or _get(found, "metric", "gap") or {}
                name = found.get("source") or found.get("name") or key
                if isinstance(gap, dict) and "mean" in gap:
                    verdict = found.get("verdict")
                    return (f"control ({name}): readout gap {with_ci(gap['mean'], gap.get('ci'))}"
                            f", reliable: {gap.get('reliable')}"
                            + (f"; the instruction's gap is {verdict}" if verdict else ""))
                return f"control ({name}): " + ", ".join(
                    f"{k} {fmt(v)}" for k, v in found.items() if not isinstance(v, (dict, list)))
            if isinstance(found, str):
                return f"control: {found}"
    return "control: none recorded in patching.json (no placebo pair was patched)"


def _unreliable_why(gap: dict[str, Any], threshold: Any) -> str:
    """Why a gap carries no ratio: too small, or its interval contains 0."""
    mean, ci = gap.get("mean"), gap.get("ci")
    reasons = []
    if isinstance(mean, (int, float)) and isinstance(threshold, (int, float)) \
            and abs(mean) < threshold:
        reasons.append(f"the gap is below the {fmt(threshold)}-nat threshold")
    if isinstance(ci, list) and len(ci) == 2 and not _excludes_zero(ci):
        reasons.append("its 95% interval contains 0")
    n, k = gap.get("n"), gap.get("n_clusters")
    if isinstance(n, int) and n < MIN_ITEMS:
        reasons.append(f"it rests on {n} item{'s' * (n != 1)} (under {MIN_ITEMS})")
    elif isinstance(k, int) and k < MIN_ITEMS:
        reasons.append(f"its {n} items come from {k} template{'s' * (k != 1)} (under "
                       f"{MIN_ITEMS})")
    if not reasons:
        return str(gap.get("note") or "the gap is too small or its interval contains 0")
    return " and ".join(reasons) + ", so a normalised effect would divide by noise"


def _identities_text(data: dict[str, Any]) -> str:
    """The identity patches (everything at the embedding = source, ...) as a sanity check."""
    checks = data.get("identities")
    if not isinstance(checks, dict) or not checks:
        return ""
    devs = [v for c in checks.values() if isinstance(c, dict) for k, v in c.items()
            if k.endswith("max_abs_dev") and isinstance(v, (int, float))]
    if not devs:
        return ""
    return (f" Identity checks ({', '.join(words(k) for k in checks)}): largest deviation "
            f"{fmt(max(devs))} nats.")


def patching_where(data: Any) -> str:
    """One paragraph: the patched pair, its gap, and where the effect appears (or not)."""
    meta = _get(data, "meta") or {}
    gap = _get(data, "metric", "gap")
    if not isinstance(gap, dict):
        return "<p>patching.json has no source-target gap: no localisable effect shown.</p>"
    pair = [f"{meta['source']} → {meta.get('target', 'baseline')}" if "source" in meta else "",
            (f"n={meta['n_items']} items" + (f", {meta['n_clusters']} templates (the unit "
                                             f"the intervals resample)"
                                             if "n_clusters" in meta else ""))
            if "n_items" in meta else "",
            str(meta.get("alignment") or ""),
            f"patched: {meta['scope']}" if meta.get("scope") else "",
            f"readout: {_get(data, 'readout', 'mode')} mode" if _get(data, "readout") else ""]
    head = (f"<p><b>Activation patching</b> ({esc(', '.join(p for p in pair if p))}): "
            f"readout gap source − target {esc(with_ci(gap.get('mean'), gap.get('ci')))}.")
    if not gap.get("reliable"):
        why = _unreliable_why(gap, meta.get("threshold"))
        return (f"{head} <b class='null'>No localisable effect</b>: {esc(why)}. "
                f"{esc(_control_text(data))}.{esc(_identities_text(data))}</p>")
    onset, peak = resid_onset(data, "normalised"), component_peak(data, "normalised")
    parts = [head]
    if onset:
        parts.append(f" Residual stream (denoising, last position, normalised: 0 none, 1 "
                     f"full): the effect is carried (at least half of it) from "
                     f"<b>{esc(onset['label'])}</b> "
                     f"({esc(with_ci(onset['value'], onset['ci']))}, n={esc(onset['n'])}).")
    else:
        parts.append(" No residual hook's effect at the last position has an interval "
                     "excluding 0: <b class='null'>no localisable effect</b> in the "
                     "residual stream.")
    if peak:
        n_cells = 2 * len(_get(data, "components", "layers") or [])
        band = peak.get("band")
        judged = band if band is not None else peak["ci"]
        spans = "" if _excludes_zero(judged) else "; not distinguishable from 0"
        adjusted = (f"; simultaneous 95% band over all {n_cells}, valid for that choice: "
                    f"[{fmt(band[0])}, {fmt(band[1])}]" if band is not None
                    else "; its interval is not adjusted for that choice")
        parts.append(f" Largest component effect (the largest |effect| of the {n_cells} "
                     f"attn/mlp outputs, chosen after looking): <b>{esc(peak['component'])} "
                     f"layer {esc(peak['layer'])}</b> "
                     f"{esc(with_ci(peak['value'], peak['ci']))} (n={esc(peak['n'])}"
                     f"{esc(adjusted)}{spans}).")
    parts.append(f" {esc(_control_text(data))}.{esc(_identities_text(data))}</p>")
    return "".join(parts)


def probes_where(data: Any) -> str:
    """Per probe target and kind, the best layer's accuracy against its control."""
    rows = []
    for best in probe_best(data):
        ci, control = best.get("accuracy_ci"), best.get("control_accuracy")
        low = ci[0] if isinstance(ci, list) and len(ci) == 2 else None
        k = best.get("n_templates")
        if not isinstance(low, (int, float)) or not isinstance(control, (int, float)):
            call = "no interval or control"
        elif isinstance(k, int) and k < MIN_ITEMS:
            call = f"no verdict: {k} templates (under {MIN_ITEMS})"
        else:
            p = best.get("p_value")
            call = ("not distinguishable from the control"
                    if low <= control or (isinstance(p, (int, float)) and p >= 0.05)
                    else "above the control")
        band = (best.get("control") or {}).get("accuracy_5_95")
        spread = (f" (5-95% {fmt(band[0])}-{fmt(band[1])})"
                  if isinstance(band, list) and len(band) == 2 else "")
        rows.append([best["target"], best["kind"], best["layer"],
                     f"{best['n']} ({k if k is not None else '?'} templates)",
                     with_ci(best["accuracy"], ci), fmt(control) + spread,
                     fmt(best.get("p_value")), call])
    if not rows:
        return ""
    nested = all(b.get("nested") for b in probe_best(data))
    how = ("chosen on held-out folds (nested)" if nested
           else "chosen on the same folds, so optimistic")
    return ("<p><b>Linear probes</b>: the best layer per target, " + how + ", against the "
            "control task (random labels per template cluster, adapted from Hewitt &amp; "
            "Liang 2019) with a permutation p-value.</p>"
            + table(["target", "probe", "best layer", "n", "accuracy [95% CI]",
                     "control accuracy", "p (permutation)", "vs control"], rows))


def _readout(record: dict[str, Any]) -> tuple[float, list[Any]] | None:
    value, ci = _block(record, "readout")
    return None if value is None else (value, ci if isinstance(ci, list) else [None, None])


def steering_where(data: Any) -> str:
    """The steered setting that moves the readout most from alpha 0, against the random
    direction of the same norm at the same layer and alpha."""
    results = [r for r in (_get(data, "results") or []) if isinstance(r, dict)]
    at = {(r.get("kind"), r.get("layer"), r.get("alpha")): r for r in results}
    best = None
    for (kind, layer, alpha), rec in at.items():
        base, here = at.get((kind, layer, 0.0)), _readout(rec)
        zero = _readout(base) if base else None
        if kind != "direction" or not alpha or here is None or zero is None:
            continue
        if best is None or abs(here[0] - zero[0]) > best[0]:
            control = at.get(("random", layer, alpha))
            best = (abs(here[0] - zero[0]), layer, alpha, here, zero,
                    _readout(control) if control else None)
    if best is None:
        return ""
    _, layer, alpha, here, zero, rand = best
    meta = _get(data, "meta") or {}
    n_settings = sum(1 for (kind, _, a) in at if kind == "direction" and a)
    text = (f"<p><b>Steering</b> ({esc(meta.get('instruction', '?'))} direction, "
            f"n={esc(meta.get('n_items', '?'))} items): the largest move of the readout "
            f"(chosen among {n_settings} steered layer x alpha settings after looking; the "
            f"random band at that setting is its control) is at "
            f"layer {esc(layer)}, alpha {esc(fmt(alpha))}: {esc(with_ci(*here))} vs "
            f"{esc(with_ci(*zero))} unsteered")
    if rand is None:
        return text + "; no random-direction control recorded.</p>"
    band = at.get(("random", layer, alpha)) or {}
    if "n_random" in band:  # a band of random directions: is the steered value inside it?
        inside = band.get("verdict") == "not distinguishable from the control"
        call = ("inside it: <b class='null'>not distinguishable from the control</b>"
                if inside else esc(band.get("verdict") or "no verdict"))
        return (text + f"; {esc(band['n_random'])} random directions of the same norm there "
                f"give median {esc(fmt(rand[0]))}, 5-95% [{esc(fmt(rand[1][0]))}, "
                f"{esc(fmt(rand[1][1]))}] ({call}).</p>")
    overlap = (all(isinstance(v, (int, float)) for v in [*here[1], *rand[1]])
               and here[1][0] <= rand[1][1] and rand[1][0] <= here[1][1])
    call = ("the intervals overlap: <b class='null'>not distinguishable from the "
            "control</b>" if overlap else "the intervals do not overlap")
    return (text + f"; a random direction of the same norm there gives "
            f"{esc(with_ci(*rand))} ({call}).</p>")


def where_summary(run_path: Any) -> str:
    """The localisation part of the summary, from whatever analyses the run has."""
    patch, why = read_analysis(run_path / "patching.json")
    parts = ["<h3>Where inside the model</h3>"]
    if why == "absent":
        parts.append("<p>Patching has not run on this run: <b class='null'>no localisable "
                     "effect</b> measured (<code>probe patch RUN --instruction "
                     "instruct-1</code>).</p>")
    elif why is not None:
        parts.append(f"<p>patching.json is {esc(why)}: no localisable effect shown.</p>")
    else:
        parts.append(patching_where(patch))
    probes, why = read_analysis(run_path / "probes.json")
    if why is None:
        parts.append(probes_where(probes))
    steering, why = read_analysis(run_path / "steering.json")
    if why is None:
        parts.append(steering_where(steering))
    return "".join(parts)
