"""Nothing in probe/ runs code hidden in a file it loads, and downloads stay in the data dir.

The source scan works on the syntax tree, not on text, so comments and docstrings that
mention ``pickle`` do not count, and ``torch.load(path, weights_only=False)`` does.
tests/test_download.py covers refused file names and verification; here: a symlink that
leads out of the data dir, and a whole download writing nothing outside it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "shelve", "marshal"}


def _call_name(node: ast.Call) -> str:
    """Dotted name of the called function ("torch.load", "eval"), or ""."""
    parts, func = [], node.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    # A method of a call's result (``model.to(x).eval()``) is no builtin: mark the root.
    parts.append(func.id if isinstance(func, ast.Name) else "<expr>")
    return ".".join(reversed(parts))


def _kw_true(node: ast.Call, name: str) -> bool | None:
    """True/False if keyword ``name`` is a literal bool, None if absent or not a literal."""
    for kw in node.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return bool(kw.value.value)
    return None


def unsafe_uses(source: str) -> list[str]:
    """Unsafe loading constructs in ``source``, as "line: what" strings."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                node.module or ""]
            found += [f"{node.lineno}: import {n}" for n in names
                      if n.split(".")[0] in UNSAFE_MODULES]
        if not isinstance(node, ast.Call):
            continue
        name = _call_name(node)
        if name.endswith("torch.load") and _kw_true(node, "weights_only") is not True:
            found.append(f"{node.lineno}: {name} without weights_only=True")
        if name.endswith(("np.load", "numpy.load")) and _kw_true(node, "allow_pickle"):
            found.append(f"{node.lineno}: {name} with allow_pickle=True")
        if _kw_true(node, "trust_remote_code"):
            found.append(f"{node.lineno}: trust_remote_code=True")
        if name in ("eval", "exec"):
            found.append(f"{node.lineno}: {name}()")
    return found


@pytest.mark.parametrize("snippet", [
    "import pickle", "from joblib import load", "import torch\ntorch.load(p)",
    "torch.load(p, weights_only=False)", "m.from_pretrained(x, trust_remote_code=True)",
    "np.load(p, allow_pickle=True)", "eval(s)",
])
def test_scanner_catches_unsafe_code(snippet: str) -> None:
    assert unsafe_uses(snippet)


def test_scanner_allows_safe_code() -> None:
    safe = ("torch.load(p, weights_only=True)\nnp.load(p)\n"
            "m.from_pretrained(x, trust_remote_code=flag)\nmodel.eval()\nm.to(d).eval()\n"
            "# import pickle\n")
    assert unsafe_uses(safe) == []


def test_probe_sources_load_nothing_unsafely() -> None:
    files = sorted((REPO / "probe").rglob("*.py"))
    assert len(files) > 10
    problems = [f"{p.relative_to(REPO)}:{u}" for p in files
                for u in unsafe_uses(p.read_text(encoding="utf-8"))]
    assert problems == []


def test_remote_code_is_off_unless_asked() -> None:
    from probe.commands.run import run_cmd
    from probe.config import RunConfig

    assert RunConfig().trust_remote_code is False
    assert run_cmd.make_context("run", []).params["trust_remote_code"] is False


def test_symlink_out_of_the_data_dir_is_refused(tmp_path: Path) -> None:
    from probe.data.download import safe_target
    from probe.errors import ConfigError

    outside = tmp_path / "outside"
    outside.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    (data / "bbq").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ConfigError, match="outside the data dir"):
        safe_target(data, "bbq/Age.jsonl")


def test_download_writes_only_inside_the_data_dir(tmp_path: Path) -> None:
    import functools
    import shutil
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from probe.data.download import download
    from tests.conftest_data import shared_data_dir

    mirror = tmp_path / "mirror"
    shutil.copytree(shared_data_dir() / "winogender", mirror / "winogender")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(mirror))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    before = {p for p in tmp_path.rglob("*")}
    try:
        download(tmp_path / "data", base_url=f"http://127.0.0.1:{server.server_address[1]}",
                 only="winogender")
    finally:
        server.shutdown()
        server.server_close()
    new = {p for p in tmp_path.rglob("*")} - before
    data = (tmp_path / "data").resolve()
    assert new and all(p.resolve().is_relative_to(data) or p.resolve() == data for p in new)
    assert len([p for p in new if p.is_file()]) == 3


# -- model weights stored as pickles ---------------------------------------------------------
class _Evil:
    """Unpickling this runs a shell command (the attack a pickle checkpoint can carry)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple:
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def pickled_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny model folders with only pytorch_model.bin: real weights, and a trap."""
    import torch

    from probe.testing import tiny_hf

    root = tmp_path_factory.mktemp("models")
    model, tokenizer = tiny_hf(seed=3)
    out = {}
    for name in ("good", "evil"):
        out[name] = root / name
        model.config.save_pretrained(out[name])
        tokenizer.save_pretrained(out[name])
    torch.save(model.state_dict(), out["good"] / "pytorch_model.bin")
    out["marker"] = root / "PWNED"
    torch.save({"model.embed_tokens.weight": _Evil(out["marker"])},
               out["evil"] / "pytorch_model.bin")
    return out


def test_pickle_weights_refused_unless_allowed(pickled_models: dict[str, Path],
                                               tmp_path: Path) -> None:
    import torch
    from click.testing import CliRunner

    from probe.cli import cli
    from probe.engine.models import load_model
    from probe.errors import ConfigError

    with pytest.raises(ConfigError, match=r"only pickle weights \(pytorch_model\.bin\).*"
                                          r"--allow-pickle"):
        load_model(str(pickled_models["good"]))
    result = CliRunner().invoke(cli, ["run", "--model", str(pickled_models["good"]),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "pickle" in result.stderr and not (tmp_path / "out").exists()
    loaded = load_model(str(pickled_models["good"]), allow_pickle=True)
    saved = torch.load(pickled_models["good"] / "pytorch_model.bin", weights_only=True)
    # The bridge renames modules; the embedding (random, seed 3) identifies the weights.
    emb = loaded.hf_model.get_input_embeddings().weight
    assert torch.equal(emb, saved["model.embed_tokens.weight"])


def test_malicious_pickle_is_one_line_and_never_runs(pickled_models: dict[str, Path]) -> None:
    from probe.engine.models import load_model
    from probe.errors import ConfigError, ProbeError

    with pytest.raises(ConfigError, match="only pickle weights"):
        load_model(str(pickled_models["evil"]))
    with pytest.raises(ProbeError, match="objects other than tensors"):
        load_model(str(pickled_models["evil"]), allow_pickle=True)
    assert not pickled_models["marker"].exists()
