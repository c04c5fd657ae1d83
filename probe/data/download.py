"""Fetch the official BBQ and Winogender files into the data dir, and check what is there.

Every fetched file is verified before it is kept: by sha256 where the digest is known
(computed from verified copies of the official files), else by parsing it. Files are
written to a temp file inside the data dir and renamed, so a failed or tampered download
never leaves a partial or wrong file behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from probe.data.bbq import item_from_bbq_row, read_jsonl
from probe.data.registry import BBQ_CATEGORIES
from probe.errors import ConfigError, DataError

OFFICIAL: dict[str, str] = {
    "bbq": "https://raw.githubusercontent.com/nyu-mll/BBQ/main/data",
    "winogender": "https://raw.githubusercontent.com/rudinger/winogender-schemas/master/data",
}
FILES: dict[str, tuple[str, ...]] = {
    "bbq": tuple(f"bbq/{cat}.jsonl" for cat in BBQ_CATEGORIES),
    "winogender": tuple(f"winogender/{name}.tsv"
                        for name in ("all_sentences", "templates", "occupations-stats")),
}
# sha256 of the official files (the four large BBQ categories were not available to hash).
SHA256: dict[str, str] = {
    "bbq/Age.jsonl": "46e805b3fc2d8cbd26eeb8e8430d98cf7b2dc9c83574ff3674e8ce4f0fca2a60",
    "bbq/Disability_status.jsonl":
        "375d40d9b71f056150264445ec189b13934998f3f49a1e311aa7578eb3b45e5f",
    "bbq/Gender_identity.jsonl":
        "8b5adbb368510a97d5775dc43e1c719e0249fe2da33f13c83e3e29edafec7a00",
    "bbq/Nationality.jsonl": "a583e74666aec0341ded8aa3983e7cad694eb24de72c254d28b2df3035720090",
    "bbq/Physical_appearance.jsonl":
        "e48d7e13508565f4801574e611043470c25c95a0a62af3699cb5ee7cb02608fb",
    "bbq/Religion.jsonl": "cb9555f9f3454a52cd2df85956b59bd7fcca5aa922c8527693b1164d08417616",
    "bbq/Sexual_orientation.jsonl":
        "2c71036b9e7584fe589c42aef32c1a42bc01b9a5e9b1b8704342630cdb08cefd",
    "winogender/all_sentences.tsv":
        "bd69da16bf228cb8df63fd0843aec2d8b5c36a7f21bf8c7b168bcc83932556c8",
    "winogender/occupations-stats.tsv":
        "3f7f37c16381a70571356982ea7fe613ac700ad04a6d3b19b9f2be18248df567",
    "winogender/templates.tsv":
        "496f2e2dc77296bcebcdd8865a8dc5715ce22b772de9abb5f531d5b3114c48a0",
}
BY_HAND = ("download them by hand from https://github.com/nyu-mll/BBQ (data/*.jsonl) and "
           "https://github.com/rudinger/winogender-schemas (data/*.tsv) into {dir}/bbq/ "
           "and {dir}/winogender/")


@dataclass
class DataReport:
    """Files by state; ``fetched``/``kept`` from download, ``present``/``missing``/``corrupt``
    from check."""

    present: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    fetched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No file is corrupt."""
        return not self.corrupt

    def summary(self) -> str:
        """One line per state that has files."""
        parts = [(name, getattr(self, name)) for name in ("fetched", "present", "missing",
                                                          "corrupt")]
        return "\n".join(f"{name} ({len(v)}): {', '.join(v)}" for name, v in parts if v)


def safe_target(data_dir: Path, rel: str) -> Path:
    """``data_dir/rel``, refusing absolute paths and anything that escapes the data dir."""
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or "\\" in rel or not pure.parts:
        raise ConfigError(f"refusing file name outside the data dir: {rel!r}")
    target = (data_dir / pure).resolve()
    if not target.is_relative_to(data_dir.resolve()):
        raise ConfigError(f"refusing file name outside the data dir: {rel!r}")
    return target


def verify(path: Path, rel: str) -> str | None:
    """None if the file is good, else why not (digest mismatch or parse failure)."""
    if rel in SHA256:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return None if digest == SHA256[rel] else f"sha256 mismatch ({digest[:12]}...)"
    try:
        if rel.endswith(".jsonl"):
            rows = [item_from_bbq_row(row, rel, n) for n, row in read_jsonl(path)]
            return None if rows else "empty file"
        header = path.read_text(encoding="utf-8").split("\n", 1)[0]
        return None if "\t" in header else "not a tab-separated file"
    except (DataError, UnicodeDecodeError) as err:
        return str(err)


def _selected(only: str | None) -> dict[str, tuple[str, ...]]:
    if only is None:
        return FILES
    if only not in FILES:
        raise ConfigError(f"--only must be one of {', '.join(FILES)}, got {only!r}")
    return {only: FILES[only]}


def _url(base_url: str | None, benchmark: str, rel: str) -> str:
    # A custom base mirrors the data-dir layout; the official ones are per repository.
    if base_url is None:
        return f"{OFFICIAL[benchmark]}/{PurePosixPath(rel).name}"
    return f"{base_url.rstrip('/')}/{rel}"


def _fetch(url: str, target: Path, rel: str, timeout: float) -> str | None:
    """Download to a temp file beside ``target``; keep it only if it verifies."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
        problem = verify(Path(tmp), rel)
        if problem is None:
            os.replace(tmp, target)
        return problem
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def download(data_dir: Path | str, base_url: str | None = None, only: str | None = None,
             timeout: float = 30.0) -> DataReport:
    """Fetch missing or corrupt files (``only``: "bbq" or "winogender"); verified files
    already present are kept. Raises DataError listing every file that failed."""
    root = Path(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    report, errors = DataReport(), []
    for benchmark, rels in _selected(only).items():
        for rel in rels:
            target = safe_target(root, rel)
            if target.is_file() and verify(target, rel) is None:
                report.present.append(rel)
                continue
            url = _url(base_url, benchmark, rel)
            try:
                problem = _fetch(url, target, rel, timeout)
            except urllib.error.HTTPError as err:
                problem = f"HTTP {err.code} from {url}"
            except (urllib.error.URLError, OSError) as err:
                reason = getattr(err, "reason", err)
                raise DataError(f"cannot reach {url} ({reason}); "
                                + BY_HAND.format(dir=root)) from None
            if problem:
                errors.append(f"{rel}: {problem} (not kept)")
            else:
                report.fetched.append(rel)
    if errors:
        raise DataError("some files failed: " + "; ".join(errors), str(root))
    return report


def check(data_dir: Path | str) -> DataReport:
    """Which known files are present (and verify), missing, or corrupt."""
    root = Path(data_dir)
    report = DataReport()
    for rels in FILES.values():
        for rel in rels:
            path = safe_target(root, rel)
            if not path.is_file():
                report.missing.append(rel)
            elif verify(path, rel) is None:
                report.present.append(rel)
            else:
                report.corrupt.append(rel)
    return report
