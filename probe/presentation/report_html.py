"""HTML building blocks of the report: escaping, number formatting, tables.

Every piece of text from a run goes through :func:`esc`; the only unescaped markup is what
this package writes itself, wrapped in :class:`Raw`. Tables sit in a scrolling wrapper so a
wide one never widens the page, and column names read as words (no dotted JSON keys).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any


class Raw(str):
    """Markup this package wrote (already escaped where it holds run text)."""


def esc(value: Any) -> str:
    """Text for HTML, escaped (a :class:`Raw` passes through)."""
    return value if isinstance(value, Raw) else html.escape(str(value))


def fmt(value: Any, digits: int = 3) -> str:
    """A number rounded for a table; None/NaN as "n/a"; other values as text."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    # Tiny effects (patching deltas on small models) would all read 0.000.
    return f"{value:.2e}" if 0 < abs(value) < 10 ** -digits else f"{value:.{digits}f}"


def with_ci(value: Any, ci: Sequence[Any] | None) -> str:
    """"0.250 [-0.250, 0.750]"; "0.250 [no CI]" when the interval is undefined (a number
    shown without one must say so); the bare "n/a" when there is no value."""
    if fmt(value) == "n/a":
        return "n/a"
    if not ci or len(ci) != 2 or any(v is None for v in ci):
        return f"{fmt(value)} [no CI]"
    return f"{fmt(value)} [{fmt(ci[0])}, {fmt(ci[1])}]"


def words(key: Any) -> str:
    """A JSON key or dotted path as words: "targets.biased_answer" -> "targets › biased
    answer"; list indices "[3]" -> " 3"."""
    text = re.sub(r"\[(\d+)\]", r" \1", str(key))
    return " › ".join(part.replace("_", " ").strip() for part in text.split("."))


def table(headers: Sequence[Any] | None, rows: Iterable[Sequence[Any]],
          row_heads: bool = False) -> str:
    """An HTML table in a horizontally scrolling box; every cell escaped. No header row
    when ``headers`` is None; ``row_heads`` makes the first cell of each row a header."""
    head = ("<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers)
            + "</tr></thead>") if headers else ""

    def line(row: Sequence[Any]) -> str:
        cells = [f"<td>{esc(c)}</td>" for c in row]
        if row_heads and cells:
            cells[0] = f'<th scope="row">{esc(row[0])}</th>'
        return "<tr>" + "".join(cells) + "</tr>"

    body = "".join(line(row) for row in rows)
    return f'<div class="scroll"><table>{head}<tbody>{body}</tbody></table></div>'


def details(summary: str, inner: str) -> str:
    """A collapsed block (no script needed to open it)."""
    return f"<details><summary>{esc(summary)}</summary>{inner}</details>"


def pre(text: Any) -> str:
    """Run text (a prompt, an output) as a wrapped, escaped block."""
    return f'<pre class="text">{esc(text)}</pre>'
