"""Saving and loading EarthGPT: delta checkpoints on top of a known base, or full ones.

A checkpoint folder holds ``config.json`` and ``model.safetensors``.

- **delta** (default): only what training changed: the projector, and by stage the LLM's
  attention and norm tensors (stage 1 and later) and the scale/shift vectors and low-rank
  adapters, if any (stage 2). The
  config records the identity of the base components (their names and weight hashes; for a random
  base the hash of its tensors and the seed that made it). Loading rebuilds that base, checks the
  identity, and loads the delta strictly: every expected tensor present, nothing unexpected.
- **full**: every parameter and buffer; loading builds the architecture from the config on the
  meta device (no memory, no initialisation, no download) and makes the file's tensors the
  parameters themselves (``loaders.assign_weights``: memory-mapped, strict), so a reload holds one
  copy of the weights. For a random base the config also records its identity, which a delta saved
  from the reloaded model names.

The tokenizer, when the model has one, is saved beside the weights in ``tokenizer/`` (a delta's
only when its base is random: a pretrained base brings its own), and loading takes it from there
first, so a delta trained on a random base with a tokenizer of its own (``byte-level``) chats.

Scale/shift must be unmerged (``tuning.unmerge_scale_shift``) before saving, so that a checkpoint
always holds the base weights and the vectors apart.

Each file is written under a temporary name and renamed into place (``config.json`` last), and the
config records the sha256 of ``model.safetensors`` (``weights_sha256``): loading refuses a weights
file that is not the one saved (a flipped byte, a cut or swapped file), naming it. A config without
the field (saved before it was recorded) loads unchecked; a base whose weight files differ from the
identity a delta records is refused naming the files.

What a model name means (:func:`resolve_model`): a checkpoint folder; else a name in ``SHIPPED``
whose trained weights are in the repository's ``assets/`` (``nano``); else a preset name (its
untrained start); else a hub id ``owner/name`` of a checkpoint folder, fetched with
``huggingface_hub`` (only when the user has a hub; offline it fails with a clear message).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file, save_model

from earthgpt.config import PRESETS, EarthGPTConfig, get_preset
from earthgpt.identity import combine_base_identity, file_sha256, verify_identity
from earthgpt.model.earthgpt import EarthGPT
from earthgpt.model.tuning import (
    inject_low_rank,
    inject_scale_shift,
    parameter_groups,
    scale_shift_layers,
    stage1_attention_names,
)

FORMAT = "earthgpt-checkpoint"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_SHA256 = "weights_sha256"
"""The config key holding the sha256 of ``model.safetensors``."""
TOKENIZER_DIR = "tokenizer"
STAGE_GROUPS = {0: ("projector",), 1: ("projector", "llm_attention", "llm_norms")}
STAGE_GROUPS[2] = (*STAGE_GROUPS[1], "scale_shift", "lora")
_DTYPES = {str(d): d for d in (torch.float32, torch.float16, torch.bfloat16)}


def model_base_identity(model: EarthGPT) -> dict:
    """The identity of the model's base components: taken when a random base was built, else
    hashed from the weight files its sources name (once; see ``identity.combine_base_identity``)."""
    if model.base_identity is None:
        from earthgpt.model.sources import source_identity

        cfg = model.config
        sources = {"llm": cfg.llm.source, "vit": cfg.vit.source, "cnn": cfg.cnn.source}
        model.base_identity = combine_base_identity(
            {role: source_identity(role, source) for role, source in sources.items()}
        )
    return model.base_identity


def delta_state(model: EarthGPT) -> dict[str, torch.Tensor]:
    """The tensors a delta checkpoint of ``model`` holds, by parameter name."""
    groups = parameter_groups(model)
    trained_attention = stage1_attention_names(model)
    return {
        name: p.detach()
        for g in STAGE_GROUPS[model.stage]
        for name, p in groups[g]
        if g != "llm_attention" or name in trained_attention
    }


def save_pretrained(
    model: EarthGPT, folder: str | Path, *, delta: bool = True, dtype: torch.dtype | None = None
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (a delta or a full checkpoint) into ``folder``.

    ``dtype`` (delta only) stores the tensors in another float type, e.g. ``torch.bfloat16`` to
    halve the file; loading casts them back to the model's dtype.
    """
    if any(layer.merged for layer in scale_shift_layers(model.llm)):
        raise ValueError("scale/shift layers are merged; call tuning.unmerge_scale_shift before saving")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "format": FORMAT, "version": FORMAT_VERSION, "kind": "delta" if delta else "full",
        "stage": model.stage, "pretrained_base": model.pretrained_base, "seed": model.seed,
        "dtype": str(model.dtype), "config": model.config.to_dict(),
    }
    if delta or not model.pretrained_base:
        meta["base"] = model_base_identity(model)
    if delta:
        tensors = {name: t.contiguous() for name, t in delta_state(model).items()}
        _refuse_quantized(tensors)
        if dtype is not None:
            tensors = {name: t.to(dtype) for name, t in tensors.items()}
        _write_whole(folder / WEIGHTS_FILE, lambda p: save_file(tensors, str(p), metadata={"format": FORMAT}))
    else:
        if dtype is not None:
            raise ValueError("dtype applies to delta checkpoints; cast the model itself for a full one")
        _refuse_quantized(dict(model.state_dict()))
        _write_whole(folder / WEIGHTS_FILE, lambda p: save_model(model, str(p), metadata={"format": FORMAT}))
    if model.tokenizer is not None and not (delta and model.pretrained_base):
        model.tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))
    meta[WEIGHTS_SHA256] = file_sha256(folder / WEIGHTS_FILE)
    _write_whole(folder / CONFIG_FILE, lambda p: p.write_text(json.dumps(meta, indent=2) + "\n"))
    return folder


