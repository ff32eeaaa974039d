"""The training loop: optimizer steps until ``optim.max_steps``, logging, checkpoints, final export.

Runs on accelerate: CPU, one or many GPUs, one or many nodes, DDP / FSDP / DeepSpeed. One optimizer
step takes ``optim.grad_accum`` micro-batches of ``optim.batch_size`` examples per process
(gradient sync only on the last), clips the gradient norm, steps AdamW and the cosine schedule.
Under DeepSpeed the engine owns accumulation: its ``gradient_accumulation_steps`` is
``optim.grad_accum`` (``run.py``), the micro-batches before the last are marked off its
accumulation boundary, and it clips and steps at the boundary (the loop's own calls are no-ops).

The objective is the same at every scale: the mean cross-entropy over the answer tokens of the whole
global batch (every micro-batch of the step on every process). A step first takes all its
micro-batches and counts their answer tokens on all processes (one all-reduce); each micro-batch then
backpropagates its summed token loss times ``num_processes / tokens`` (DDP, FSDP and DeepSpeed
average gradients over processes). So ``batch_size`` × ``grad_accum`` × processes give the gradient
of one big batch, however the answers are spread. The logged loss is that global token mean.
Logs go to the progress bar, ``metrics.jsonl`` and TensorBoard; checkpoints and the final export are
described in ``train/checkpoints.py`` and ``docs/TRAINING.md``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from accelerate.utils import DistributedType
from tqdm.auto import tqdm

from train.checkpoints import save_checkpoint
from train.config import TrainConfig
from train.export_weights import export_final
from train.metrics import append_jsonl
from train.run import Run, setup

_BATCH_KEYS = ("input_ids", "attention_mask", "labels", "pixel_values", "vision_features")


@dataclass(frozen=True)
class StepLoss:
    """One optimizer step's loss in parts that add up over processes and steps: ``local_sum``, the
    summed answer-token loss of this process's micro-batches, and ``tokens``, the answer tokens of the
    step's global batch. The step's loss is ``local_sum`` summed over processes, divided by ``tokens``."""

    local_sum: float
    tokens: int


def _micro_batch(run: Run, batch: dict[str, Any], scale: float, sync: bool) -> tuple[float, list[float]]:
    """Forward and backward of one micro-batch (its summed token loss times ``scale``); returns the
    summed token loss and local counts for throughput."""
    acc = run.accelerator
    inputs = {k: batch[k].to(acc.device) for k in _BATCH_KEYS if k in batch}
    deepspeed = acc.distributed_type == DistributedType.DEEPSPEED
    # DeepSpeed's engine.backward divides the loss by its accumulation steps; ours is already
    # normalised by the answer tokens of the whole global batch, so it must not divide again.
    options = {"scale_wrt_gas": False} if deepspeed else {}
    with _unsynced(run, deepspeed) if not sync else contextlib.nullcontext():
        with acc.autocast():
            loss = run.module(**inputs)
        acc.backward(loss * scale, **options)
    images = int(inputs["input_ids"].shape[0])
    counts = [
        float(inputs["attention_mask"].sum()),
        float(images),
        float(images * run.model.config.num_visual_tokens),
        float(inputs["input_ids"].shape[1]),
        0.0 if run.cached else float(images),
    ]
    return float(loss.detach()), counts


@contextlib.contextmanager
def _unsynced(run: Run, deepspeed: bool) -> Iterator[None]:
    """A micro-batch before the step's last: DDP and FSDP keep its gradient local (``no_sync``);
    DeepSpeed is told it is not at its accumulation boundary (accelerate hands ``sync_gradients``
    to the engine), so it accumulates and neither clips, steps nor zeroes the gradients. ZeRO-2 and
    ZeRO-3 still reduce-scatter each micro-batch's gradient into the owning rank's partition (they
    have no ``no_sync``); the optimizer step waits for the boundary."""
    acc = run.accelerator
    if not deepspeed:
        with acc.no_sync(run.module):
            yield
        return
    acc.sync_gradients = False
    try:
        yield
    finally:
        acc.sync_gradients = True


def global_answer_tokens(run: Run, batches: list[dict[str, Any]]) -> int:
    """Answer tokens of ``batches`` summed over all processes (the step's global batch)."""
    local = sum(run.model.answer_token_count(b["input_ids"], b["labels"]) for b in batches)
    acc = run.accelerator
    return int(acc.reduce(torch.tensor(local, device=acc.device), "sum"))


def backward_step(run: Run) -> StepLoss:
    """Forward and backward of one step's ``grad_accum`` micro-batches, leaving in ``.grad`` the
    gradient of the mean token loss of the global batch (module doc); returns the step's loss."""
    batches = [run.stream.next() for _ in range(run.cfg.optim.grad_accum)]
    tokens = global_answer_tokens(run, batches)
    scale = run.accelerator.num_processes / max(tokens, 1)
    local_sum = 0.0
    for index, batch in enumerate(batches):
        loss, counts = _micro_batch(run, batch, scale, sync=index == len(batches) - 1)
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss} at step {run.step + 1}; lower optim.lr or check the data"
            )
        local_sum += loss
        tokens_in, samples, visual, seq_len, encoded = counts
        run.throughput.add(int(tokens_in), int(samples), int(visual), int(seq_len), int(encoded))
    return StepLoss(local_sum, tokens)


