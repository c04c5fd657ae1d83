"""``probe probes RUN``: linear probes per layer, self-correction directions, and their plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from probe.analysis.probe_controls import DEFAULT_DRAWS
from probe.analysis.probes import KINDS


def best_layers(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per target and kind, the best layer chosen on held-out folds (nested), with its
    control-task accuracy, selectivity and permutation p-value."""
    from probe.analysis.summary import probe_best

    out = []
    best = probe_best(result)
    for name, target in result["targets"].items():
        if target["skipped"] is not None or not target["layers"]:
            out.append({"target": name, "skipped": target["skipped"] or "no layers"})
            continue
        out += [b for b in best if b["target"] == name]
    return out


def _print_table(rows: list[dict[str, Any]]) -> None:
    click.echo(f"{'target':<30} {'kind':<9} {'layer':>5} {'n':>5} {'k':>4} {'acc':>6} "
               f"{'95% CI':>13} {'control':>7} {'select':>6} {'p':>6}")
    for r in rows:
        if "skipped" in r:
            click.echo(f"{r['target']:<30} skipped: {r['skipped']}")
            continue
        lo, hi = r["accuracy_ci"]
        click.echo(f"{r['target']:<30} {r['kind']:<9} {r['layer']:>5} {r['n']:>5} "
                   f"{r.get('n_templates') or '?':>4} "
                   f"{r['accuracy']:>6.3f} {f'[{lo:.2f}, {hi:.2f}]':>13} "
                   f"{r['control_accuracy']:>7.3f} {r['selectivity']:>+6.3f} "
                   f"{_num(r.get('p_value')):>6}")
    click.echo("best layer chosen on held-out folds (nested); n rows, k templates (the unit "
               "of the folds and the interval); control: random labels per template cluster "
               "(Hewitt & Liang control task), mean accuracy; p: permutation null")


def _print_rates(result: dict[str, Any]) -> None:
    """Self-correction rates (answer became "unknown") against the placebo instruction."""
    for name, target in result["targets"].items():
        for cond, r in (target.get("rates") or {}).items():
            lo, hi = r["rate_ci"]
            line = (f"{name}: under {cond} {_num(r['rate'])} [{_num(lo)}, {_num(hi)}] of "
                    f"n={r['n']} items became 'unknown'")
            if r.get("difference") is not None:
                dlo, dhi = r["difference_ci"]
                line += (f"; - {r['placebo']} {r['difference']:+.3f} [{dlo:+.3f}, {dhi:+.3f}] "
                         f"(n={r['n_paired']} items, {r.get('n_paired_templates')} templates)")
            note = f" ({r['note']})" if r.get("note") else ""
            click.echo(f"{line}: {r['verdict']}{note}")


def _num(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) else "-"


@click.command("probes")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--target", "targets", multiple=True,
              help="Probe target, repeatable: condition:A[:B], biased_answer[:C], correct[:C], "
                   "self_corrected:C[:baseline]. Default: condition:C for every non-baseline "
                   "condition, then the answer targets. Targets already in probes.json "
                   "(same settings) are kept.")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(KINDS),
              help="Probe kind, repeatable (default: all).")
@click.option("--layer", "layers", multiple=True, type=int,
              help="Only these layers (-1 = embeddings), repeatable (default: all cached).")
@click.option("--seed", default=0, show_default=True, help="Seed for splits, controls, bootstrap.")
@click.option("--position", default=-1, show_default=True,
              help="Stored position: -1 last prompt token (-k..-1), j >= 0 generated token j "
                   "(runs with --cache-steps; answers shorter than j+1 tokens are left out).")
@click.option("--n-draws", type=click.IntRange(min=1), default=DEFAULT_DRAWS,
              show_default=True,
              help="Control-task draws of the permutation null (p >= 1/(1 + draws): under "
                   "19 draws nothing reaches p < 0.05).")
def probes(run: Path, targets: tuple[str, ...], kinds: tuple[str, ...],
           layers: tuple[int, ...], seed: int, position: int, n_draws: int) -> None:
    """Probe RUN's cached activations layer by layer; write probes.json, directions.json, plots."""
    from probe.api import probes_and_directions

    result, entries = probes_and_directions(run, targets, kinds, layers=layers, seed=seed,
                                            position=position, n_draws=n_draws)
    _print_table(best_layers(result))
    _print_rates(result)
    for entry in entries:
        click.echo(f"direction {entry['condition']} - baseline: {entry['n_pairs']} paired "
                   f"items")
    click.echo(f"wrote {run / 'probes.json'} and plots in {run / 'plots'}")