def _write_whole(path: Path, write: Callable[[Path], None]) -> None:
    """``write`` a temporary file beside ``path``, then rename it to ``path``: a process killed or a
    full disk leaves the previous file (or none), never a half-written one; the temporary goes."""
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        write(part)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


def verify_weights(folder: Path, meta: dict[str, Any]) -> None:
    """ValueError naming ``model.safetensors`` when its sha256 is not the one its ``config.json``
    records (a flipped byte, a cut or swapped file). A config without ``weights_sha256`` (saved
    before it was recorded) is accepted unchecked."""
    expected = meta.get(WEIGHTS_SHA256)
    if expected is None:
        return
    actual = file_sha256(folder / WEIGHTS_FILE)
    if actual != expected:
        raise ValueError(
            f"{folder / WEIGHTS_FILE} is damaged: its sha256 {actual[:12]}… is not the {expected[:12]}… "
            f"recorded in {CONFIG_FILE} when it was saved; export or download the checkpoint again"
        )


def _refuse_quantized(tensors: dict[str, torch.Tensor]) -> None:
    packed = [name for name, t in tensors.items() if not t.is_floating_point()]
    if packed:
        raise ValueError(
            f"cannot save quantized tensors ({packed[0]} and {len(packed) - 1} more): "
            "train and save with the LLM unquantized"
        )


SHIPPED: dict[str, Path] = {
    "nano": Path(__file__).resolve().parents[2] / "assets" / "earthgpt-nano",
}
"""Models whose trained weights ship in the repository's ``assets/`` (a delta checkpoint folder)."""


