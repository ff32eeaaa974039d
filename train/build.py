"""Assemble what a run needs from its config: the model at its stage, the tokenizer, the records.

- Stage 1 builds the preset (pretrained base or random at the preset's sizes) and applies
  ``tuning.apply_stage(model, 1)``.
- Stage 2 loads the export named by ``model.init_from`` with
  ``earthgpt.model.checkpoint.load_pretrained`` (which checks the base weights' identity) after
  checking that the export was made on the base this config names; a mismatch is refused with the
  differences listed. Then ``apply_stage(model, 2)``. The export is stage 1's, or a stage-2 export
  that this run continues: its scale and shift vectors then go on training from their values.
- The tokenizer is the pretrained LLM's, a folder or hub id, or ``byte-level``: a ChatML byte-level
  BPE without merges, for random-weight runs (tests, benchmarks) that have no tokenizer of their own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from earthgpt.config import EarthGPTConfig, get_preset
from earthgpt.config_dicts import merge_dicts
from earthgpt.conversation import IMAGE_PLACEHOLDER
from earthgpt.model.earthgpt import EarthGPT
from earthgpt.model.projector import add_global_context, add_grid_position
from earthgpt.model.tuning import apply_stage
from train.config import TrainConfig

BYTE_LEVEL = "byte-level"
CHATML = (
    "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\n'}}{% endif %}"
)
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def byte_level_tokenizer() -> Any:
    """A byte-level BPE (256 byte tokens, no merges) with ChatML specials, ``<image>`` and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=256 + 3,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([], trainer=trainer)
    out = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    out.chat_template = CHATML
    out.add_special_tokens({"extra_special_tokens": [IMAGE_PLACEHOLDER]})
    return out


def load_tokenizer(spec: str | None, model: EarthGPT) -> Any:
    """The tokenizer ``spec`` names (module doc); None means the model's own."""
    if spec is None:
        if model.tokenizer is None:
            raise ValueError(
                "the model has no tokenizer (random weights); set model.tokenizer to a folder, a hub id "
                f"or {BYTE_LEVEL!r}"
            )
        return model.tokenizer
    if spec == BYTE_LEVEL:
        return byte_level_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(spec)


def model_config(cfg: TrainConfig) -> EarthGPTConfig:
    """The preset named by ``model.preset`` with ``model.config`` overrides (nested, checked)."""
    base = get_preset(cfg.model.preset).to_dict()
    merged = merge_dicts(base, cfg.model.config, where="model.config", strict=True)
    return EarthGPTConfig.from_dict(merged)


def check_stage2_base(cfg: TrainConfig, folder: Path) -> None:
    """Refuse an export that was not made on the base ``cfg`` names, or by no stage that stage 2
    can start from (stage 1's export, or stage 2's to continue it)."""
    from earthgpt.model.checkpoint import read_meta

    meta = read_meta(folder)
    if meta.get("stage") not in (1, 2):
        raise ValueError(
            f"stage 2 starts from a stage-1 export (or continues a stage-2 one); {folder} is stage "
            f"{meta.get('stage')}"
        )
    # Choices of stage 2, not of the base it starts from. The visual token grid is one: the projector
    # maps each token on its own, so no weight's shape depends on it (a finer grid for box tasks).
    # The low-rank adapters are another (added at zero to an export without them; build_model
    # refuses to change or drop an export's own).
    stage2_only = (
        "name", "stage2_tunes_stage1", "num_visual_tokens", "stage2_lora_rank", "stage2_lora_modules",
    )
    expected = {k: v for k, v in model_config(cfg).to_dict().items() if k not in stage2_only}
    # through the config class, so that fields newer than the export read as their defaults
    exported = EarthGPTConfig.from_dict(meta["config"]).to_dict()
    found = {k: v for k, v in exported.items() if k not in stage2_only}
    diffs = [
        f"model config differs at {path}: export {a!r}, this run {b!r}"
        for path, a, b in _diff(found, expected)
        if not _adds_projector_part(path, a)
    ]
    if bool(meta.get("pretrained_base")) != cfg.model.pretrained:
        diffs.append(
            f"pretrained base: export {meta.get('pretrained_base')}, this run {cfg.model.pretrained}"
        )
    if not cfg.model.pretrained and meta.get("seed") != cfg.model.seed:
        diffs.append(f"random base seed: export {meta.get('seed')}, this run {cfg.model.seed}")
    if diffs:
        raise ValueError(f"refusing stage 2: {folder} was trained on another base: " + "; ".join(diffs))


def _adds_projector_part(path: str, export: Any) -> bool:
    """Whether a config difference is stage 2 adding the 2-D position signal or the global context
    to a projector that has none (each starts at zero, so the export's projector is continued
    unchanged)."""
    return path in ("projector.position", "projector.context") and export == "none"


