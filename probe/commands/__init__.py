"""Click commands, one module per area; :data:`COMMANDS` is what ``probe`` registers."""

from __future__ import annotations

import click

from probe.commands.analysis import lens, patch, steer
from probe.commands.data import data
from probe.commands.probes import probes
from probe.commands.report import compare_cmd, plots_cmd, report_cmd
from probe.commands.run import conditions_cmd, run_cmd
from probe.commands.scale import bench_cmd, merge_cmd
from probe.commands.score import score
from probe.commands.superficial import superficial

COMMANDS: list[click.Command] = [
    run_cmd, conditions_cmd, score, data, probes, patch, steer, lens, plots_cmd, report_cmd,
    compare_cmd, bench_cmd, merge_cmd, superficial,
]