def resolve_model(name_or_path: str | Path) -> Path | str:
    """The checkpoint folder ``name_or_path`` stands for, or the preset name when it names the
    untrained start of a preset (see the module doc for the order)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    name = str(name_or_path)
    shipped = SHIPPED.get(name)
    if shipped is not None and (shipped / CONFIG_FILE).is_file():
        return shipped
    if name in PRESETS:
        return name
    from earthgpt.model.sources import resolve_source

    try:
        return Path(resolve_source(name, "checkpoint"))
    except (FileNotFoundError, ConnectionError) as error:
        raise FileNotFoundError(
            f"{name!r} is neither a checkpoint folder, a preset ({', '.join(PRESETS)}) nor a reachable "
            f"hub id: {error}"
        ) from error


def load_pretrained(
    folder_or_preset: str | Path,
    *,
    load_4bit: bool = False,
    load_8bit: bool = False,
    dtype: torch.dtype | None = None,
) -> EarthGPT:
    """An EarthGPT from a checkpoint folder, a shipped model, a hub id, or a preset name (its
    untrained start: the preset's base components with a fresh projector); see
    :func:`resolve_model`. Returns the model frozen, in eval mode."""
    resolved = resolve_model(folder_or_preset)
    if isinstance(resolved, str):
        config = get_preset(resolved)
        pretrained = config.llm.source is not None
        return EarthGPT.from_config(
            config, pretrained=pretrained, load_4bit=load_4bit, load_8bit=load_8bit,
            dtype=dtype or torch.float32,
        )
    path = resolved
    meta = read_meta(path)
    verify_weights(path, meta)
    if meta["kind"] == "full":
        if load_4bit or load_8bit:
            raise ValueError(
                "a full checkpoint loads unquantized; quantize a delta checkpoint's base instead"
            )
        return _load_full(path, meta, dtype)
    return _load_delta(path, meta, load_4bit=load_4bit, load_8bit=load_8bit, dtype=dtype)


def read_meta(folder: Path) -> dict[str, Any]:
    """The checkpoint's ``config.json``, checked for format and version."""
    config_path = folder / CONFIG_FILE
    if not config_path.is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(
            f"{folder} is not an EarthGPT checkpoint: expected {CONFIG_FILE} and {WEIGHTS_FILE}"
        )
    meta = json.loads(config_path.read_text())
    found = (meta.get("format"), meta.get("version"))
    if found != (FORMAT, FORMAT_VERSION):
        raise ValueError(f"{config_path}: expected format {FORMAT!r} version {FORMAT_VERSION}, found {found}")
    return meta


def _base_from_meta(meta: dict[str, Any], dtype: torch.dtype | None, **quantization: bool) -> EarthGPT:
    config = EarthGPTConfig.from_dict(meta["config"])
    pretrained = meta["pretrained_base"]
    if not pretrained:
        dtype = _DTYPES[meta["dtype"]]  # a random base is only the same base in the same dtype
    # The attention projections a stage-1 delta replaces stay unquantized, so it can load on top.
    keep = config.stage1_attention if meta["stage"] >= 1 and any(quantization.values()) else ()
    model = EarthGPT.from_config(
        config, pretrained=pretrained, seed=meta["seed"], dtype=dtype or torch.float32,
        keep_unquantized=keep, **quantization,
    )
    if meta["stage"] >= 2:
        inject_scale_shift(model.llm)
        inject_low_rank(model)
    model.stage = meta["stage"]
    return model


def _differing_base_files(model: EarthGPT, expected: dict[str, Any]) -> list[str]:
    """The base's weight files (paths) whose sha256 is not the one ``expected`` (a delta's recorded
    base identity) lists; none for a random base, whose identity names no files."""
    from earthgpt.model.sources import resolve_source

    actual = model_base_identity(model).get("components", {})
    differ = []
    for role, component in sorted(expected.get("components", {}).items()):
        found = actual.get(role, {}).get("files", {})
        for name, sha256 in sorted(component.get("files", {}).items()):
            if found.get(name) != sha256:
                source = getattr(model.config, role).source
                differ.append(str(Path(resolve_source(source, role)) / name) if source else f"{role}/{name}")
    return differ


def _load_delta(path: Path, meta: dict[str, Any], *, load_4bit: bool, load_8bit: bool, dtype) -> EarthGPT:
    model = _base_from_meta(meta, dtype, load_4bit=load_4bit, load_8bit=load_8bit)
    try:
        verify_identity(meta["base"], model_base_identity(model))
    except ValueError as err:
        files = _differing_base_files(model, meta["base"])
        named = f"; weight files that differ: {', '.join(files)}" if files else ""
        raise ValueError(f"checkpoint {path} was trained on another base: {err}{named}") from err
    saved = load_file(str(path / WEIGHTS_FILE))
    params = dict(delta_state(model))
    missing, unexpected = sorted(set(params) - set(saved)), sorted(set(saved) - set(params))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {path} does not fit the model: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)})"
        )
    named = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in saved.items():
            target = named[name]
            if not target.is_floating_point():
                raise ValueError(
                    f"checkpoint {path} changes {name}, which is quantized in this model; "
                    "load it without load_4bit/load_8bit"
                )
            if target.shape != tensor.shape:
                raise ValueError(
                    f"{name}: checkpoint shape {tuple(tensor.shape)}, model {tuple(target.shape)}"
                )
            target.copy_(tensor.to(target.dtype))
    _take_tokenizer(model, path)
    return model.eval()


def _take_tokenizer(model: EarthGPT, path: Path) -> None:
    """Give ``model`` the tokenizer saved in ``path/tokenizer`` (the one it was trained with), if any."""
    if (path / TOKENIZER_DIR).is_dir():
        from transformers import AutoTokenizer

        model.tokenizer = AutoTokenizer.from_pretrained(str(path / TOKENIZER_DIR))


def _load_full(path: Path, meta: dict[str, Any], dtype: torch.dtype | None) -> EarthGPT:
    """The architecture built empty (meta device), the file's tensors assigned to it in their
    dtype (a tensor saved in another dtype than the config's is cast: float32 trainables beside
    bf16 weights), then cast to ``dtype`` when given."""
    from earthgpt.model.loaders import assign_weights

    config = EarthGPTConfig.from_dict(meta["config"])
    seed, saved_dtype = meta["seed"], _DTYPES[meta["dtype"]]
    model = EarthGPT.from_config(config, pretrained=False, seed=seed, dtype=saved_dtype, empty=True)
    if meta["stage"] >= 2:
        inject_scale_shift(model.llm)
        inject_low_rank(model)
    model.stage = meta["stage"]
    try:
        assign_weights(model, path / WEIGHTS_FILE, cast=True)
    except ValueError as error:
        raise ValueError(f"checkpoint {path} does not fit the model: {error}") from error
    model.pretrained_base = meta["pretrained_base"]
    if not model.pretrained_base:  # the recorded identity; one saved before it was recorded rebuilds it
        model.base_identity = meta.get("base") or EarthGPT.from_config(
            config, pretrained=False, seed=seed, dtype=saved_dtype
        ).base_identity
    _take_tokenizer(model, path)
    if dtype is not None:
        model.to(dtype)
        model.dtype = dtype
    return model.requires_grad_(False).eval()
