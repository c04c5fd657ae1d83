"""The ``probe`` command line: parse options, call the package, print. No logic lives here."""

from __future__ import annotations

import errno
import sys
import traceback

import click

from probe.errors import ProbeError

# OS errors that are the user's to fix (permissions, read-only or full disks).
USER_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


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
        except OSError as err:
            # The environment, not a bug: a read-only folder, a full disk, a missing permission.
            if err.errno not in USER_ERRNOS:
                raise
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            where = f"{err.filename}: " if err.filename else ""
            click.echo(f"probe: error: {where}{err.strerror}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("probe: interrupted; finished work is saved, rerun to resume", err=True)
            sys.exit(130)


@click.group(cls=ProbeGroup)
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.option("--threads", type=int, default=None, envvar="PROBE_THREADS",
              help="torch threads (default: $PROBE_THREADS, else the free cores when the "
                   "machine is loaded, else torch's default).")
@click.pass_context
def cli(ctx: click.Context, debug: bool, threads: int | None) -> None:
    """Moral self-correction, from outputs to internals."""
    from probe.engine.threads import apply_threads

    ctx.obj = {"debug": debug}
    # Here, not in each command: a model loads only after this, and its threads follow.
    apply_threads(threads)


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
