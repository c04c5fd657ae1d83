"""``probe superficial RUN``: is the self-correction gain matched inside the model?"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from probe.commands.analysis import DATA_OPT, LIMIT_OPT, RUN_ARG, _floats, _ints
from probe.errors import ConfigError


def _controls(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        cond, sep, ctrl = pair.partition("=")
        if not sep or not cond or not ctrl:
            raise ConfigError(f"--control {pair!r}: expected CONDITION=CONTROL")
        out[cond] = ctrl
    return out


def _ci(block: dict[str, Any] | None) -> str:
    if not block or block.get("value", block.get("cosine")) is None:
        return "n/a"
    value = block.get("value", block.get("cosine"))
    low, high = block.get("ci") or (None, None)
    tail = "" if low is None or high is None else f" [{low:+.3f}, {high:+.3f}]"
    return f"{value:+.3f}{tail}"


@click.command("superficial")
@RUN_ARG
@click.option("--contrast", type=click.Choice(["anti", "unknown"]), default="anti",
              show_default=True, help="Concept direction: stereotyped answer minus the "
                                      "anti-stereotyped (other group) or the unknown answer.")
@click.option("--control", "controls", multiple=True, metavar="COND=CONTROL",
              help="Placebo shift a condition is compared with (default: placebo-k for "
                   "instruct-k / negate-k when the run has it). Repeatable.")
@click.option("--causal-layers", default=None,
              help="Comma-separated layers: add the concept direction there and re-score "
                   "(needs the model; default: no causal check).")
@click.option("--alphas", default="-1,0,1", show_default=True,
              help="Multiples of the raw concept direction for --causal-layers; each nonzero "
                   "alpha re-scores the baseline 1 + --n-random times per layer.")
@click.option("--n-random", type=click.IntRange(min=1), default=20, show_default=True,
              help="Norm-matched random directions in the causal check's control band (a "
                   "verdict needs at least 20).")
@click.option("--n-boot", type=click.IntRange(min=100), default=1000, show_default=True,
              help="Template-bootstrap draws.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the template halves and the bootstrap.")
@LIMIT_OPT
@DATA_OPT
def superficial(run: Path, contrast: str, controls: tuple[str, ...], causal_layers: str | None,
                alphas: str, n_random: int, n_boot: int, seed: int, limit: int | None,
                data_dir: Path | None) -> None:
    """Concept directions, trajectories, the superficial test and shift alignment of RUN;
    writes superficial.json, concept_directions.* and plots."""
    from probe.api import superficial as run_superficial

    out = run_superficial(run, contrast=contrast, seed=seed, n_boot=n_boot, limit=limit,
                          data_dir=data_dir, controls=_controls(controls),
                          causal_layers=None if causal_layers is None
                          else _ints(causal_layers, "--causal-layers"),
                          alphas=_floats(alphas, "--alphas"), n_random=n_random)
    meta = out["meta"]
    click.echo(f"{meta['n_items']} items, {meta['n_templates']} templates, contrast "
               f"{contrast}; hooks: {len(meta['hooks'])}"
               + (f" (not cached: {', '.join(meta['components_missing'])})"
                  if meta["components_missing"] else ""))
    note = out["trajectories"].get("rounds_note")
    if note:
        click.echo(note)
    ctx = meta["primary_context"]
    for cond, verdict in out["superficial"]["model"].items():
        click.echo(f"{cond:<14} {verdict['verdict']:<13} ({verdict['rule']})")
        tests = [t for t in out["superficial"]["by_hook"] if t["condition"] == cond
                 and t["context"] == ctx and t["component"] == "resid"]
        if tests:
            last = tests[-1]
            click.echo(f"{'':<14} last layer {last['layer']}: behavioural change "
                       f"{_ci(last['beh'])}, internal {_ci(last['internal'])}, ratio "
                       f"{_ci(last['ratio'])}, n={last['n_pairs']}")
        mine = [a for a in out["alignment"] if a["condition"] == cond
                and a["component"] == "resid"]
        aligned = [a for a in mine if a["verdict"].startswith("aligned")]
        strict = [a["layer"] for a in aligned if a.get("aligned_bonferroni")]
        click.echo(f"{'':<14} shift alignment: "
                   + (", ".join(f"layer {a['layer']} {_ci(a)}" for a in aligned)
                      or "no layer distinguishable from the control")
                   + (f" (after Bonferroni over {len(mine)} layers: {strict or 'none'})"
                      if aligned else ""))
    click.echo(f"wrote {run / 'superficial.json'} and plots in {run / 'plots'} "
               f"({meta['seconds']} s)")
