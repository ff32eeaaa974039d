"""The training loop: optimizer steps until ``optim.max_steps``, logging, checkpoints, final export.

Runs on accelerate: CPU, one or many GPUs, one or many nodes, DDP / FSDP / DeepSpeed. One optimizer
step takes ``optim.grad_accum`` micro-batches of ``optim.batch_size`` examples per process
(gradient sync only on the last), clips the gradient norm, steps AdamW and the cosine schedule.
The mean loss of a step is the mean of its micro-batch losses (each the mean over its answer
tokens). Logs go to the progress bar, ``metrics.jsonl`` and TensorBoard; checkpoints and the final
export are described in ``train/checkpoints.py`` and ``docs/TRAINING.md``.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
from tqdm.auto import tqdm

from train.checkpoints import save_checkpoint
from train.config import TrainConfig
from train.export_weights import export_final
from train.metrics import append_jsonl
from train.run import Run, setup

_BATCH_KEYS = ("input_ids", "attention_mask", "labels", "pixel_values", "vision_features")


def _micro_batch(run: Run, batch: dict[str, Any], scale: float, sync: bool) -> tuple[float, list[float]]:
    """Forward and backward of one micro-batch; returns its loss and local counts for throughput."""
    acc = run.accelerator
    inputs = {k: batch[k].to(acc.device) for k in _BATCH_KEYS if k in batch}
    context = acc.no_sync(run.module) if not sync else contextlib.nullcontext()
    with context:
        with acc.autocast():
            loss = run.module(**inputs)
        acc.backward(loss * scale)
    images = int(inputs["input_ids"].shape[0])
    counts = [
        float(inputs["attention_mask"].sum()),
        float(images),
        float(images * run.model.config.num_visual_tokens),
        float(inputs["input_ids"].shape[1]),
        0.0 if run.cached else float(images),
    ]
    return float(loss.detach()), counts


def train_step(run: Run) -> float:
    """One optimizer step over ``grad_accum`` micro-batches; returns the mean loss on this process."""
    accum = run.cfg.optim.grad_accum
    losses = []
    for micro in range(accum):
        loss, counts = _micro_batch(run, run.stream.next(), 1.0 / accum, sync=micro == accum - 1)
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss} at step {run.step + 1}; lower optim.lr or check the data"
            )
        losses.append(loss)
        tokens, samples, visual, seq_len, encoded = counts
        run.throughput.add(int(tokens), int(samples), int(visual), int(seq_len), int(encoded))
    if run.cfg.optim.grad_clip > 0:
        run.accelerator.clip_grad_norm_(run.module.parameters(), run.cfg.optim.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    return sum(losses) / len(losses)


def _log(run: Run, losses: list[float], bar: tqdm) -> dict[str, float]:
    acc = run.accelerator
    mean = torch.tensor(sum(losses) / len(losses), device=acc.device)
    row: dict[str, float] = {
        "step": run.step,
        "loss": float(acc.reduce(mean, "mean")),
        "lr": run.scheduler.get_last_lr()[0],
    }
    local = run.throughput.read()
    totals = acc.reduce(
        torch.tensor(
            [local["tokens_per_s"], local["samples_per_s"], local.get("model_tflops_per_s", 0.0)],
            device=acc.device,
        ),
        "sum",
    )
    row["tokens_per_s"], row["samples_per_s"] = float(totals[0]), float(totals[1])
    if acc.device.type == "cuda":
        row["model_tflops_per_s"] = float(totals[2])
        if run.throughput.peak_tflops:
            row["mfu"] = float(totals[2]) / (run.throughput.peak_tflops * acc.num_processes)
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
    window: list[float] = []
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
