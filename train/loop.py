"""The training loop on accelerate: CPU, one or many GPUs, one or many nodes, DDP / FSDP / DeepSpeed.

One optimizer step takes ``optim.grad_accum`` micro-batches of ``optim.batch_size`` examples per
process (gradient sync only on the last), clips the gradient norm, steps AdamW and the cosine
schedule. The mean loss of a step is the mean of its micro-batch losses (each the mean over its
answer tokens). Logs go to the progress bar, ``metrics.jsonl`` and TensorBoard; checkpoints and the
final export are described in ``train/state.py`` and ``docs/TRAINING.md``.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed
from torch import nn
from torch.utils.data import DataLoader

from earthgpt.data.dataset import resolve_image
from earthgpt.data.torch_dataset import MMRSTorchDataset, collate, make_examples
from earthgpt.model.earthgpt import EarthGPT
from earthgpt.processor import EarthGPTProcessor
from train import state as ckpt
from train.build import build_model, describe, load_tokenizer, model_config
from train.config import TrainConfig
from train.data import load_records
from train.features import FeatureCache, precompute, vision_fingerprint
from train.flops import flop_model, peak_tflops_for, vision_forward_flops
from train.metrics import Throughput
from train.sampler import batches_per_epoch, epoch_batches

log = logging.getLogger(__name__)


class TrainingModule(nn.Module):
    """The model as accelerate wraps it: vision (or cached vision features) → projector → LLM loss."""

    def __init__(self, model: EarthGPT) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The mean cross-entropy over answer tokens."""
        if vision_features is None:
            vision_features = self.model.vision(pixel_values)
        weight = next(self.model.projector.parameters())
        image_features = self.model.projector(vision_features.to(weight.device, weight.dtype))
        out = self.model(
            input_ids, attention_mask=attention_mask, image_features=image_features, labels=labels,
            answer_logits_only=True,
        )
        return out.loss


