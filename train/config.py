"""The typed training configuration: one YAML per stage and recipe, plus ``key=value`` overrides.

A YAML file holds the four sections of :class:`TrainConfig` (``model``, ``data``, ``optim``,
``run``) and ``stage``. Overrides on the command line use dotted keys (``optim.lr=1e-4``,
``run.output_dir=runs/a``, ``data.sources=[mmrs=data/train.jsonl]``); each value is parsed as YAML
and checked against the field's type, so ``optim.lr=fast`` or ``optim.lrr=1`` fail with a message
naming the key, the expected type and the known keys.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from earthgpt.config_dicts import dataclass_from_dict, merge_dicts

MIXED_PRECISIONS = ("no", "fp16", "bf16")
DTYPES = ("float32", "bfloat16", "float16")
# Fields whose value is a mapping (not a section): an override replaces them whole.
VALUE_MAPPINGS = ("image_roots", "config", "task_repeats")


@dataclass
class ModelSection:
    """Which model to train.

    ``preset`` names an ``earthgpt.config`` preset; ``pretrained`` loads its base components (else
    random weights at the preset's sizes, drawn from ``seed``). ``init_from`` is a stage-1 export
    folder (``<output_dir>/final``) that stage 2 starts from, or a stage-2 export it continues.
    ``tokenizer`` is a folder or hub id; ``None`` means the pretrained LLM's own tokenizer,
    ``byte-level`` a byte-level BPE for random weights. ``config`` overrides fields of the preset's
    ``EarthGPTConfig`` (nested, e.g. ``{image_token_id: 259}``). ``dtype`` is the storage type of
    the frozen weights; trainable parameters are always kept in float32.
    """

    preset: str = "tiny"
    pretrained: bool = False
    seed: int = 0
    init_from: str | None = None
    tokenizer: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"
    attn_implementation: str = "sdpa"


@dataclass
class DataSection:
    """What to train on.

    ``sources`` are ``KIND=PATH`` strings: ``mmrs=FILE.jsonl`` (or a folder with ``train.jsonl``)
    for MMRS records, or any ``earthgpt mmrs build`` kind (``karpathy-json=…``, ``coco-captions=…``,
    ``llava=…``) converted on the fly. ``image_roots`` maps a record's ``image_root`` name to a
    folder; other places are searched as ``earthgpt eval`` does (``train/data.py``). ``tasks`` keeps
    only turns of
    these tasks (stage 1: ``[caption]``); empty keeps all. ``split`` keeps records of that split.
    ``one_pair_per_example`` makes each turn pair its own example (the stage-1 caption recipe);
    otherwise a record's pairs are packed into examples up to ``max_length``; ``pack_by_task`` packs
    each task's pairs apart and ``task_repeats`` (``{task: n}``, n > 0) lists each example of that
    task n times per epoch, a fraction of n keeping that share of its records (task-balanced
    sampling, see ``earthgpt.data.torch_dataset.make_examples``); a ``task/question_type`` key
    (``vqa/count``) weights one question type alone, a ``dataset:task`` or
    ``dataset:task/question_type`` key (``rsvqa_lr:vqa``) one dataset's turns. ``feature_cache`` is a
    folder for cached vision-encoder outputs (see ``train/features.py``); ``None`` disables it.
    """

    sources: list[str] = field(default_factory=list)
    image_roots: dict[str, str] = field(default_factory=dict)
    split: str | None = "train"
    tasks: list[str] = field(default_factory=list)
    max_length: int = 2048
    group_by_length: bool = True
    num_workers: int = 0
    one_pair_per_example: bool = False
    pack_by_task: bool = False
    task_repeats: dict[str, float] = field(default_factory=dict)
    feature_cache: str | None = None
    system_prompt: str | None = None


@dataclass
class OptimSection:
    """AdamW on the trainable parameters with a cosine schedule after a linear warm-up.

    ``batch_size`` is per device; one optimizer step sees ``batch_size · grad_accum · world_size``
    examples. ``max_steps`` counts optimizer steps; ``warmup_steps`` takes precedence over
    ``warmup_ratio`` when positive. ``projector_lr`` (default: ``lr``) is the projector's rate;
    ``stage1_lr`` (default: ``lr``) is the rate, in stage 2, of the LLM parameters stage 1 trained
    when the model config's ``stage2_tunes_stage1`` keeps them training. ``position_lr`` (default:
    the projector's rate) is the rate of the projector's 2-D position signal (``projector.position``),
    which starts at zero and so may need a higher rate than the projector it is added to;
    ``context_lr`` (default: the projector's rate) likewise for its global context
    (``projector.context``). ``lora_lr`` (default: ``lr``) is the rate of stage 2's low-rank
    adapters (the model config's ``stage2_lora_rank``).
    """

    lr: float = 2e-4
    projector_lr: float | None = None
    position_lr: float | None = None
    context_lr: float | None = None
    stage1_lr: float | None = None
    lora_lr: float | None = None
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    warmup_steps: int = 0
    warmup_ratio: float = 0.03
    max_steps: int = 1000
    batch_size: int = 4
    grad_accum: int = 1
    grad_clip: float = 1.0


@dataclass
class RunSection:
    """Where outputs go and how the run is executed.

    ``resume`` is ``auto`` (the last complete checkpoint in ``output_dir``, if any), ``never``, or a
    checkpoint folder. ``peak_tflops`` overrides the GPU peak used for MFU (see ``train/flops.py``).
    ``stop_at`` ends the run after that optimizer step (checkpoint and final export as usual)
    while the learning-rate schedule still runs to ``optim.max_steps``.
    """

    output_dir: str = "runs/default"
    seed: int = 0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    log_every: int = 10
    save_every: int = 500
    keep_checkpoints: int = 2
    resume: str = "auto"
    stop_at: int | None = None
    tensorboard: bool = True
    progress: bool = True
    peak_tflops: float | None = None
    export_final: bool = True


@dataclass
class TrainConfig:
    """A whole training run: ``stage`` 1 or 2 and the four sections."""

    stage: int = 1
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    run: RunSection = field(default_factory=RunSection)

    def validate(self) -> None:
        """Raise ValueError when values are out of range or contradict each other."""
        checks = [
            (self.stage in (1, 2), f"stage must be 1 or 2, got {self.stage}"),
            (
                self.run.mixed_precision in MIXED_PRECISIONS,
                f"run.mixed_precision must be one of {MIXED_PRECISIONS}, got {self.run.mixed_precision!r}",
            ),
            (self.model.dtype in DTYPES, f"model.dtype must be one of {DTYPES}, got {self.model.dtype!r}"),
            (self.optim.max_steps > 0, f"optim.max_steps must be positive, got {self.optim.max_steps}"),
            (
                self.optim.batch_size > 0 and self.optim.grad_accum > 0,
                "optim.batch_size and optim.grad_accum must be positive",
            ),
            (len(self.optim.betas) == 2, f"optim.betas needs two values, got {self.optim.betas}"),
            (self.data.max_length > 0, f"data.max_length must be positive, got {self.data.max_length}"),
            (bool(self.data.sources), "data.sources is empty: give at least one KIND=PATH"),
            (
                self.stage == 1 or self.model.init_from is not None,
                "stage 2 starts from a stage-1 export: set model.init_from to its folder (…/final)",
            ),
            (
                self.run.save_every > 0 and self.run.log_every > 0,
                "run.save_every and run.log_every must be positive",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        for source in self.data.sources:
            if "=" not in source:
                raise ValueError(f"data.sources entry {source!r}: expected KIND=PATH")

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (what ``config.yaml`` in the run folder holds)."""
        return dataclasses.asdict(self)


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {key}: {part} is not a section")
    node[parts[-1]] = value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["optim.lr=1e-4", …]`` → a nested dict; values parsed as YAML (``1e-4`` is a float)."""
    tree: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r}: expected KEY=VALUE with a dotted key, e.g. optim.lr=1e-4")
        value = _yaml(raw, f"override {item!r}") if raw else ""
        if isinstance(value, str) and _looks_like_float(raw):
            value = float(raw)
        _set_dotted(tree, key.strip(), value)
    return tree


def _yaml(text: str, where: str) -> Any:
    """``text`` parsed as YAML; a one-line ValueError naming ``where`` and the problem otherwise."""
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise ValueError(f"{where}: not valid YAML: nested too deeply") from None
    except ValueError as err:  # an integer of more digits than Python converts
        raise ValueError(f"{where}: not valid YAML: {err}") from None
    except yaml.YAMLError as err:
        problem, mark = getattr(err, "problem", None), getattr(err, "problem_mark", None)
        if problem and mark is not None:
            problem = f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
        raise ValueError(f"{where}: not valid YAML: {' '.join(str(problem or err).split())}") from None


def _looks_like_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from a nested dict."""
    config = dataclass_from_dict(TrainConfig, data)
    config.validate()
    return config


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config, apply dotted ``key=value`` overrides, check types and values.

    Relative paths inside the YAML stay relative to the working directory (where the run starts),
    the same as paths given on the command line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config {path} not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text: {err}") from None
    data = _yaml(text, str(path)) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping at the top level, got {type(data).__name__}")
    for item in overrides or []:
        data = merge_dicts(data, parse_overrides([item]), replace=_replaced_by(item))
    return config_from_dict(data)


def _replaced_by(item: str) -> tuple[str, ...]:
    """The value mappings that the override ``item`` replaces whole: those it names as its key
    (``model.config={…}``), not those its dotted key goes into (``model.config.stage2_lora_rank=16``
    or ``data.task_repeats.vqa=3`` set one entry and keep the others)."""
    inside = item.partition("=")[0].strip().split(".")[:-1]
    return tuple(key for key in VALUE_MAPPINGS if key not in inside)
