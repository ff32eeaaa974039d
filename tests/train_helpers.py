"""Tiny MMRS sets for the training tests: real AID images (shared data) or generated ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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
