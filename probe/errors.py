"""Errors that the CLI turns into a one-line message and a non-zero exit code.

Anything raised as a :class:`ProbeError` is the user's to fix (bad input, missing data,
unknown names); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class ProbeError(Exception):
    """Base class of errors with a message meant for the user."""

    exit_code = 2


class DataError(ProbeError):
    """A data file is missing, malformed, or lacks a field; names file and line."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


class ConfigError(ProbeError):
    """An option or run config is invalid or does not match an existing run folder."""


class UnknownNameError(ProbeError):
    """A name (model, condition, category, benchmark) is not in its registry."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]):
        valid_list = ", ".join(sorted(valid))
        super().__init__(f"unknown {kind} {name!r}; valid: {valid_list}")
        self.kind = kind
        self.name = name
