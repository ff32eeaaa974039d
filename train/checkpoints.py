"""Training checkpoints: the trainable parameters (delta) plus everything a resume needs.

:func:`save_checkpoint` writes one for a run (all processes take part); :func:`find_resume`,
:func:`load_trainable` and :func:`restore` bring a new run back to where a checkpoint left off.

A checkpoint is a folder ``<output_dir>/checkpoints/step-<N>``::

    trainable.safetensors   the parameters that learn, full precision, nothing else
    rank<r>.pt              optimizer state (this rank's; under FSDP its shards as plain tensors),
                            scheduler state, RNG states (torch, CUDA, numpy, python) of rank r; read
                            back with ``torch.load(weights_only=True)``
    state.json              step, data position (epoch, batch), world size, the run's identity,
                            and the size and sha256 of every other file: written last

The folder is assembled under a temporary name and renamed into place, and every file inside is
written to a temp file and renamed, so a run killed during a write leaves either no new
checkpoint or a complete one. :func:`latest_checkpoint` also verifies sizes and hashes, and falls
back to the previous checkpoint when the newest one is damaged.

Under FSDP (and DeepSpeed ZeRO-3) no process holds whole parameters: :func:`gathered_state` gathers
them onto the main process, which alone writes ``trainable.safetensors``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from accelerate.utils import DistributedType
from safetensors.torch import load_file, save_file

from earthgpt.identity import file_sha256
from train.build import model_config
from train.config import TrainConfig

if TYPE_CHECKING:
    from earthgpt.model.earthgpt import EarthGPT
    from train.run import Run

log = logging.getLogger(__name__)

TRAINABLE = "trainable.safetensors"
STATE = "state.json"
PREFIX = "step-"
TEMP_PREFIX = ".tmp-"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temp)`` then rename ``temp`` to ``path`` (same folder, so the rename is atomic)."""
    temp = path.with_name(f"{TEMP_PREFIX}{path.name}.{os.getpid()}")
    write(temp)
    os.replace(temp, path)


def rng_state() -> dict[str, Any]:
    """The RNG states of this process, as tensors and plain values (loadable with weights_only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "gauss": gauss,
        },
        "python": json.dumps(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["gauss"],
        )
    )
    version, internal, gauss = json.loads(state["python"])
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    """``<output_dir>/checkpoints/step-<step, 8 digits>``."""
    return Path(output_dir) / "checkpoints" / f"{PREFIX}{step:08d}"


def temp_dir(output_dir: Path, step: int) -> Path:
    """The folder a checkpoint is assembled in before it is renamed into place."""
    final = checkpoint_dir(output_dir, step)
    return final.with_name(f"{TEMP_PREFIX}{final.name}")


def write_trainable(folder: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    """Write the trainable parameters (called on the main process only)."""
    data = {name: t.detach().to("cpu", torch.float32).contiguous() for name, t in tensors.items()}
    atomic_write(folder / TRAINABLE, lambda p: save_file(data, str(p), metadata=dict(metadata)))


def write_rank_state(folder: Path, rank: int, state: Mapping[str, Any]) -> None:
    """Write one rank's optimizer, scheduler and RNG state."""
    atomic_write(folder / f"rank{rank}.pt", lambda p: torch.save(dict(state), p))


def finalize(folder: Path, final: Path, info: Mapping[str, Any]) -> None:
    """Record every file's size and hash in ``state.json`` (last), then rename ``folder`` to ``final``."""
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(TEMP_PREFIX) and p.name != STATE
    }
    payload = {**info, "files": files}
    atomic_write(folder / STATE, lambda p: p.write_text(json.dumps(payload, indent=2) + "\n"))
    if final.exists():
        shutil.rmtree(final)
    os.replace(folder, final)


