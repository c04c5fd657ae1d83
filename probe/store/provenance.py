"""What produced a run: package versions, platform, code commit, and hashes of input files.

Nothing here may fail a run: a missing package or an absent ``git`` is recorded as ``None``.
The host name is deliberately left out so run folders can be shared without leaking it.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from probe.errors import DataError
from probe.store.io import sha256_file

# Distribution names on PyPI, keyed by the name recorded in run.json.
PACKAGES: dict[str, tuple[str, ...]] = {
    "probe": ("probe",),
    "torch": ("torch",),
    "transformers": ("transformers",),
    "transformer_lens": ("transformer-lens", "transformer_lens"),
    "numpy": ("numpy",),
    "safetensors": ("safetensors",),
    "sklearn": ("scikit-learn",),
}

# sha256 of files already hashed in this process, keyed by (path, size, mtime_ns): model
# files are gigabytes and every stage records them, so each is read once per process.
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that change results, plus Python's."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name, dists in PACKAGES.items():
        versions[name] = None
        for dist in dists:
            try:
                versions[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return versions


def platform_info() -> dict[str, str]:
    """OS and machine, without the host name (``platform.node`` is never called)."""
    return {
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python_implementation": platform.python_implementation(),
        "executable_bits": platform.architecture(sys.executable)[0],
    }


def _git(repo: Path, *args: str) -> str | None:
    """Run git in ``repo``; ``None`` when git is absent, fails, or hangs."""
    # No optional locks: `git status` would otherwise refresh the index under
    # .git/index.lock, and a commit the user runs meanwhile would fail on that lock.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        done = subprocess.run(["git", "--no-optional-locks", "-C", str(repo), *args],
                              capture_output=True, text=True, timeout=10, check=True, env=env)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def git_info(repo: Path | None = None) -> dict[str, Any]:
    """Commit and dirtiness of the git checkout that holds the ``probe`` package.

    ``dirty`` counts only changes to tracked files: run outputs and scratch files inside
    the tree would otherwise mark every run dirty. ``None`` fields mean "unknown".
    """
    if repo is None:
        repo = Path(__file__).resolve().parents[2]
    commit = _git(repo, "rev-parse", "HEAD")
    if not commit:
        return {"commit": None, "dirty": None}
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def cached_sha256(path: str | Path) -> str:
    """sha256 of a file, cached by (resolved path, size, mtime) for the life of the process."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = sha256_file(path)
    return _HASH_CACHE[key]


def file_record(path: str | Path) -> dict[str, Any]:
    """Path, size and sha256 of a file, or of every file under a directory.

    A directory (a Hugging Face model folder, a benchmark folder) gets one digest over its
    files' relative paths and hashes, so renaming or editing any of them changes it.
    """
    path = Path(path)
    if path.is_file():
        return {"path": str(path), "size": path.stat().st_size, "sha256": cached_sha256(path)}
    if not path.is_dir():
        raise DataError("cannot record provenance: file not found", str(path))
    digest = hashlib.sha256()
    size = 0
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        digest.update(f"{rel}\0{cached_sha256(file)}\n".encode())
        size += file.stat().st_size
    return {"path": str(path), "size": size, "sha256": digest.hexdigest(), "directory": True}


def provenance(extra_files: dict[str, Path] | None = None) -> dict[str, Any]:
    """Everything needed to tell how a run was produced; stored in ``run.json``.

    ``extra_files`` maps a role ("data", "model") to a file or directory whose sha256 is
    recorded, so a later reader can tell whether the inputs changed.
    """
    files = {name: file_record(p) for name, p in sorted((extra_files or {}).items())}
    return {
        "packages": package_versions(),
        "platform": platform_info(),
        "git": git_info(),
        "files": files,
    }