def train_step(run: Run) -> StepLoss:
    """One optimizer step: :func:`backward_step`, gradient clipping, AdamW and the schedule."""
    loss = backward_step(run)
    if run.cfg.optim.grad_clip > 0:
        run.accelerator.clip_grad_norm_(run.module.parameters(), run.cfg.optim.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    return loss


def _log(run: Run, losses: list[StepLoss], bar: tqdm) -> dict[str, float]:
    """Log the window's loss (its global token mean) and throughput summed over processes."""
    acc = run.accelerator
    local = run.throughput.read()
    totals = acc.reduce(
        torch.tensor(
            [
                sum(s.local_sum for s in losses),
                local["tokens_per_s"],
                local["samples_per_s"],
                local.get("model_tflops_per_s", 0.0),
            ],
            device=acc.device,
        ),
        "sum",
    )
    row: dict[str, float] = {
        "step": run.step,
        "loss": float(totals[0]) / max(sum(s.tokens for s in losses), 1),
        "lr": run.scheduler.get_last_lr()[0],
    }
    row["tokens_per_s"], row["samples_per_s"] = float(totals[1]), float(totals[2])
    if acc.device.type == "cuda":
        row["model_tflops_per_s"] = float(totals[3])
        if run.throughput.peak_tflops:
            row["mfu"] = float(totals[3]) / (run.throughput.peak_tflops * acc.num_processes)
    if acc.is_main_process:
        append_jsonl(run.output / "metrics.jsonl", row)
        if run.cfg.run.tensorboard:
            acc.log({f"train/{k}": v for k, v in row.items() if k != "step"}, step=run.step)
    bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k in ("loss", "lr", "tokens_per_s", "mfu")})
    return row


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run (or resume) training to ``optim.max_steps`` (or ``run.stop_at``, which ends the run
    early without changing the schedule); returns the last logged metrics and paths."""
    run = setup(cfg)
    acc = run.accelerator
    end = min(cfg.optim.max_steps, cfg.run.stop_at or cfg.optim.max_steps)
    bar = tqdm(
        total=end,
        initial=run.step,
        desc=f"stage {cfg.stage}",
        unit="step",
        disable=not (cfg.run.progress and acc.is_local_main_process),
    )
    window: list[StepLoss] = []
    last: dict[str, float] = {}
    while run.step < end:
        window.append(train_step(run))
        bar.update(1)
        if run.step % cfg.run.log_every == 0 or run.step == end:
            last = _log(run, window, bar)
            window = []
        if run.step % cfg.run.save_every == 0 or run.step == end:
            save_checkpoint(run)
    bar.close()
    final = export_final(run) if cfg.run.export_final else None
    acc.end_training()
    return {
        "step": run.step,
        "metrics": last,
        "final": str(final) if final else None,
        "output_dir": str(run.output),
    }
