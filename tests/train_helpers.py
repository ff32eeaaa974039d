"""Tiny MMRS sets for the training tests: real AID images (shared data) or generated ones."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from browser_support import free_port
from PIL import Image

CONFIGS = Path(__file__).resolve().parents[1] / "train" / "configs"


def _record(index: int, root: str, image: str, label: str, width: int, height: int) -> dict:
    caption = f"An aerial image of {label} number {index}."
    turns = [
        (
            "<image>\nPlease provide a one-sentence caption for the provided remote sensing image in detail.",
            caption,
            "caption",
        ),
        (
            "What is the category of this remote sensing image? "
            "Answer the question using a single word or phrase.",
            label,
            "classification",
        ),
    ]
    conversations = []
    for human, answer, task in turns:
        conversations += [
            {"from": "human", "value": human, "task": task, "generated": True},
            {"from": "assistant", "value": answer, "task": task, "generated": True},
        ]
    return {
        "id": f"test/{image}",
        "image_root": root,
        "image": image,
        "width": width,
        "height": height,
        "sensor": "optical",
        "dataset": "test",
        "licence": "test",
        "split": "train",
        "tasks": ["caption", "classification"],
        "annotations": {"class": label},
        "conversations": conversations,
    }


def write_records(folder: Path, records: list[dict]) -> Path:
    """Write ``train.jsonl`` in ``folder`` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def aid_records(aid_root: Path, count: int) -> list[dict]:
    """Records for the first ``count`` images over AID classes (image root ``AID``)."""
    classes = sorted(p for p in aid_root.iterdir() if p.is_dir())
    records = []
    for i in range(count):
        folder = classes[i % len(classes)]
        image = sorted(folder.glob("*.jpg"))[i // len(classes)]
        with Image.open(image) as img:
            width, height = img.size
        records.append(_record(i, "AID", f"{folder.name}/{image.name}", folder.name.lower(), width, height))
    return records


def generated_records(folder: Path, count: int, seed: int = 0) -> list[dict]:
    """Records over ``count`` generated PNG images written under ``folder/images`` (image root ``images``)."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(count):
        name = f"scene_{i}.png"
        Image.fromarray(rng.integers(0, 256, (40 + 4 * i, 48, 3), dtype=np.uint8)).save(
            folder / "images" / name
        )
        records.append(_record(i, "images", name, ["farmland", "forest", "harbor"][i % 3], 48, 40 + 4 * i))
    return records


def overrides(records: Path, roots: dict[str, Path], output: Path, *extra: str) -> list[str]:
    """Command-line overrides pointing a tiny config at a record file and an output folder."""
    items = [f"data.sources=[mmrs={records}]", f"run.output_dir={output}", "run.tensorboard=false"]
    items += [f"data.image_roots.{name}={path}" for name, path in roots.items()]
    return [*items, *extra]


# A C++ ``std::terminate`` in a rank, the abort gloo's CPU collectives are known to hit now and then
# (pytorch/pytorch#65237, #90549). Seen once, in CI on 2026-12-04: rank 1 of the stage-2 FSDP run,
# after the feature-cache barrier, without a Python stack; not in 57 launches of that run here.
GLOO_ABORT = "terminate called without an active exception"


def torchrun_ranks(script: list[str], fresh: list[Path], timeout: int = 300):
    """``script`` (a file and its arguments) as two CPU ranks under ``torch.distributed.run``,
    through :func:`run_ranks`: this repository and its tests on the path, one thread a rank (two
    ranks on two cores), and accelerate told there is no GPU."""
    paths = [str(CONFIGS.parents[1]), str(Path(__file__).resolve().parent)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": "1"}
    env["ACCELERATE_USE_CPU"] = "true"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    launcher += ["--master_addr", "127.0.0.1"]
    return run_ranks(lambda port: [*launcher, "--master_port", str(port), *script], env, fresh, timeout)


def run_ranks(command: Callable[[int], list[str]], env: dict[str, str], fresh: list[Path], timeout=900):
    """Run ``command(port)``, a launcher of several gloo ranks meeting at ``port`` (a free one). A
    launch one of whose ranks died of :data:`GLOO_ABORT` runs once more, on another port with the
    ``fresh`` folders emptied (the second launch starts afresh: it does not resume) and a warning
    holding the first launch's stderr; a second abort is returned as it is. Ranks run with
    ``PYTHONFAULTHANDLER``: an abort prints every thread's Python stack."""
    env = {**env, "PYTHONFAULTHANDLER": "1"}
    done = subprocess.run(command(free_port()), env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0 and GLOO_ABORT in done.stderr:
        message = "a rank aborted in native code; the run is launched once more. Its stderr:\n"
        warnings.warn(message + done.stderr[-6000:], stacklevel=2)
        for folder in fresh:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        done = subprocess.run(command(free_port()), env=env, capture_output=True, text=True, timeout=timeout)
    return done