def verify(folder: Path) -> dict[str, Any]:
    """``state.json`` of a complete, undamaged checkpoint; ValueError naming what is wrong otherwise."""
    state_file = folder / STATE
    if not state_file.is_file():
        raise ValueError(f"{folder}: no {STATE} (the write did not finish)")
    try:
        info = json.loads(state_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{state_file}: not valid JSON ({err.msg})") from None
    for name, expected in info.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise ValueError(f"{folder}: {name} is missing")
        if path.stat().st_size != expected["bytes"] or file_sha256(path) != expected["sha256"]:
            raise ValueError(f"{folder}: {name} is damaged (size or sha256 differs from {STATE})")
    if TRAINABLE not in info.get("files", {}):
        raise ValueError(f"{folder}: {STATE} lists no {TRAINABLE}")
    return info


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Checkpoint folders of a run, oldest first (temporary folders excluded)."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest checkpoint that verifies, skipping (with a warning) damaged or incomplete ones."""
    for folder in reversed(list_checkpoints(output_dir)):
        try:
            verify(folder)
        except ValueError as err:
            log.warning("skipping checkpoint: %s", err)
            continue
        return folder
    return None


def prune(output_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints, and leftovers of interrupted writes."""
    root = Path(output_dir) / "checkpoints"
    if root.is_dir():
        for leftover in root.glob(f"{TEMP_PREFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)
    folders = list_checkpoints(output_dir)
    for folder in folders[: max(0, len(folders) - keep)]:
        shutil.rmtree(folder, ignore_errors=True)


def read_trainable(folder: Path) -> dict[str, torch.Tensor]:
    """The trainable parameters stored in a checkpoint."""
    return load_file(folder / TRAINABLE)


def read_rank_state(folder: Path, rank: int, deepspeed: bool = False) -> dict[str, Any]:
    """One rank's optimizer, scheduler and RNG state (weights-only unpickling; ``deepspeed`` also
    allows the three DeepSpeed classes a ZeRO optimizer's state holds)."""
    path = folder / f"rank{rank}.pt"
    if not path.is_file():
        raise ValueError(f"{folder} has no state for rank {rank}: was it written with another world size?")
    with torch.serialization.safe_globals(_deepspeed_classes() if deepspeed else []):
        return torch.load(path, weights_only=True)


def _deepspeed_classes() -> list[type]:
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, ZeroStageEnum, fragment_address]


# --- a run's checkpoints ---------------------------------------------------------------------------


def gathered_state(run: Run) -> dict[str, torch.Tensor]:
    """The model's whole tensors by parameter name on the main process. Every process must call it:
    under FSDP and ZeRO-3 it gathers the shards (accelerate's ``get_state_dict``: FSDP2 a full,
    CPU-offloaded state dict on rank 0, ZeRO-3 its 16-bit consolidation); other processes may get
    an empty dict."""
    full = run.accelerator.get_state_dict(run.module) or {}  # ZeRO-3 gives None off the main process
    return {name.removeprefix("model."): t for name, t in full.items()}


def local_shards(state: dict[str, Any]) -> tuple[dict[str, Any], list[list[Any]]]:
    """An optimizer state dict with every DTensor (FSDP2's sharded moments) replaced by this process's
    shard, and the ``[param id, key]`` of each, so the rank file loads with ``weights_only``."""
    from torch.distributed.tensor import DTensor

    sharded: list[list[Any]] = []
    entries: dict[Any, dict[str, Any]] = {}
    for pid, entry in state.get("state", {}).items():
        entries[pid] = dict(entry)
        for key, value in entry.items():
            if isinstance(value, DTensor):
                entries[pid][key] = value.to_local()
                sharded.append([pid, key])
    return ({**state, "state": entries} if entries else state), sharded


def reshard(state: dict[str, Any], sharded: list[list[Any]], optimizer: Any) -> dict[str, Any]:
    """The inverse of :func:`local_shards` for this run's optimizer: each stored shard becomes a DTensor
    placed like its parameter (same mesh, placements and shape; the world size is checked first)."""
    if not sharded:
        return state
    from torch.distributed.tensor import DTensor

    ids = [pid for group in state["param_groups"] for pid in group["params"]]
    params = dict(zip(ids, (p for group in optimizer.param_groups for p in group["params"]), strict=True))
    for pid, key in sharded:
        param = params[pid]
        state["state"][pid][key] = DTensor.from_local(
            state["state"][pid][key].to(param.device),
            param.device_mesh,
            param.placements,
            shape=param.shape,
            stride=param.stride(),
        )
    return state


def run_identity(cfg: TrainConfig) -> dict[str, Any]:
    """What a checkpoint must share with a run that resumes from it: stage, model and where it started."""
    return {
        "stage": cfg.stage,
        "model": model_config(cfg).to_dict(),
        "pretrained": cfg.model.pretrained,
        "seed": cfg.model.seed,
        "init_from": cfg.model.init_from,
    }


def find_resume(cfg: TrainConfig, output: Path) -> Path | None:
    """The checkpoint ``run.resume`` names (``auto``: the newest complete one), or None."""
    if cfg.run.resume == "never":
        return None
    if cfg.run.resume == "auto":
        return latest_checkpoint(output)
    folder = Path(cfg.run.resume)
    verify(folder)
    return folder


def load_trainable(model: EarthGPT, folder: Path) -> dict[str, Any]:
    """Copy a checkpoint's trainable parameters into ``model``; returns its verified ``state.json``."""
    info = verify(folder)
    tensors = read_trainable(folder)
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


def restore(run: Run, folder: Path, info: dict[str, Any]) -> None:
    """Bring ``run`` to the checkpoint's step: optimizer, scheduler, scaler, RNG and data position."""
    if info["identity"] != run_identity(run.cfg):
        raise ValueError(
            f"checkpoint {folder} belongs to another run (stage, model or init_from differ); "
            "use another run.output_dir or run.resume=never"
        )
    if info["world_size"] != run.accelerator.num_processes:
        raise ValueError(
            f"checkpoint {folder} was written by {info['world_size']} processes, this run has "
            f"{run.accelerator.num_processes}; resume with the same number"
        )
    acc = run.accelerator
    if acc.distributed_type == DistributedType.DEEPSPEED:
        # A ZeRO optimizer loads every rank's partition (and its float32 master weights) at once.
        states = [read_rank_state(folder, r, deepspeed=True) for r in range(acc.num_processes)]
        rank = states[acc.process_index]
        run.optimizer.optimizer.load_state_dict([s["optimizer"] for s in states], load_from_fp32_weights=True)
    else:
        rank = read_rank_state(folder, acc.process_index)
        run.optimizer.load_state_dict(reshard(rank["optimizer"], rank.get("sharded", []), run.optimizer))
    run.scheduler.load_state_dict(rank["scheduler"])
    if rank.get("scaler") is not None and run.accelerator.scaler is not None:
        run.accelerator.scaler.load_state_dict(rank["scaler"])
    set_rng_state(rank["rng"])
    run.step = info["step"]
    run.stream.seek(info["data"]["epoch"], info["data"]["batch"])
    run.accelerator.print(f"resumed from {folder} at step {run.step}")


def save_checkpoint(run: Run) -> Path:
    """Write a checkpoint of the current step (all processes take part)."""
    acc, final = run.accelerator, checkpoint_dir(run.output, run.step)
    temp = temp_dir(run.output, run.step)
    if acc.is_main_process:
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir(parents=True)
    acc.wait_for_everyone()
    names = {n for n, p in run.model.named_parameters() if p.requires_grad}
    full = gathered_state(run)
    scaler = acc.scaler.state_dict() if acc.scaler is not None else None
    optimizer, sharded = local_shards(run.optimizer.state_dict())
    write_rank_state(
        temp,
        acc.process_index,
        {
            "optimizer": optimizer,
            "sharded": sharded,
            "scheduler": run.scheduler.state_dict(),
            "scaler": scaler,
            "rng": rng_state(),
        },
    )
    if acc.is_main_process:
        trainable = {name: t for name, t in full.items() if name in names}
        write_trainable(temp, trainable, {"stage": str(run.cfg.stage), "step": str(run.step)})
    acc.wait_for_everyone()
    if acc.is_main_process:
        finalize(
            temp,
            final,
            {
                "step": run.step,
                "data": run.stream.position(),
                "world_size": acc.num_processes,
                "identity": run_identity(run.cfg),
            },
        )
        prune(run.output, run.cfg.run.keep_checkpoints)
    acc.wait_for_everyone()
    return final
