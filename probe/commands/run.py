"""``probe run`` and ``probe conditions``."""

from __future__ import annotations

from pathlib import Path

import click

from probe.config import MODES, RunConfig
from probe.data.registry import default_data_dir
from probe.engine.models import DEFAULT_MODEL


@click.command("run")
@click.option("--model", default=DEFAULT_MODEL, show_default=True,
              help="Embedded name, Hugging Face id, or local folder.")
@click.option("--benchmark", "benchmarks", multiple=True, help="bbq, winogender (repeat).")
@click.option("--condition", "conditions", multiple=True,
              help="Condition name (repeat); default: all that apply. See `probe conditions`.")
@click.option("--conditions-file", type=click.Path(dir_okay=False), default=None,
              help="Your own conditions: a .py file (register_condition or CONDITIONS = "
                   "[...]) or a .yaml/.json list; recorded in run.json. See docs/api.md.")
@click.option("--category", "categories", multiple=True, help="BBQ category (repeat).")
@click.option("--limit", type=int, help="Items per category, stratified (default: all).")
@click.option("--mode", type=click.Choice(MODES), default="text", show_default=True,
              help="generate: parse greedy text; letter/text: option likelihoods.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N, mps, auto.")
@click.option("--dtype", default="float32", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Benchmark files (default: $PROBE_DATA_DIR or ./data).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run folder (default: artifacts/runs/<time>_<model>_<benchmarks>).")
@click.option("--max-new-tokens", type=int, default=24, show_default=True)
@click.option("--reasoning-tokens", type=int, default=96, show_default=True,
              help="Token budget of the first turn of cot and review.")
@click.option("--cache-acts", is_flag=True,
              help="Store activations (residual stream; see --cache-components).")
@click.option("--act-positions", type=int, default=1, show_default=True,
              help="Cache the last k prompt positions.")
@click.option("--rows-per-shard", "act_rows_per_shard", type=int, default=256,
              show_default=True, help="Activation rows per shard file (bounds memory).")
@click.option("--cache-steps", "act_steps", type=int, default=0, show_default=True,
              help="With --mode generate, also cache the first n generated tokens.")
@click.option("--cache-components", default="resid", show_default=True,
              callback=lambda ctx, param, value: [c.strip() for c in value.split(",")
                                                  if c.strip()],
              help="With --cache-acts, what to store per block, comma-separated: resid "
                   "(hook_resid_post, and hook_embed), attn_out (hook_attn_out), mlp_out "
                   "(hook_mlp_out).")
@click.option("--shard", default=None, help="Run shard i of N items, as i/N (0-based).")
@click.option("--trust-remote-code", is_flag=True, help="Allow model code from the hub.")
@click.option("--allow-pickle", is_flag=True,
              help="Also load model weights stored as pickles (pytorch_model.bin), which can "
                   "run code hidden in the file; default: safetensors only.")
@click.option("--device-map", default=None,
              help="Spread one model over several GPUs (accelerate), e.g. auto.")
@click.option("--attention", type=click.Choice(["auto", "eager", "sdpa"]), default="auto",
              show_default=True,
              help="sdpa: PyTorch's fused attention kernel (outputs equal eager to float "
                   "rounding); eager: the bridge's own attention, needed to hook patterns "
                   "(calls that hook them use it anyway); auto: sdpa where the model's "
                   "attention allows it, else eager. run.json stores the resolved kernel.")
@click.option("--system-prompt", default="default", show_default=True,
              help="default: the chat template's own system prompt (SmolLM2 inserts one); "
                   "none: no system block; any other text: that text as the system message.")
@click.option("--counterbalance/--no-counterbalance", default=None,
              help="BBQ: score the options in every cyclic order and un-permute "
                   "(default: on in letter mode, off otherwise). See docs/methods.md.")
@click.option("--by-category", is_flag=True, help="Print BBQ metrics per category too.")
def run_cmd(out: Path | None, data_dir: Path | None, benchmarks: tuple[str, ...],
            conditions: tuple[str, ...], categories: tuple[str, ...], by_category: bool,
            **opts: object) -> None:
    """Run the output study (and optionally cache activations) into a run folder.

    Re-running the same command on the same --out resumes where it stopped.
    """
    from probe.api import default_out, run_study
    from probe.scoring.metrics import format_table

    cfg = RunConfig(
        benchmarks=list(benchmarks) or ["bbq", "winogender"],
        conditions=list(conditions) or None, categories=list(categories) or None,
        data_dir=str(data_dir or default_data_dir()), **opts)  # type: ignore[arg-type]
    cfg.validate()
    out = out or default_out(cfg)
    run = run_study(cfg, out)  # the same function as probe.run_study in Python
    for report in run.reports:
        click.echo(report.summary())
    click.echo(format_table(run.metrics, by_category))
    click.echo(f"\nrun folder: {run.path}  ({len(run.rows)} rows)")


@click.command("conditions")
@click.option("--benchmark", default=None, help="Only conditions for this benchmark.")
@click.option("--system-prompt", default="default", show_default=True,
              help="As for `probe run`: default, none, or a text.")
@click.option("--model", default=None,
              help="Also print each example's exact prompt through this model's chat template.")
@click.option("--conditions-file", type=click.Path(dir_okay=False), default=None,
              help="Check and list the conditions of this file too (as `probe run` would).")
def conditions_cmd(benchmark: str | None, system_prompt: str, model: str | None,
                   conditions_file: str | None) -> None:
    """List the prompt conditions with their exact text, source and differences from it."""
    from probe.conditions.registry import CONDITIONS, EXAMPLE_ITEMS, describe

    if conditions_file is not None:
        from probe.conditions.files import load_conditions_file

        load_conditions_file(conditions_file)
    click.echo(f"system prompt: {_system_line(system_prompt)}\n")
    tokenizer = None if model is None else _tokenizer(model)
    for cond in CONDITIONS.values():
        if benchmark and benchmark not in cond.benchmarks:
            continue
        click.echo(f"{cond.name}  [{', '.join(cond.benchmarks)}]")
        click.echo(f"  {cond.description}")
        for line in describe(cond):
            click.echo("  " + line.replace("\n", "\n    "))
        if tokenizer is not None:
            for bench in [b for b in cond.benchmarks if benchmark in (None, b)]:
                text = _chat_example(tokenizer, cond.build(EXAMPLE_ITEMS[bench]), system_prompt)
                click.echo(f"  {bench} prompt for {model}:\n    " + text.replace("\n", "\n    "))


def _system_line(system_prompt: str) -> str:
    if system_prompt == "default":
        return ("default (whatever the model's chat template inserts by itself, e.g. "
                "SmolLM2's 'You are a helpful AI assistant named SmolLM, trained by Hugging "
                "Face'; base models get none). Choose with --system-prompt default|none|TEXT.")
    if system_prompt == "none":
        return "none (the chat template's system block is removed)."
    return f"{system_prompt!r}"


def _tokenizer(model: str) -> object:
    from probe.engine.models import load_model

    return load_model(model).tokenizer


def _chat_example(tokenizer: object, plan: object, system_prompt: str) -> str:
    """The scored turn's exact text, earlier answers shown as the papers' placeholder."""
    from probe.conditions.prompts import render
    from probe.conditions.registry import SAMPLE

    turns = plan.turns  # type: ignore[attr-defined]
    history = [(t.user, f"{t.assistant_prefix} {SAMPLE}".strip()) for t in turns[:-1]]
    return render(tokenizer, True, history, turns[-1].user, turns[-1].assistant_prefix,
                  system_prompt)
