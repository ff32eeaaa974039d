"""Loading the base components: the LLM (optionally 4/8-bit), the DINOv2 ViT and the CNN backbone.

Each loader takes a ``source`` (``"bundled"``, a local folder or a hub id; see
:mod:`earthgpt.model.sources`) and returns the component in eval mode.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from earthgpt.model.base_cache import transformers_progress
from earthgpt.model.sources import resolve_source

log = logging.getLogger(__name__)

QUANTIZATIONS = ("4bit", "8bit")


def load_llm(
    source: str,
    *,
    dtype: torch.dtype = torch.float32,
    quantization: str | None = None,
    keep_unquantized: Sequence[str] = (),
):
    """Causal LM and its tokenizer from ``source`` (``"bundled"``, a folder or a hub id).

    ``quantization`` is ``None``, ``"4bit"`` (NF4) or ``"8bit"`` (LLM.int8) through bitsandbytes;
    both run on CPU (slowly) and on CUDA. ``keep_unquantized`` names modules (matched as parts of
    the module path, e.g. ``q_proj``) that stay in ``dtype``; the LM head always does.
    Returns ``(model, tokenizer)``, the model in eval mode.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location = resolve_source(source, "llm")
    kwargs: dict = {"dtype": dtype}
    if quantization is not None:
        kwargs["quantization_config"] = _bnb_config(quantization, dtype, keep_unquantized)
        kwargs["device_map"] = {"": "cuda:0" if torch.cuda.is_available() else "cpu"}
    with transformers_progress(False):  # a local load takes ~1 s: no per-tensor bars
        model = AutoModelForCausalLM.from_pretrained(location, **kwargs).eval()
        tokenizer = AutoTokenizer.from_pretrained(location)
    if not tokenizer.chat_template:
        log.warning("the tokenizer from %s has no chat template; conversations need one", source)
    return model, tokenizer


def _bnb_config(quantization: str, dtype: torch.dtype, keep_unquantized: Sequence[str] = ()):
    from transformers import BitsAndBytesConfig
    from transformers.utils import is_bitsandbytes_available

    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS} or None, got {quantization!r}")
    if not is_bitsandbytes_available():
        raise ImportError(f"{quantization} loading needs bitsandbytes: pip install bitsandbytes")
    skip = ["lm_head", *keep_unquantized] if keep_unquantized else None  # None: transformers' default
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
        llm_int8_skip_modules=skip,
    )


def load_vit(source: str, *, dtype: torch.dtype = torch.float32):
    """A ``transformers.Dinov2Model`` from ``source`` (``"bundled"``, a folder or a hub id), eval mode."""
    from transformers import Dinov2Model

    location = resolve_source(source, "vit")
    with transformers_progress(False):  # a local load takes ~1 s: no per-tensor bars
        return Dinov2Model.from_pretrained(location, dtype=dtype).eval()


def _load_efficientnet_lite0(source: str) -> torch.nn.Module:
    from efficientnet_lite_pytorch import EfficientNet
    from safetensors.torch import load_file

    folder = Path(resolve_source(source, "cnn"))
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"efficientnet-lite0 folder {folder} has no model.safetensors")
    config_path = folder / "config.json"
    declared = json.loads(config_path.read_text()).get("architecture") if config_path.is_file() else None
    if declared not in (None, "efficientnet-lite0"):
        raise ValueError(f"{config_path} declares architecture {declared!r}; expected 'efficientnet-lite0'")
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(load_file(weights), strict=True)
    return model.eval()


def _load_convnext(source: str) -> torch.nn.Module:
    from transformers import ConvNextModel

    location = resolve_source(source, "cnn")
    with transformers_progress(False):  # a local load takes ~1 s: no per-tensor bars
        return ConvNextModel.from_pretrained(location).eval()


CNN_LOADERS: dict[str, Callable[[str], torch.nn.Module]] = {
    "efficientnet-lite0": _load_efficientnet_lite0,
    "convnext": _load_convnext,
}


def load_cnn(arch: str, source: str) -> torch.nn.Module:
    """The CNN backbone ``arch`` (see ``CNN_LOADERS``) from ``source``, float32, eval mode."""
    if arch not in CNN_LOADERS:
        raise ValueError(f"unknown CNN arch {arch!r}; known: {', '.join(CNN_LOADERS)}")
    return CNN_LOADERS[arch](source)


def assign_weights(module: torch.nn.Module, path: str | Path, *, cast: bool = False) -> None:
    """Give ``module`` (built empty: ``EarthGPT.from_config(..., empty=True)``) every tensor of the
    safetensors file ``path``, in the file's dtype. The file's tensors become the parameters
    themselves (memory-mapped, copied on write), so loading takes no second copy of the weights.
    With ``cast``, a floating tensor stored in another dtype than the module's (meta) tensor of that
    name is cast to it (a copy of that tensor only). Tied tensors (saved once under one of their
    names) stay tied. Raises ValueError naming what is missing, unexpected or of another shape."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    targets = module.state_dict(keep_vars=True)  # a tied tensor appears under each of its names
    first_name: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for name, tensor in targets.items():
        aliases.update({name: first_name[id(tensor)]} if id(tensor) in first_name else {})
        first_name.setdefault(id(tensor), name)
    for alias, first in aliases.items():  # the file holds a tied tensor under any one of its names
        if alias in state:
            state.setdefault(first, state.pop(alias))
    needed = [name for name in targets if name not in aliases]
    missing = [name for name in needed if name not in state]
    unexpected = [name for name in state if name not in targets]
    reshaped = [name for name in needed if name in state and state[name].shape != targets[name].shape]
    if missing or unexpected or reshaped:
        raise ValueError(
            f"{Path(path).name} does not fit the model: missing {missing[:3]} ({len(missing)}), "
            f"unexpected {unexpected[:3]} ({len(unexpected)}), other shapes {reshaped[:3]} ({len(reshaped)})"
        )
    if cast:
        for name, tensor in state.items():
            wanted = targets[name].dtype
            if tensor.is_floating_point() and wanted.is_floating_point and tensor.dtype != wanted:
                state[name] = tensor.to(wanted)
    module.load_state_dict(state, strict=False, assign=True)
    for alias, first in aliases.items():
        owner, _, attr = alias.rpartition(".")
        first_owner, _, first_attr = first.rpartition(".")
        setattr(module.get_submodule(owner), attr, getattr(module.get_submodule(first_owner), first_attr))