def _diff(a: Any, b: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _diff(a.get(key), b.get(key), f"{path}.{key}" if path else key)
        return out
    return [] if a == b else [(path, a, b)]


def build_model(cfg: TrainConfig, *, empty: bool = False) -> EarthGPT:
    """The model with the trainable parameters of ``cfg.stage`` unfrozen, those kept in float32.

    ``empty`` is for a process that receives every weight from the main one (FSDP2's
    ``cpu_ram_efficient_loading``): a random base is then built on the meta device (no parameter
    allocated, buffers real) with the names, shapes and dtypes of the main process's model. A
    pretrained base builds as on the main process (transformers itself leaves the LLM on the meta
    device off each node's first process under that option)."""
    dtype = TORCH_DTYPES[cfg.model.dtype]
    empty = empty and not cfg.model.pretrained
    if cfg.stage == 1:
        model = EarthGPT.from_config(
            model_config(cfg), pretrained=cfg.model.pretrained, seed=cfg.model.seed, dtype=dtype,
            empty=empty,
        )
    else:
        from earthgpt.model.checkpoint import load_pretrained

        folder = Path(cfg.model.init_from or "")
        check_stage2_base(cfg, folder)
        # either way with the export's tokenizer, when it has one
        model = _empty_stage1_export(folder) if empty else load_pretrained(folder, dtype=dtype)
        wanted = model_config(cfg)
        model.config.stage2_tunes_stage1 = wanted.stage2_tunes_stage1
        if wanted.num_visual_tokens != model.config.num_visual_tokens:  # stage 2's own token grid
            model.config.num_visual_tokens = wanted.num_visual_tokens
            model.vision.grid = model.config.grid_size
        _take_low_rank(model, wanted, folder)
        # checked by check_stage2_base: only from none
        add_projector_modules(model, wanted.projector.position, wanted.projector.context)
    apply_stage(model, cfg.stage)
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    _set_attention(model, cfg.model.attn_implementation)
    return model


def add_projector_modules(model: EarthGPT, position: str, context: str) -> None:
    """Give ``model``'s projector the position signal and global context asked for where its own
    differ (from ``none``): both start at zero, so the model computes what it did until they train.
    Position first, then context, so that parameter names match a model built with both."""
    if position != model.config.projector.position:
        model.projector = add_grid_position(model.projector, model.config.llm.hidden_size)
        model.config.projector.position = position
    if context != model.config.projector.context:
        model.projector = add_global_context(
            model.projector, model.vision.out_channels, model.config.llm.hidden_size
        )
        model.config.projector.context = context


def _take_low_rank(model: EarthGPT, wanted: EarthGPTConfig, folder: Path) -> None:
    """Give stage 2 the low-rank adapters ``wanted`` asks for: added (at zero) to an export that has
    none; an export's own adapters are continued as they are, never resized or dropped."""
    have = (model.config.stage2_lora_rank, list(model.config.stage2_lora_modules))
    want = (wanted.stage2_lora_rank, list(wanted.stage2_lora_modules))
    if have == want or wanted.stage2_lora_rank == have[0] == 0:
        return
    if have[0]:
        raise ValueError(
            f"refusing stage 2: {folder} has rank-{have[0]} adapters on {have[1]}; this run asks for "
            f"rank {want[0]} on {want[1]} (continue with the export's, or start from an export without)"
        )
    model.config.stage2_lora_rank, model.config.stage2_lora_modules = want


def _empty_stage1_export(folder: Path) -> EarthGPT:
    """What ``load_pretrained`` gives for a stage-1 delta on a random base, on the meta device:
    its base's architecture in the base's dtype, and the export's tokenizer."""
    from earthgpt.model.checkpoint import TOKENIZER_DIR, read_meta

    meta = read_meta(folder)
    dtype = getattr(torch, str(meta["dtype"]).removeprefix("torch."))
    config = EarthGPTConfig.from_dict(meta["config"])
    model = EarthGPT.from_config(config, pretrained=False, seed=meta["seed"], dtype=dtype, empty=True)
    model.stage = meta["stage"]
    if (folder / TOKENIZER_DIR).is_dir():
        from transformers import AutoTokenizer

        model.tokenizer = AutoTokenizer.from_pretrained(str(folder / TOKENIZER_DIR))
    return model


def _set_attention(model: EarthGPT, implementation: str) -> None:
    """Select the LLM's attention kernel (``sdpa``, ``eager``, ``flash_attention_2``)."""
    setter = getattr(model.llm, "set_attn_implementation", None)
    if setter is not None:
        setter(implementation)
    else:
        model.llm.config._attn_implementation = implementation


def describe(model: EarthGPT) -> str:
    """A one-line parameter summary by group (trainable / total)."""
    from earthgpt.model.tuning import parameter_report

    report = parameter_report(model)
    parts = [f"{g} {r['trainable']:,}/{r['total']:,}" for g, r in report.items() if r["total"] and g != "all"]
    return f"trainable {report['all']['trainable']:,} of {report['all']['total']:,} ({'; '.join(parts)})"


def save_json(path: Path, data: Any) -> None:
    """Write indented JSON."""
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
