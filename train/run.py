"""One training run, set up from its config: accelerator, model, data, optimizer, schedule, resume.

:func:`setup` builds the :class:`Run` that the loop (``train/steps.py``) steps; checkpoints and the
final export are described in ``train/checkpoints.py``, ``train/export_weights.py`` and
``docs/TRAINING.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DistributedType, broadcast_object_list, set_seed
from torch import nn

from earthgpt.data.torch_dataset import MMRSTorchDataset, describe_mix, make_examples, mix_summary
from earthgpt.model.earthgpt import EarthGPT
from earthgpt.processor import EarthGPTProcessor
from train import checkpoints
from train.build import build_model, describe, load_tokenizer
from train.config import TrainConfig
from train.data import load_records
from train.features import FeatureCache, precompute, vision_fingerprint
from train.flops import flop_model, peak_tflops_for, vision_forward_flops
from train.metrics import Throughput
from train.optimizer import cosine_schedule, make_optimizer
from train.sampler import BatchStream
from train.training_module import TrainingModule

log = logging.getLogger(__name__)


@dataclass
class Run:
    """Everything the loop touches."""

    cfg: TrainConfig
    accelerator: Accelerator
    model: EarthGPT
    module: nn.Module
    optimizer: Any
    scheduler: Any
    stream: BatchStream
    processor: EarthGPTProcessor
    cached: bool
    throughput: Throughput
    output: Path
    step: int = 0
    history: list[float] = field(default_factory=list)


def weights_from_main(accelerator: Accelerator) -> bool:
    """FSDP2 with ``cpu_ram_efficient_loading``: only the main process builds the weights, the
    others the architecture on the meta device; ``prepare`` then sends each process its shards."""
    return bool(accelerator.is_fsdp2 and accelerator.state.fsdp_plugin.cpu_ram_efficient_loading)


def _on_main(accelerator: Accelerator, from_main: bool, compute: Callable[[], Any]) -> Any:
    """``compute()`` on every process or, when only the main one holds the weights, its value
    sent to the others."""
    if not from_main:
        return compute()
    value = [compute() if accelerator.is_main_process else None]
    broadcast_object_list(value, from_process=0)
    return value[0]


def _dataset(cfg: TrainConfig, model: EarthGPT, processor: EarthGPTProcessor, accelerator: Accelerator):
    records, resolver = load_records(cfg.data.sources, cfg.data.split, cfg.data.image_roots)
    examples = make_examples(
        records,
        processor.tokenizer,
        num_visual_tokens=model.config.num_visual_tokens,
        max_length=cfg.data.max_length,
        tasks=cfg.data.tasks,
        one_pair_per_example=cfg.data.one_pair_per_example,
        pack_by_task=cfg.data.pack_by_task,
        task_repeats=cfg.data.task_repeats,
    )
    summary = mix_summary(records, examples, cfg.data.tasks, cfg.data.task_repeats)
    accelerator.print(describe_mix(summary, len(examples)))
    dataset = MMRSTorchDataset(
        records,
        examples,
        processor,
        resolver,
        max_length=cfg.data.max_length,
        tasks=cfg.data.tasks,
        system_prompt=cfg.data.system_prompt,
    )
    if cfg.data.feature_cache:
        from_main = weights_from_main(accelerator)  # then the main process encodes every image
        dtype = next(model.vision.parameters()).dtype
        fingerprint = _on_main(
            accelerator, from_main, lambda: vision_fingerprint(model.vision, model.config, dtype)
        )
        cache = FeatureCache(cfg.data.feature_cache, fingerprint)
        images = sorted({str(dataset.image_path(i)) for i in range(len(dataset))})
        sensors = {
            str(dataset.image_path(i)): records[e.record].get("sensor") for i, e in enumerate(examples)
        }
        device = accelerator.device

        def load(path: Path) -> torch.Tensor:
            return processor.preprocess_image(dataset.read_image(path, sensors[str(path)]))

        def encode(pixels: torch.Tensor) -> torch.Tensor:
            return model.vision.to(device)(pixels.to(device))

        written = precompute(
            cache,
            [Path(p) for p in images] if accelerator.is_main_process or not from_main else [],
            encode,
            load,
            rank=0 if from_main else accelerator.process_index,
            world_size=1 if from_main else accelerator.num_processes,
            progress=cfg.run.progress and accelerator.is_local_main_process,
        )
        log.info("feature cache %s: %d new entries from this process", cache.folder, written)
        accelerator.wait_for_everyone()
        dataset.features = cache
    return dataset


def _native_cpu_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX-512 or AMX, as oneDNN judges it)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def mixed_precision_for(asked: str) -> str:
    """The run's mixed precision: ``asked``, except bf16 on a machine without a GPU whose CPU has
    no native bf16 matrix multiply (an AVX2-only CPU emulates it: 0.9 GFLOP/s a core against 67 in
    float32, measured 2026-12-04, so a CPU recipe's step took 8 minutes), which trains in float32
    and says so."""
    if asked != "bf16" or torch.cuda.is_available() or _native_cpu_bf16():
        return asked
    log.warning("run.mixed_precision=bf16 asked, but this CPU (%s) has no native bf16 matrix multiply: "
                "training in float32 instead (bf16 would be emulated, about 70x slower); the numbers "
                "may differ slightly from a bf16 run's", torch.backends.cpu.get_cpu_capability())
    return "no"


def setup(cfg: TrainConfig) -> Run:
    """Build the accelerator, model, data, optimizer and schedule; resume when asked."""
    output = Path(cfg.run.output_dir)
    accelerator = Accelerator(
        mixed_precision=mixed_precision_for(cfg.run.mixed_precision),
        log_with="tensorboard" if cfg.run.tensorboard else None,
        project_dir=str(output),
    )
    set_seed(cfg.run.seed)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        _fill_deepspeed_config(accelerator, cfg)
    model = _build(cfg, accelerator)
    processor = EarthGPTProcessor(load_tokenizer(cfg.model.tokenizer, model), model.config)
    model.tokenizer = processor.tokenizer
    accelerator.print(f"stage {cfg.stage}: {describe(model)}")
    dataset = _dataset(cfg, model, processor, accelerator)
    if cfg.run.gradient_checkpointing:
        model.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.llm.config.use_cache = False
    resume = checkpoints.find_resume(cfg, output)
    info = checkpoints.load_trainable(model, resume) if resume else None
    module = TrainingModule(model)
    module.train()
    optimizer = make_optimizer(module, cfg)
    warmup = cfg.optim.warmup_steps or round(cfg.optim.warmup_ratio * cfg.optim.max_steps)
    scheduler = cosine_schedule(optimizer, warmup, cfg.optim.max_steps, cfg.optim.min_lr_ratio)
    throughput = _throughput(cfg, model, accelerator)  # before sharding: it runs the vision encoder alone
    module, optimizer = _prepare(accelerator, module, optimizer)
    stream = BatchStream(
        dataset, processor.pad_token_id, cfg, accelerator.num_processes, accelerator.process_index
    )
    run = Run(
        cfg,
        accelerator,
        model,
        module,
        optimizer,
        scheduler,
        stream,
        processor,
        dataset.features is not None,
        throughput,
        output,
    )
    if resume:
        checkpoints.restore(run, resume, info)
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        (output / "train_config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    if cfg.run.tensorboard:
        accelerator.init_trackers("tensorboard")
    return run


def _build(cfg: TrainConfig, accelerator: Accelerator) -> EarthGPT:
    """The model, empty on the processes that take their weights from the main one; logs the
    bytes of parameters this process holds before sharding."""
    model = build_model(cfg, empty=weights_from_main(accelerator) and not accelerator.is_main_process)
    held = sum(p.numel() * p.element_size() for p in model.parameters() if not p.is_meta)
    log.info("process %d: %d bytes of parameters materialised before sharding",
             accelerator.process_index, held)
    return model


def _prepare(accelerator: Accelerator, module: nn.Module, optimizer: Any) -> tuple[nn.Module, Any]:
    """``accelerator.prepare``; with weights from the main process, the optimizer's parameters are
    then pointed at the shards by name (accelerate matches them by data pointer, which is 0 for
    every tensor on the meta device, so the empty processes would all get one parameter)."""
    from accelerate.utils.fsdp_utils import fsdp2_canonicalize_names

    names = {id(p): n for n, p in fsdp2_canonicalize_names(dict(module.named_parameters())).items()}
    groups = [[names[id(p)] for p in group["params"]] for group in optimizer.param_groups]
    module, optimizer = accelerator.prepare(module, optimizer)
    if weights_from_main(accelerator):
        shards = fsdp2_canonicalize_names(dict(module.named_parameters()))
        for group, group_names in zip(optimizer.param_groups, groups, strict=True):
            group["params"] = [shards[name] for name in group_names]
    return module, optimizer


def _fill_deepspeed_config(accelerator: Accelerator, cfg: TrainConfig) -> None:
    """DeepSpeed reads the micro-batch size, the accumulation steps and the clipping from its own
    config (the loop passes no data loader to ``prepare``, and its clipping call is DeepSpeed's
    no-op): take them from ``optim``. The engine owns accumulation (``train/steps.py``); an
    accelerate config that asks for other accumulation steps than ``optim.grad_accum`` is refused
    (1, accelerate's default, and ``auto`` are taken as unset)."""
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    accum, asked = cfg.optim.grad_accum, config.get("gradient_accumulation_steps", 1)
    if asked not in (1, "auto", accum):
        raise ValueError(
            f"the accelerate config sets gradient_accumulation_steps: {asked}, "
            f"the run's optim.grad_accum is {accum}: set the accumulation with optim.grad_accum only"
        )
    config["gradient_accumulation_steps"] = accum
    config["train_micro_batch_size_per_gpu"] = cfg.optim.batch_size
    config["train_batch_size"] = cfg.optim.batch_size * accum * accelerator.num_processes
    config["gradient_clipping"] = cfg.optim.grad_clip
    accelerator.gradient_accumulation_steps = accum  # what accelerate would take from DeepSpeed's config


def _throughput(cfg: TrainConfig, model: EarthGPT, accelerator: Accelerator) -> Throughput:
    device = accelerator.device
    peak = cfg.run.peak_tflops
    if device.type == "cuda" and peak is None:
        peak = peak_tflops_for(torch.cuda.get_device_name(device))
    vision_dtype = next(model.vision.parameters()).dtype
    per_image = _on_main(  # the vision encoder's FLOPs, measured where its weights are
        accelerator,
        weights_from_main(accelerator),
        lambda: vision_forward_flops(model.vision.to(device), model.config.image_size, device, vision_dtype),
    )
    return Throughput(flop_model(model, per_image), peak)
