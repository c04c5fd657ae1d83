"""Model loading: local folders, device maps, names."""

from __future__ import annotations

import pytest
import torch

from probe.engine.inference import Engine
from probe.engine.models import load_model, resolve_device
from probe.errors import ConfigError, UnknownNameError


def test_local_folder_with_device_map_equals_plain_load(tmp_path):
    """A folder loads through accelerate's device_map and scores like a plain load."""
    from probe.testing import tiny_hf

    folder = tmp_path / "tiny"
    model, tokenizer = tiny_hf(seed=3)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    mapped = load_model(str(folder), device_map="auto")
    plain = load_model(str(folder))
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}],
                                              tokenize=False, add_generation_prompt=True)
    a = Engine(mapped).forward_last([text])[0]
    b = Engine(plain).forward_last([text])[0]
    torch.testing.assert_close(a, b)


def test_unknown_model_lists_valid_names():
    with pytest.raises(UnknownNameError, match="smollm2-135m"):
        load_model("no-such-model")


def test_cuda_without_gpu_is_refused():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda")
