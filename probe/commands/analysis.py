"""``probe patch``, ``probe steer`` and ``probe lens``: re-run a run's model on its BBQ items.

Each reads a run folder (items reloaded with the run's config, model from run.json) and
writes its JSON into the folder and its figure into ``RUN/plots/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from probe.errors import ConfigError

RUN_ARG = click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
DATA_OPT = click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                        help="Benchmark files, if not where the run found them.")
# One meaning of --limit in every command: items per BBQ category (here the stratified
# sample `probe run --limit N` draws, which lies inside any run with a larger limit).
LIMIT_OPT = click.option("--limit", type=int, default=None,
                         help="Items per category, the sample `probe run --limit N` draws "
                              "(default: all the run's items).")
# One name for the instruction condition in patch, steer, lens and the scripts.
INSTRUCTION_HELP = "Instruction condition (e.g. instruct-1, or one from a conditions file)"


def _ints(text: str, option: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected comma-separated integers") from None


def _floats(text: str, option: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected comma-separated numbers") from None


def _fmt(block: dict[str, Any] | None) -> str:
    if block is None or block.get("mean") is None:
        return "n/a"
    low, high = block.get("ci", [None, None])
    ci = f" [{low:+.3f}, {high:+.3f}]" if low is not None and high is not None else ""
    return f"{block['mean']:+.3f}{ci}"


@click.command("patch")
@RUN_ARG
@click.option("--instruction", required=True,
              help=f"{INSTRUCTION_HELP}, whose activations are patched into --baseline.")
@click.option("--baseline", default="baseline", show_default=True,
              help="Condition patched into (and, noising, patched from).")
@click.option("--positions", type=int, default=None,
              help="Patch only the last k prompt positions (default: every position when "
                   "the pairs are token-aligned, else the last one).")
@click.option("--control", default=None,
              help="Control condition compared on the readout gap (default: the run's "
                   "placebo-k for instruct-k / negate-k).")
@LIMIT_OPT
@DATA_OPT
def patch(run: Path, instruction: str, baseline: str, positions: int | None,
          control: str | None, limit: int | None, data_dir: Path | None) -> None:
    """Activation patching between two conditions of RUN; writes patching.json and plots."""
    from probe.api import patch as patch_run

    source, target = instruction, baseline
    out = patch_run(run, instruction, baseline, positions=positions, limit=limit,
                    data_dir=data_dir, control=control)
    metric, meta = out["metric"], out["meta"]
    click.echo(f"{meta['n_items']} items ({meta.get('n_clusters', '?')} templates: the unit "
               f"every interval resamples), {meta['alignment']} pairs, patched at "
               f"{meta['scope']}; readout ({out['readout']['definition']}): "
               f"{source} {_fmt(metric['source'])}, {target} {_fmt(metric['target'])}, "
               f"gap {_fmt(metric['gap'])}")
    for name, check in out["identities"].items():
        click.echo(f"identity {name}: |denoise - {check['denoise_expect']}| <= "
                   f"{check['denoise_max_abs_dev']:.2g}")
    if metric["gap"]["note"]:
        click.echo(metric["gap"]["note"])
    ctrl = out.get("control")
    if ctrl:
        note = f" ({ctrl['note']})" if ctrl.get("note") else ""
        k = ctrl[f"{instruction}_minus_control"].get("n_clusters", "?")
        click.echo(f"control {ctrl['name']} (n={ctrl['n']}, {k} templates): gap "
                   f"{_fmt(ctrl['gap'])}; "
                   f"{instruction} minus control "
                   f"{_fmt(ctrl[f'{instruction}_minus_control'])}: {ctrl['verdict']}{note}")
    key = "normalised" if metric["gap"]["reliable"] else "delta"
    click.echo(f"denoising, {key} at the last position:")
    for label, row in zip(out["resid"]["labels"], out["resid"]["denoise"], strict=True):
        click.echo(f"  {label:<16} {_fmt(row[-1][key])}")
    click.echo(f"wrote {run / 'patching.json'} and plots in {run / 'plots'} "
               f"({out['meta']['seconds']} s)")


@click.command("steer")
@RUN_ARG
@click.option("--instruction", required=True,
              help=f"{INSTRUCTION_HELP}; direction = its mean resid minus baseline's.")
@click.option("--layers", default=None, help="Comma-separated layers (default: 3 spread out).")
@click.option("--alphas", default="0,0.5,1", show_default=True,
              help="Multiples of the direction (1 = the instruction's mean shift), added at "
                   "the last prompt position; each non-zero alpha costs 1 + --n-random "
                   "re-scorings of the baseline per layer.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random control's seed.")
@click.option("--n-random", type=click.IntRange(min=1), default=20, show_default=True,
              help="Norm-matched random directions in the control band (a verdict needs "
                   "at least 20).")
@LIMIT_OPT
@DATA_OPT
def steer(run: Path, instruction: str, layers: str | None, alphas: str, seed: int,
          n_random: int, limit: int | None, data_dir: Path | None) -> None:
    """Steer RUN's baseline along a self-correction direction; writes steering.json and plot."""
    from probe.api import steer as steer_run

    out = steer_run(run, instruction, layers=None if layers is None else _ints(layers, "--layers"),
                    alphas=_floats(alphas, "--alphas"), seed=seed, limit=limit, data_dir=data_dir,
                    n_random=n_random)
    click.echo(f"{'layer':>5} {'kind':<9} {'alpha':>6}  readout [95% CI]        "
               f"ambig bias [95% CI]      disambig bias [95% CI]   verdict (on the readout)")
    for rec in out["results"]:
        click.echo(f"{rec['layer']:>5} {rec['kind']:<9} {rec['alpha']:>6g}  "
                   f"{_fmt(rec['readout']):<24} {_fmt(rec['ambig']):<24} "
                   f"{_fmt(rec['disambig']):<24} {rec.get('verdict', '')}")
    click.echo("readout: log p(unbiased) - log p(biased), nats; direction rows: mean over items "
               "with a template-cluster interval; random rows: median and 5-95% of the "
               f"{out['meta']['n_random']} random directions")
    click.echo(f"wrote {run / 'steering.json'} and {run / 'plots' / 'steering.png'} "
               f"({out['meta']['seconds']} s)")


@click.command("lens")
@RUN_ARG
@click.option("--instruction", "instructions", multiple=True,
              help=f"{INSTRUCTION_HELP}, repeatable: lens baseline and these "
                   "(default: every condition of the run).")
@LIMIT_OPT
@DATA_OPT
def lens(run: Path, instructions: tuple[str, ...], limit: int | None,
         data_dir: Path | None) -> None:
    """Logit lens at the answer position per layer and condition; writes lens.json and plot."""
    from probe.api import lens as lens_run

    out = lens_run(run, instructions, limit=limit, data_dir=data_dir)
    click.echo(f"readout: {out['readout']['definition']}")
    for cond, block in out["conditions"].items():
        if not block["layers"]:
            click.echo(f"{cond:<14} n=0")
            continue
        last = block["layers"][-1]
        k = last["readout"].get("n_clusters", "?")
        click.echo(f"{cond:<14} n={block['n_items']:<4} ({k} templates) final layer: readout "
                   f"{_fmt(last['readout'])}  (unbiased {_fmt(last['unbiased'])}, biased "
                   f"{_fmt(last['biased'])})")
    click.echo(f"wrote {run / 'lens.json'} and {run / 'plots' / 'lens.png'} "
               f"({out['meta']['seconds']} s)")
