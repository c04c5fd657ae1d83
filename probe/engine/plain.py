"""The un-bridged twin: the same weights without the bridge's wrappers, for hook-free passes.

The bridge wraps every Hugging Face module so that TransformerLens hooks can fire; with no
hook attached that wrapping is pure overhead (a Python call per hook point, a second norm
computation for ``hook_scale``, an Accelerate device check and an ``inspect.signature`` per
component call: 5-10 % of a CPU generation, see docs/benchmarks.md). :class:`Engine` therefore
runs a pass through the plain model whenever nothing would observe it:

- no hook is attached by the call, and
- no hook is attached anywhere else: no TransformerLens hook point has a forward hook (a
  permanent one, as :mod:`probe.engine.planted` adds, included) and no module of the bridged
  model has a PyTorch forward (pre-)hook.

The twin shares the bridged model's weight tensors (no copy: a 7B model costs no second
13 GB) and uses the engine's attention kernel. Its outputs equal the bridge's to float
rounding: greedy generations token for token, log-probs within 1e-5 (tests/test_plain.py).
"""

from __future__ import annotations

import copy
import weakref
from typing import Any

import torch

from probe.engine.models import LoadedModel

# One twin per (bridged model, attention kernel), shared by every engine over that model.
_TWINS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def plain_copy(loaded: LoadedModel, attn: str) -> Any:
    """An un-bridged Hugging Face model over ``loaded``'s weights (shared, not copied: the
    models only read them). Building it allocates the architecture once on the device before
    the shared tensors replace those weights: a transient second copy, freed on return."""
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    bridged = loaded.hf_model
    # The weights are replaced below: skip the (slow) random initialisation.
    with torch.device(loaded.device), no_init_weights():
        ref = AutoModelForCausalLM.from_config(copy.deepcopy(bridged.config),
                                               attn_implementation=attn, dtype=bridged.dtype)
    # The bridge wraps each module as `<name>._original_component`; strip that to get HF keys.
    state = {k.replace("._original_component", ""): v for k, v in bridged.state_dict().items()}
    missing = ref.load_state_dict(state, strict=False, assign=True).missing_keys
    if missing:
        raise RuntimeError(f"weights not found in the bridged model: {missing[:3]}")
    ref.generation_config = copy.deepcopy(bridged.generation_config)
    return ref.eval()


def twin(loaded: LoadedModel, attn: str) -> Any:
    """The cached plain twin of ``loaded`` with attention kernel ``attn``."""
    per_model = _TWINS.setdefault(loaded.hf_model, {})
    if attn not in per_model:
        per_model[attn] = plain_copy(loaded, attn)
    return per_model[attn]


# Hugging Face's output-capturing hooks (installed on a model's first call with
# output_hidden_states / output_attentions, and kept) record only while such a call runs.
_HF_RECORDERS = "transformers.utils.output_capturing"


def bridge_observed(loaded: LoadedModel) -> bool:
    """Whether any hook would see a pass through the bridged model: a forward hook on a
    TransformerLens hook point, a PyTorch forward (pre-)hook on any of its modules, or a
    global module hook. Two kinds of inert bookkeeping hooks do not count: the bridge's own
    (each block, on its first pass, registers pre-hooks that only remember the residual
    entering its norms, listed in the block's ``_capture_hook_handles``) and Hugging Face's
    output recorders (idle outside an ``output_hidden_states``/``output_attentions`` call)."""
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return True
    modules = list(loaded.bridge.modules())
    internal = {handle.id for mod in modules
                for handle in getattr(mod, "_capture_hook_handles", ())}

    def observing(hooks: dict[int, Any]) -> bool:
        return any(key not in internal and getattr(fn, "__module__", None) != _HF_RECORDERS
                   for key, fn in hooks.items())

    return any(observing(mod._forward_hooks) or observing(mod._forward_pre_hooks)
               for mod in modules)
