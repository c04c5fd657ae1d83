"""``--conditions-file``: conditions from the user's own Python, YAML or JSON file.

- Python (``.py``): the file is imported; the conditions it registers with
  :func:`probe.conditions.registry.register_condition`, or lists in a module-level ``CONDITIONS``,
  are kept. Importing runs the file's code, so it is only done when a user names the file.
- YAML (``.yaml``/``.yml``) or JSON (``.json``): conditions as data, see
  :mod:`probe.conditions.specs`; no code runs.

A run records the file in run.json (``provenance.conditions_file``: path, format, sha256, the
content, and each condition's name, description, source and benchmarks; the file's hash is
also under ``provenance.files``, so a resume with a changed file is refused). Later commands
on the run register its conditions from that record with :func:`register_run_conditions`,
without the file: data files are re-read from the stored content; conditions of a Python file
keep their metadata only (stored code is never executed), which is all that probes, compare,
report and score need, and patch, steer and lens rebuild prompts from the rows themselves
(each row stores its scored turn in ``meta.final_turn``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import traceback
from pathlib import Path
from typing import Any

from probe.conditions.registry import CONDITIONS, EXAMPLE_ITEMS, Condition, PromptPlan
from probe.conditions.specs import NAME_RE, SpecError, conditions_from_data
from probe.errors import ConfigError, DataError

FORMATS = {".py": "python", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}
RECORD_KEY = "conditions_file"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _parse(text: str, fmt: str, path: str) -> Any:
    """Parsed YAML or JSON; a syntax error names the file and line."""
    if fmt == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"invalid JSON: {exc.msg}", path, exc.lineno) from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # An unclosed bracket is found at the end of the file; its context marks the opening.
        mark = getattr(exc, "context_mark", None) or getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        raise DataError(f"invalid YAML: {context + ': ' if context else ''}{problem}", path,
                        None if mark is None else mark.line + 1) from None


def _entry_lines(text: str) -> list[int]:
    """1-based first line of each condition in a YAML or JSON text (JSON parses as YAML);
    empty when the layout cannot be read (then errors name the field only)."""
    import yaml

    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return []
    if isinstance(node, yaml.MappingNode):
        node = next((v for k, v in node.value if k.value == "conditions"), None)
    if not isinstance(node, yaml.SequenceNode):
        return []
    return [entry.start_mark.line + 1 for entry in node.value]


def _data_conditions(text: str, fmt: str, path: str) -> list[Condition]:
    try:
        return conditions_from_data(_parse(text, fmt, path))
    except SpecError as err:
        lines = _entry_lines(text)
        line = lines[err.index] if err.index is not None and err.index < len(lines) else None
        where = err.where()
        raise DataError(f"{where}: {err}" if where else str(err), path, line) from None


def _line_in(path: str, exc: BaseException) -> int | None:
    """The last line of ``path`` in the traceback of ``exc``."""
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__)
             if Path(f.filename).resolve() == Path(path).resolve()]
    return lines[-1] if lines else None


def _python_conditions(path: str, sha: str) -> list[Condition]:
    """Import a Python file; the conditions it registered or listed in ``CONDITIONS``."""
    before = dict(CONDITIONS)
    spec = importlib.util.spec_from_file_location(f"probe_user_conditions_{sha[:12]}", path)
    if spec is None or spec.loader is None:
        raise DataError("cannot import this file", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise DataError(f"syntax error: {exc.msg}", path, exc.lineno) from None
    except Exception as exc:  # the user's code: report where in their file it failed
        raise DataError(f"{type(exc).__name__}: {exc}", path, _line_in(path, exc)) from None
    finally:
        registered = {n: c for n, c in CONDITIONS.items() if before.get(n) is not c}
        CONDITIONS.clear()
        CONDITIONS.update(before)
    listed = getattr(module, "CONDITIONS", [])
    if not isinstance(listed, (list, tuple)) or \
            not all(isinstance(c, Condition) for c in listed):
        raise DataError("CONDITIONS must be a list of probe.conditions.registry.Condition", path)
    found = {**registered, **{c.name: c for c in listed}}
    if not found:
        raise DataError("defines no condition: call register_condition(...) or set "
                        "CONDITIONS = [Condition(...), ...]", path)
    return list(found.values())


def _check(conditions: list[Condition], path: str, builtin: set[str]) -> None:
    """Names not taken by built-ins; each condition builds a plan for each benchmark."""
    for cond in conditions:
        if not isinstance(cond.name, str) or not NAME_RE.match(cond.name):
            raise DataError(f"condition name {cond.name!r} must be letters, digits, '-', '_', "
                            f"'.' (names appear in probe targets and file names)", path)
        if cond.name in builtin:
            raise DataError(f"condition {cond.name!r} is built in; give yours another name",
                            path)
        for bench in cond.benchmarks:
            if bench not in EXAMPLE_ITEMS:
                raise DataError(f"condition {cond.name!r}: unknown benchmark {bench!r}; "
                                f"valid: {', '.join(EXAMPLE_ITEMS)}", path)
            try:
                plan = cond.build(EXAMPLE_ITEMS[bench])
            except Exception as exc:
                raise DataError(f"condition {cond.name!r} fails on a {bench} item: "
                                f"{type(exc).__name__}: {exc}", path,
                                _line_in(path, exc)) from None
            if not isinstance(plan, PromptPlan) or not plan.turns or \
                    not all(isinstance(t.user, str) and isinstance(t.assistant_prefix, str)
                            for t in plan.turns):
                raise DataError(f"condition {cond.name!r}: build must return a PromptPlan "
                                f"of Turns with text", path)


def load_conditions_file(path: str | Path) -> dict[str, Any]:
    """Read, check and register the conditions of ``path``; returns the run.json record."""
    path = str(path)
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ConfigError(f"--conditions-file {path}: expected a .py, .yaml, .yml or .json "
                          f"file")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read conditions file ({exc})", path) from None
    sha = _sha256(text)
    builtin = set(builtin_names())
    found = (_python_conditions(path, sha) if fmt == "python"
             else _data_conditions(text, fmt, path))
    _check(found, path, builtin)
    for cond in found:
        CONDITIONS[cond.name] = cond
    return {"path": path, "format": fmt, "sha256": sha, "content": text,
            "conditions": [describe_meta(c) for c in found]}


def describe_meta(cond: Condition) -> dict[str, Any]:
    """What a record keeps of a condition besides the file."""
    return {"name": cond.name, "description": cond.description, "source": cond.source,
            "benchmarks": list(cond.benchmarks)}


# Builders of user conditions live here too; they are not built-ins.
_USER_MODULES = ("probe.conditions.specs", "probe.conditions.files")


def builtin_names() -> list[str]:
    """Names of the registered conditions that probe itself defines."""
    return [n for n, c in CONDITIONS.items()
            if c.build.__module__.startswith("probe.") and c.build.__module__ not in _USER_MODULES]


def conditions_used(names: list[str], record: dict[str, Any] | None) -> dict[str, Any]:
    """run.json's account of each condition a run asks: its metadata and where it came
    from (built in, the conditions file, or registered in Python, whose code is not kept)."""
    from probe.conditions.registry import get_condition

    builtin, in_file = set(builtin_names()), {c["name"] for c in (record or {}).get(
        "conditions", [])}
    return {name: {**describe_meta(get_condition(name)),
                   "origin": "probe" if name in builtin else RECORD_KEY if name in in_file
                   else "registered in Python (code not recorded)"}
            for name in names}


def _metadata_only(meta: dict[str, Any], path: str) -> Condition:
    name = str(meta["name"])

    def build(item: Any) -> PromptPlan:
        raise ConfigError(f"condition {name!r} comes from the Python file {path}; its prompts "
                          f"are in the run's rows, but building new ones needs the file: "
                          f"pass --conditions-file {path}")

    return Condition(name, str(meta.get("description", "")), str(meta.get("source", "")),
                     tuple(meta.get("benchmarks", ())), build)


def register_record(record: dict[str, Any], where: str = "run.json") -> list[str]:
    """Register the conditions a run recorded (see the module docstring); their names.

    A name already registered (e.g. the user imported the file) is left as it is.
    """
    text = record.get("content")
    if not isinstance(text, str) or _sha256(text) != record.get("sha256"):
        raise DataError(f"{RECORD_KEY} record is altered (content does not match sha256)",
                        where)
    if record.get("format") == "python":
        found = [_metadata_only(m, str(record.get("path"))) for m in record["conditions"]]
    else:
        found = _data_conditions(text, str(record.get("format")), f"{where} ({RECORD_KEY})")
    for cond in found:
        CONDITIONS.setdefault(cond.name, cond)
    return [c.name for c in found]


def run_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The conditions-file record of a run folder, or None."""
    run_json = Path(run_dir) / "run.json"
    if not run_json.is_file():
        return None
    info = json.loads(run_json.read_text(encoding="utf-8"))
    record = (info.get("provenance") or {}).get(RECORD_KEY)
    return record if isinstance(record, dict) else None


def register_run_conditions(run_dir: str | Path) -> list[str]:
    """Register the user conditions a run was made with (none: ``[]``)."""
    record = run_record(run_dir)
    return [] if record is None else register_record(record, str(Path(run_dir) / "run.json"))
