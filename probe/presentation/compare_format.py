"""``probe compare``'s terminal table: gains with their paired intervals and verdict marks,
each condition's own probe and patching numbers, n and templates, and the runs' differences."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:+.3f}"
    return "n/a" if value is None else str(value)


def _gain_cell(row: dict[str, Any], key: str) -> str:
    """"-0.040 [-0.200,+0.110]~0": the gain, its paired 95% interval, and the verdict the
    report gives (:func:`probe.scoring.gains.verdict`): ~0 not distinguishable from 0, ? no
    verdict (one cluster, a zero-width or no interval)."""
    value, lo, hi = (row.get(k) for k in (key, f"{key}_lo", f"{key}_hi"))
    if not isinstance(value, (int, float)):
        return "n/a"
    if not isinstance(lo, (int, float)) or not isinstance(hi, (int, float)):
        return f"{value:+.3f} [no CI]"
    said = row.get(f"{key}_verdict") or ("not distinguishable from 0" if lo <= 0 <= hi
                                         else "differs from 0")
    mark = ("~0" if said == "not distinguishable from 0" else
            "?" if said.startswith("no verdict") else "")
    return f"{value:+.3f} [{lo:+.3f},{hi:+.3f}]{mark}"


def _peak_cell(row: dict[str, Any], key: str, where: str) -> str:
    """"0.850 [0.750,0.950] L1": an analysis number with its 95% interval and layer."""
    value, lo, hi = (row.get(k) for k in (key, f"{key}_lo", f"{key}_hi"))
    if not isinstance(value, (int, float)):
        return "-"
    ci = (f" [{lo:.3f},{hi:.3f}]" if isinstance(lo, (int, float)) and isinstance(hi, (int, float))
          else " [no CI]")
    return f"{value:.3f}{ci} {where}"


NO_EFFECT = "no localisable effect (gap not reliable)"


def _control(row: dict[str, Any]) -> str:
    ctrl, p = row.get("probe_control"), row.get("probe_p")
    if not isinstance(ctrl, (int, float)):
        return ""
    return f" ctrl {ctrl:.3f}" + (f" p={p:.3f}" if isinstance(p, (int, float)) else "")


def format_compare(result: dict[str, Any]) -> str:
    """The comparison as a terminal table; gains carry their paired 95% interval, probe and
    patching numbers theirs (each condition's own, "-" where its analysis did not run),
    and every way the runs differ is printed as a warning under the table."""
    from probe.presentation.compare import GAIN_KEYS

    gains = list(GAIN_KEYS)
    if not result["rows"]:
        return "(no conditions besides the baseline to compare)"
    # A run folder's last part is enough to tell runs apart in a terminal.
    short = {"gain_bias_score_ambig": "dbias_amb", "gain_bias_score_disambig": "dbias_dis",
             "gain_accuracy_ambig": "dacc_amb", "gain_accuracy_disambig": "dacc_dis",
             "gain_r_bls": "dr_bls"}
    head = ["run", "model", "n_params", "kind", "condition", *(short[g] for g in gains),
            "probe_acc", "patch_peak", "n", "k", "mode", "differs"]
    cells = [head]
    for row in result["rows"]:
        cells.append([Path(row["run"]).name, *(_cell(row.get(c)) for c in
                                               ("model", "n_params", "kind", "condition")),
                      *(_gain_cell(row, g) for g in gains),
                      _peak_cell(row, "probe_accuracy", f"L{row.get('probe_layer')}"
                                 + _control(row)),
                      _peak_cell(row, "patching_peak", f"L{row.get('patching_peak_layer')} "
                                                       f"{row.get('patching_peak_component')}")
                      if row.get("patching_measure") != NO_EFFECT else "no effect",
                      _cell(row.get(f"{gains[0]}_n")), _cell(row.get(f"{gains[0]}_k")),
                      _cell(row.get("mode")), row.get("differs") or "-"])
    widths = [max(len(line[i]) for line in cells) for i in range(len(head))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)) for line in cells]
    legend = ("gains: condition - baseline [paired 95% bootstrap interval over "
              "templates/occupations]; ~0 = the interval contains 0 (not distinguishable "
              "from 0); ? = no verdict (one cluster, or a zero-width interval); [no CI] = "
              "re-score the run (probe score RUN); n, k: paired items and templates of the "
              "ambiguous bias gain; probe_acc: that condition's best probe (nested best "
              "layer) with its control accuracy and permutation p; patch_peak: the largest "
              "component effect, 'no effect' when the patching gap was not reliable (- = "
              "not run for that condition)")
    warnings = [f"WARNING: {w}" for w in result.get("warnings") or []]
    return "\n".join([*lines, legend, *warnings])
