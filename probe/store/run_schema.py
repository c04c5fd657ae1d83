"""What a run folder's config and rows must match to be resumed, merged or read.

The schema version says what rows mean; :func:`config_diff` compares two configs (keys added
since a run was written read as the value their absence means); resumable differences are
the keys of :data:`RESUME_IGNORED`. Used by :mod:`probe.store.runs` and :mod:`probe.store.merge`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from probe.errors import ConfigError
from probe.store.io import to_jsonable

# What a run folder's rows mean. A folder of another version is neither resumed, nor
# re-scored, nor analysed: its rows would be mixed with, or read as, rows they are not.
SCHEMA_VERSION = 2
# Why rows of each earlier version cannot be re-scored (shown when such a folder is refused).
SCHEMA_CHANGES: dict[int, str] = {
    2: "option tokens are now those of prompt + option tokenized as one string; version 1 "
       "scored Winogender pronouns after a lone ' ' token",
}

# Config keys that may change between a run and its resume because they do not change
# results. Matched against the full dotted key ("model.device") or its last part.
RESUME_IGNORED: frozenset[str] = frozenset(
    # data_dir may be spelled differently; the data files' hashes are compared instead.
    {"batch_size", "device", "out", "progress", "verbose", "log_level", "num_workers",
     "data_dir", "device_map", "allow_pickle"}
)

# Config keys added after runs were written, with the value a run.json without them means;
# a resume or merge compares that value (so such runs still resume under the default).
# (attention: "eager" was the only kernel before the option, and the default until "auto".)
ADDED_KEYS: dict[str, Any] = {"cache_components": ["resid"], "attention": "eager"}


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as {"a.b": value}; other values (lists included) are leaves."""
    if not isinstance(obj, dict) or (prefix and not obj):
        return {prefix: obj}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ, as {dotted key: (old, new)}; a missing side is ``None``.

    Both sides go through JSON first, so a tuple equals the list it was stored as; a key of
    :data:`ADDED_KEYS` missing on a side reads as the value its absence means.
    """
    a = _flatten(json.loads(json.dumps(to_jsonable({**ADDED_KEYS, **old}))))
    b = _flatten(json.loads(json.dumps(to_jsonable({**ADDED_KEYS, **new}))))
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def ignored(key: str) -> bool:
    """Whether a differing config key may change on resume (:data:`RESUME_IGNORED`)."""
    return key in RESUME_IGNORED or key.rsplit(".", 1)[-1] in RESUME_IGNORED


def changed_files(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Names of files recorded in both provenances whose content hash differs."""
    before, after = old.get("files") or {}, new.get("files") or {}
    return sorted(name for name in set(before) & set(after)
                  if (before[name] or {}).get("sha256") != (after[name] or {}).get("sha256"))


def schema_error(path: Path, version: Any, config: dict[str, Any]) -> ConfigError:
    """The one-line refusal of a run folder written under another schema version."""
    if isinstance(version, int) and version > SCHEMA_VERSION:
        return ConfigError(f"{path} has run schema_version {version}, newer than this probe's "
                           f"{SCHEMA_VERSION}; upgrade probe to read it")
    why = "; ".join(SCHEMA_CHANGES[v] for v in sorted(SCHEMA_CHANGES)
                    if not isinstance(version, int) or v > version)
    model = config.get("model", "MODEL")
    return ConfigError(f"{path} has run schema_version {version!r}; this probe reads "
                       f"{SCHEMA_VERSION} ({why}), so its rows cannot be re-scored or resumed; "
                       f"re-run with `probe run --model {model} ... --out NEW_FOLDER` "
                       f"(its options are in {path / 'run.json'})")
