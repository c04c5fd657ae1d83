"""Downloading from a local HTTP server: verification, atomic writes, clear errors."""

from __future__ import annotations

import functools
import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from probe.data.download import FILES, SHA256, check, download, safe_target
from probe.errors import ConfigError, DataError
from tests.conftest_data import bbq_cells, shared_data_dir, write_jsonl


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture()
def serve(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A mirror folder and the URL of a server on 127.0.0.1 serving it."""
    root = tmp_path / "mirror"
    root.mkdir()
    handler = functools.partial(_Quiet, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _mirror_winogender(root: Path) -> None:
    shutil.copytree(shared_data_dir() / "winogender", root / "winogender")


def _mirror_bbq(root: Path) -> None:
    (root / "bbq").mkdir()
    for rel in FILES["bbq"]:
        if rel in SHA256:  # real copies verify by digest, the rest by parsing
            (root / rel).symlink_to(shared_data_dir() / rel)
        else:
            write_jsonl(root / rel, bbq_cells(Path(rel).stem, 1))


def test_download_verifies_and_is_idempotent(serve: tuple[Path, str], tmp_path: Path) -> None:
    root, url = serve
    _mirror_winogender(root)
    _mirror_bbq(root)
    dest = tmp_path / "data"
    report = download(dest, base_url=url)
    assert sorted(report.fetched) == sorted(FILES["bbq"] + FILES["winogender"])
    assert check(dest).present == report.fetched and not check(dest).missing
    again = download(dest, base_url=url)
    assert again.fetched == [] and len(again.present) == len(report.fetched)
    assert not list(dest.rglob("*.part"))


def test_tampered_file_rejected_and_not_kept(serve: tuple[Path, str], tmp_path: Path) -> None:
    root, url = serve
    _mirror_winogender(root)
    with (root / "winogender" / "templates.tsv").open("a") as handle:
        handle.write("nurse\tpatient\t0\tThe $OCCUPATION lied.\n")
    dest = tmp_path / "data"
    with pytest.raises(DataError, match=r"templates\.tsv: sha256 mismatch"):
        download(dest, base_url=url, only="winogender")
    assert not (dest / "winogender" / "templates.tsv").exists()
    assert (dest / "winogender" / "occupations-stats.tsv").is_file()
    assert not list(dest.rglob("*.part"))
    assert check(dest).missing == [*FILES["bbq"], "winogender/templates.tsv"]


def test_missing_file_on_server_is_reported(serve: tuple[Path, str], tmp_path: Path) -> None:
    root, url = serve
    (root / "winogender").mkdir()
    with pytest.raises(DataError, match="HTTP 404"):
        download(tmp_path / "data", base_url=url, only="winogender")


def test_unreachable_server_says_how_to_get_files(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DataError, match="cannot reach.*by hand"):
        download(tmp_path / "data", base_url=f"http://127.0.0.1:{port}", timeout=5)


def test_check_flags_corrupt_files(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "bbq" / "Age.jsonl", bbq_cells("Age", 1))  # valid, wrong digest
    write_jsonl(tmp_path / "bbq" / "SES.jsonl", ["{broken"])  # no digest known: parsed
    write_jsonl(tmp_path / "bbq" / "Race_x_SES.jsonl", bbq_cells("Race_x_SES", 1))
    report = check(tmp_path)
    assert report.corrupt == ["bbq/Age.jsonl", "bbq/SES.jsonl"]
    assert report.present == ["bbq/Race_x_SES.jsonl"] and not report.ok


@pytest.mark.parametrize("name", ["../evil.jsonl", "/etc/passwd", "bbq/../../x", ""])
def test_names_outside_data_dir_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError):
        safe_target(tmp_path, name)
