"""The commands' options, read from click itself: one name for the instruction condition,
one meaning of ``--limit`` (items per category), and that meaning carried out."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from probe.commands import COMMANDS
from tests.conftest import REPO
from tests.conftest_data import bbq_cells, write_jsonl

SCRIPTS = ("locate_self_correction", "reproduce_output_study")
# Names the instruction condition had before it had one name everywhere.
RETIRED = {"--source", "--direction", "--target-condition"}


def _script_command(name: str) -> click.Command:
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main  # type: ignore[no-any-return]


def _walk(command: click.Command, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    name = f"{prefix} {command.name}".strip()
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            yield from _walk(sub, name)
    else:
        yield name, command


def all_commands() -> dict[str, click.Command]:
    """Every leaf command of ``probe`` and of the scripts, by its full name."""
    found = {name: cmd for top in COMMANDS for name, cmd in _walk(top)}
    found.update({f"scripts/{s}.py": _script_command(s) for s in SCRIPTS})
    return found


def options(command: click.Command) -> dict[str, click.Option]:
    """Long option name -> option."""
    return {opt: p for p in command.params if isinstance(p, click.Option) for opt in p.opts}


def test_every_command_is_found() -> None:
    names = set(all_commands())
    assert {"run", "patch", "steer", "lens", "probes", "data check"} <= names
    assert "scripts/locate_self_correction.py" in names


@pytest.mark.parametrize("name", ["patch", "steer", "lens", "scripts/locate_self_correction.py"])
def test_instruction_condition_has_one_name(name: str) -> None:
    opts = options(all_commands()[name])
    assert "--instruction" in opts
    assert "instruction" in (opts["--instruction"].help or "").lower()


def test_no_command_uses_a_retired_name() -> None:
    used = {(name, opt) for name, cmd in all_commands().items() for opt in options(cmd)
            if opt in RETIRED}
    assert used == set()


def test_limit_is_items_per_category_everywhere() -> None:
    limits = {name: options(cmd)["--limit"] for name, cmd in all_commands().items()
              if "--limit" in options(cmd)}
    assert {"run", "patch", "steer", "lens", "scripts/reproduce_output_study.py"} <= set(limits)
    for name, opt in limits.items():
        assert "per category" in (opt.help or ""), name
        assert opt.type == click.INT, name


def test_every_option_says_what_it_does_or_shows_a_default() -> None:
    bare = [(name, p.opts[0]) for name, cmd in all_commands().items() for p in cmd.params
            if isinstance(p, click.Option) and not p.help and not p.show_default
            and not p.is_flag]
    # Only self-explanatory numbers and names may go without help (and they show a default).
    assert all(opt in {"--batch-size", "--dtype", "--seed", "--max-new-tokens", "--device",
                       "--mode", "--model", "--items", "--new-tokens"}
               for _, opt in bare), bare


def test_analysis_limit_keeps_n_items_of_every_category(tmp_path: Path, tiny) -> None:
    """``--limit 1`` on a two-category run keeps one item per category (the one
    ``probe run --limit 1`` picks), not the first item of the first category."""
    from probe.analysis import answers as ans
    from probe.config import RunConfig
    from probe.engine.study import load_items, run_study

    data = tmp_path / "data"
    for cat in ("Age", "Religion"):
        write_jsonl(data / "bbq" / f"{cat}.jsonl", bbq_cells(cat, per_cell=2))
    cfg = RunConfig(model="tiny-random", benchmarks=["bbq"], categories=["Age", "Religion"],
                    conditions=["baseline"], limit=4, mode="letter", data_dir=str(data),
                    batch_size=8)
    run_study(cfg, tmp_path / "run", loaded=tiny)
    run = ans.load_run(tmp_path / "run", limit=1)
    expected, _ = load_items(RunConfig(benchmarks=["bbq"], categories=["Age", "Religion"],
                                       limit=1, data_dir=str(data)))
    assert [it.item_id for it in run.items] == [it.item_id for it in expected]
    assert sorted(it.category for it in run.items) == ["Age", "Religion"]
    assert set(run.rows) == {(it.item_id, "baseline") for it in expected}

    from probe.analysis.lens import run_lens

    out = run_lens(str(tmp_path / "run"), limit=1, loaded=tiny)
    lensed = out["conditions"]["baseline"]["item_ids"]
    assert {i.split(":")[1] for i in lensed} <= {"Age", "Religion"}
    assert 1 <= len(lensed) <= 2 and len(lensed) == out["conditions"]["baseline"]["n_items"]
    with pytest.raises(Exception, match="condition of this run"):
        run_lens(str(tmp_path / "run"), ["baseline", "instruct-9"], loaded=tiny)
