"""Score BBQ predictions made elsewhere: JSONL lines holding a BBQ row plus a prediction.

Each line becomes an :class:`Item` through the loader's own :func:`item_from_bbq_row`, so
targets are derived exactly as for our runs. The prediction (answer text, a letter, or an
index) is parsed with :func:`parse_bbq_answer`; rows use the prediction field's name as
their condition unless one is given. Lines that carry only ``category`` and
``example_id`` are joined to the official item from ``data_dir``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from probe.data.bbq import _FIELDS, item_from_bbq_row, load_bbq, read_jsonl
from probe.data.items import Item, row_for
from probe.errors import ConfigError, DataError
from probe.scoring.metrics import compute_metrics
from probe.scoring.parse import parse_bbq_answer


def _pred_index(value: Any, options: tuple[str, ...]) -> int | None:
    """An index from an int, or from text parsed as letter, answer text or digit."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value if 0 <= value < len(options) else None
    if isinstance(value, str):
        return parse_bbq_answer(value, options, allow_index=True)
    return None


def _pred_field(row: dict[str, Any], path: str, line: int) -> str:
    """The single non-BBQ field of a line, for when --pred-field is not given."""
    extra = sorted(k for k in row if k not in _FIELDS)
    if len(extra) != 1:
        raise ConfigError(f"{path}:{line}: cannot tell the prediction field among "
                          f"{extra or 'no extra fields'}; pass --pred-field")
    return extra[0]


class _Official:
    """Official items from a data dir by (category, example_id), loaded on demand."""

    def __init__(self, data_dir: Path | str | None):
        self.data_dir = data_dir
        self.cache: dict[str, dict[int, Item]] = {}

    def get(self, row: dict[str, Any], path: str, line: int) -> Item:
        category, example_id = row.get("category"), row.get("example_id")
        if self.data_dir is None or not isinstance(category, str):
            raise DataError("line lacks BBQ fields and no data dir was given to join on",
                            path, line)
        if category not in self.cache:
            items, _ = load_bbq(self.data_dir, [category])
            self.cache[category] = {it.meta["example_id"]: it for it in items}
        if example_id not in self.cache[category]:
            raise DataError(f"no official {category} item {example_id!r}", path, line)
        return self.cache[category][example_id]


def read_predictions(paths: Iterable[Path | str], pred_field: str | None = None,
                     data_dir: Path | str | None = None,
                     condition: str | None = None) -> list[dict[str, Any]]:
    """Rows (GenerationRow JSON shape, mode "external") for every prediction line."""
    official, rows = _Official(data_dir), []
    for path in map(Path, paths):
        if not path.is_file():
            raise DataError("no such predictions file", str(path))
        for number, raw in read_jsonl(path):
            if not isinstance(raw, dict):
                raise DataError("expected a JSON object", str(path), number)
            field = pred_field or _pred_field(raw, str(path), number)
            if field not in raw:
                raise DataError(f"missing prediction field {field!r}", str(path), number)
            has_item = all(k in raw for k in _FIELDS)
            item = (item_from_bbq_row(raw, str(path), number) if has_item
                    else official.get(raw, str(path), number))
            value = raw[field]
            row = row_for(item, condition or field, "external", prompt="",
                          output="" if value is None else str(value),
                          pred=_pred_index(value, item.options))
            rows.append(row.to_json())
    if not rows:
        raise DataError("no predictions found", ", ".join(map(str, paths)))
    return rows


def score_predictions(paths: Iterable[Path | str], pred_field: str | None = None,
                      data_dir: Path | str | None = None, condition: str | None = None,
                      n_boot: int = 1000, seed: int = 0,
                      ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(rows, metrics) for external prediction files; see :func:`read_predictions`."""
    rows = read_predictions(list(paths), pred_field, data_dir, condition)
    return rows, compute_metrics(rows, n_boot=n_boot, seed=seed)
