"""Click commands, one module per area; :data:`COMMANDS` is what ``probe`` registers."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