class BatchStream:
    """This rank's batches, epoch after epoch, from a position ``(epoch, batch)`` (see train/sampler.py)."""

    def __init__(
        self, dataset: MMRSTorchDataset, pad_id: int, cfg: TrainConfig, world: int, rank: int
    ) -> None:
        self.dataset, self.cfg, self.world, self.rank = dataset, cfg, world, rank
        self.collate = partial(collate, pad_token_id=pad_id)
        self.epoch = self.batch = 0
        self._iter: Any = None
        if batches_per_epoch(len(dataset), cfg.optim.batch_size, world) == 0:
            raise ValueError(
                f"{len(dataset)} examples do not fill one global batch of {cfg.optim.batch_size} × {world} "
                "processes; lower optim.batch_size or add data"
            )

    def _open(self) -> None:
        batches = epoch_batches(
            self.dataset.lengths,
            self.cfg.optim.batch_size,
            world_size=self.world,
            rank=self.rank,
            seed=self.cfg.run.seed,
            epoch=self.epoch,
            group_by_length=self.cfg.data.group_by_length,
        )
        loader = DataLoader(
            self.dataset,
            batch_sampler=batches[self.batch :],
            collate_fn=self.collate,
            num_workers=self.cfg.data.num_workers,
        )
        self._iter = iter(loader)

    def next(self) -> dict[str, Any]:
        """The next batch; rolls over to the next epoch at the end of one."""
        if self._iter is None:
            self._open()
        try:
            batch = next(self._iter)
        except StopIteration:
            self.epoch, self.batch = self.epoch + 1, 0
            self._open()
            batch = next(self._iter)
        self.batch += 1
        return batch

    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def seek(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch, self._iter = epoch, batch, None


def cosine_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int, min_ratio: float):
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio`` × lr at ``total``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay only on matrices (none on norms, biases, scale/shift vectors); the
    projector at ``optim.projector_lr`` when set (it starts from random, the LLM parts do not)."""
    projector = getattr(getattr(model, "model", None), "projector", None)
    projector_ids = {id(p) for p in projector.parameters()} if projector is not None else set()
    groups = []
    for is_projector in (False, True):
        params = [
            p for p in model.parameters() if p.requires_grad and (id(p) in projector_ids) == is_projector
        ]
        lr = cfg.optim.projector_lr if is_projector and cfg.optim.projector_lr else cfg.optim.lr
        groups += [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.optim.weight_decay, "lr": lr},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "lr": lr},
        ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps
    )


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


def _dataset(cfg: TrainConfig, model: EarthGPT, processor: EarthGPTProcessor, accelerator: Accelerator):
    records, roots = load_records(cfg.data.sources, cfg.data.split, cfg.data.image_roots)
    examples = make_examples(
        records,
        processor.tokenizer,
        num_visual_tokens=model.config.num_visual_tokens,
        max_length=cfg.data.max_length,
        tasks=cfg.data.tasks,
        one_pair_per_example=cfg.data.one_pair_per_example,
    )
    dataset = MMRSTorchDataset(
        records,
        examples,
        processor,
        partial(resolve_image, roots=roots),
        max_length=cfg.data.max_length,
        tasks=cfg.data.tasks,
        system_prompt=cfg.data.system_prompt,
    )
    if cfg.data.feature_cache:
        dtype = next(model.vision.parameters()).dtype
        cache = FeatureCache(cfg.data.feature_cache, vision_fingerprint(model.vision, model.config, dtype))
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
            [Path(p) for p in images],
            encode,
            load,
            rank=accelerator.process_index,
            world_size=accelerator.num_processes,
            progress=cfg.run.progress and accelerator.is_local_main_process,
        )
        log.info("feature cache %s: %d new entries from this process", cache.folder, written)
        accelerator.wait_for_everyone()
        dataset.features = cache
    return dataset


def setup(cfg: TrainConfig) -> Run:
    """Build the accelerator, model, data, optimizer and schedule; resume when asked."""
    output = Path(cfg.run.output_dir)
    accelerator = Accelerator(
        mixed_precision=cfg.run.mixed_precision,
        log_with="tensorboard" if cfg.run.tensorboard else None,
        project_dir=str(output),
    )
    set_seed(cfg.run.seed)
    if accelerator.distributed_type == DistributedType.DEEPSPEED and cfg.optim.grad_accum > 1:
        raise ValueError(
            "with DeepSpeed, accumulate in DeepSpeed's own config: set optim.grad_accum=1 and "
            "gradient_accumulation_steps in the accelerate config (or raise optim.batch_size)"
        )
    model = build_model(cfg)
    processor = EarthGPTProcessor(load_tokenizer(cfg.model.tokenizer, model), model.config)
    model.tokenizer = processor.tokenizer
    accelerator.print(f"stage {cfg.stage}: {describe(model)}")
    dataset = _dataset(cfg, model, processor, accelerator)
    if cfg.run.gradient_checkpointing:
        model.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.llm.config.use_cache = False
    resume = _find_resume(cfg, output)
    info = _load_trainable(model, resume) if resume else None
    module = TrainingModule(model)
    module.train()
    optimizer = make_optimizer(module, cfg)
    warmup = cfg.optim.warmup_steps or round(cfg.optim.warmup_ratio * cfg.optim.max_steps)
    scheduler = cosine_schedule(optimizer, warmup, cfg.optim.max_steps, cfg.optim.min_lr_ratio)
    module, optimizer = accelerator.prepare(module, optimizer)
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
        _throughput(cfg, model, accelerator),
        output,
    )
    if resume:
        _restore(run, resume, info)
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        (output / "train_config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    if cfg.run.tensorboard:
        accelerator.init_trackers("tensorboard")
    return run


def _throughput(cfg: TrainConfig, model: EarthGPT, accelerator: Accelerator) -> Throughput:
    device = accelerator.device
    peak = cfg.run.peak_tflops
    if device.type == "cuda" and peak is None:
        peak = peak_tflops_for(torch.cuda.get_device_name(device))
    vision_dtype = next(model.vision.parameters()).dtype
    per_image = vision_forward_flops(model.vision.to(device), model.config.image_size, device, vision_dtype)
    return Throughput(flop_model(model, per_image), peak)


def _identity(cfg: TrainConfig) -> dict[str, Any]:
    return {
        "stage": cfg.stage,
        "model": model_config(cfg).to_dict(),
        "pretrained": cfg.model.pretrained,
        "seed": cfg.model.seed,
        "init_from": cfg.model.init_from,
    }


def _find_resume(cfg: TrainConfig, output: Path) -> Path | None:
    if cfg.run.resume == "never":
        return None
    if cfg.run.resume == "auto":
        return ckpt.latest_checkpoint(output)
    folder = Path(cfg.run.resume)
    ckpt.verify(folder)
    return folder


def _load_trainable(model: EarthGPT, folder: Path) -> dict[str, Any]:
    info = ckpt.verify(folder)
    tensors = ckpt.read_trainable(folder)
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(tensors) != set(named):
        raise ValueError(
            f"checkpoint {folder} holds other trainable parameters than this run trains "
            f"({len(tensors)} stored, {len(named)} trainable)"
        )
    with torch.no_grad():
        for name, tensor in tensors.items():
            named[name].copy_(tensor.to(named[name].dtype))
    return info


def _restore(run: Run, folder: Path, info: dict[str, Any]) -> None:
    if info["identity"] != _identity(run.cfg):
        raise ValueError(
            f"checkpoint {folder} belongs to another run (stage, model or init_from differ); "
            "use another run.output_dir or run.resume=never"
        )
    if info["world_size"] != run.accelerator.num_processes:
        raise ValueError(
            f"checkpoint {folder} was written by {info['world_size']} processes, this run has "
            f"{run.accelerator.num_processes}; resume with the same number"
        )
    rank = ckpt.read_rank_state(folder, run.accelerator.process_index)
    run.optimizer.load_state_dict(rank["optimizer"])
    run.scheduler.load_state_dict(rank["scheduler"])
    if rank.get("scaler") is not None and run.accelerator.scaler is not None:
        run.accelerator.scaler.load_state_dict(rank["scaler"])
    ckpt.set_rng_state(rank["rng"])
    run.step = info["step"]
    run.stream.seek(info["data"]["epoch"], info["data"]["batch"])
    run.accelerator.print(f"resumed from {folder} at step {run.step}")


def save_checkpoint(run: Run) -> Path:
    """Write a checkpoint of the current step (all processes take part)."""
    acc, final = run.accelerator, ckpt.checkpoint_dir(run.output, run.step)
    temp = ckpt.temp_dir(run.output, run.step)
    if acc.is_main_process:
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir(parents=True)
    acc.wait_for_everyone()
    names = {f"model.{n}" for n, p in run.model.named_parameters() if p.requires_grad}
    full = acc.get_state_dict(run.module)
    scaler = acc.scaler.state_dict() if acc.scaler is not None else None
    ckpt.write_rank_state(
        temp,
        acc.process_index,
        {
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": scaler,
            "rng": ckpt.rng_state(),
        },
    )
    if acc.is_main_process:
        trainable = {name.removeprefix("model."): t for name, t in full.items() if name in names}
        ckpt.write_trainable(temp, trainable, {"stage": str(run.cfg.stage), "step": str(run.step)})
    acc.wait_for_everyone()
    if acc.is_main_process:
        ckpt.finalize(
            temp,
            final,
            {
                "step": run.step,
                "data": run.stream.position(),
                "world_size": acc.num_processes,
                "identity": _identity(run.cfg),
            },
        )
        ckpt.prune(run.output, run.cfg.run.keep_checkpoints)
    acc.wait_for_everyone()
    return final


def export_final(run: Run) -> Path | None:
    """Write ``<output_dir>/final``: a delta checkpoint for ``load_pretrained`` plus the tokenizer."""
    from earthgpt.model.checkpoint import save_pretrained

    acc = run.accelerator
    acc.wait_for_everyone()
    final = run.output / "final"
    if acc.is_main_process:
        temp = run.output / f"{ckpt.TEMP_PREFIX}final"
        shutil.rmtree(temp, ignore_errors=True)
        model = acc.unwrap_model(run.module).model
        save_pretrained(model, temp, delta=True)
        run.processor.tokenizer.save_pretrained(str(temp / "tokenizer"))
        shutil.rmtree(final, ignore_errors=True)
        temp.rename(final)
    acc.wait_for_everyone()
    return final
