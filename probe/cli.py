"""The ``probe`` command line: parse options, call the package, print. No logic lives here."""

from __future__ import annotations

import sys
import traceback

import click

from probe.errors import ProbeError


class ProbeGroup(click.Group):
    """A click group that turns :class:`ProbeError` into one line and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ProbeError as err:
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            click.echo(f"probe: error: {err}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("probe: interrupted; finished work is saved, rerun to resume", err=True)
            sys.exit(130)


@click.group(cls=ProbeGroup)
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Moral self-correction, from outputs to internals."""
    ctx.obj = {"debug": debug}


def _register() -> None:
    # Each area keeps its commands in its own module; the group only collects them.
    from probe.commands import COMMANDS

    for command in COMMANDS:
        cli.add_command(command)


_register()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="probe")


if __name__ == "__main__":
    main()
