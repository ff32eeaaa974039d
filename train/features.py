"""A disk cache of the frozen vision encoders' outputs (the projector's input), one file per image.

Both vision encoders are frozen in both stages, so their output for an image never changes during
training; the projector, which learns, runs on the cached tensor every step. The cache lives in
``<cache dir>/<fingerprint>/<aa>/<key>.safetensors``:

- ``fingerprint`` hashes what the features depend on besides the image: every tensor of the vision
  encoders (weights and buffers, bytes and shapes), their config (layers, strides, grid) and the
  preprocessing (image size, mean, std), and the dtype the features are stored in. Changing any of
  them selects a fresh folder: old entries are never read.
- ``key`` hashes the image file's resolved path, size and modification time (ns): rewriting an
  image invalidates its entry.

Entries are written to a temporary file and renamed into place, so a killed run never leaves a
half-written entry that a later run would read.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from earthgpt.identity import file_stamp, module_fingerprint

FEATURES = "features"


def vision_fingerprint(vision: nn.Module, model_config: object, dtype: torch.dtype) -> str:
    """Hex digest over the vision encoders' tensors, their config and the preprocessing (module doc)."""
    described = {
        key: getattr(model_config, key)
        for key in ("image_size", "num_visual_tokens", "image_mean", "image_std")
    }
    described["vit"] = {k: v for k, v in vars(model_config.vit).items() if k != "source"}
    described["cnn"] = {k: v for k, v in vars(model_config.cnn).items() if k != "source"}
    described["dtype"] = str(dtype)
    return module_fingerprint(vision, described)


def image_key(path: Path) -> str:
    """Hex digest of the image file's resolved path, size and mtime (ns)."""
    return hashlib.sha256(file_stamp(path).encode()).hexdigest()


class FeatureCache:
    """Cached vision features under ``root/<fingerprint[:16]>``; :meth:`__call__` reads one entry."""

    def __init__(self, root: str | Path, fingerprint: str) -> None:
        self.folder = Path(root) / fingerprint[:16]
        self.fingerprint = fingerprint

    def path_for(self, image: Path) -> Path:
        """Where the entry of ``image`` lives."""
        key = image_key(image)
        return self.folder / key[:2] / f"{key}.safetensors"

    def __contains__(self, image: Path) -> bool:
        return self.path_for(image).is_file()

    def __call__(self, image: Path) -> torch.Tensor:
        """The cached ``(N, C)`` features of ``image``; KeyError when missing."""
        entry = self.path_for(image)
        if not entry.is_file():
            raise KeyError(f"no cached vision features for {image} (expected {entry}); precompute first")
        return load_file(entry)[FEATURES]

    def put(self, image: Path, features: torch.Tensor) -> None:
        """Store ``(N, C)`` features of ``image`` atomically (temp file, then rename)."""
        entry = self.path_for(image)
        entry.parent.mkdir(parents=True, exist_ok=True)
        temp = entry.with_name(f".{entry.name}.{os.getpid()}.tmp")
        save_file(
            {FEATURES: features.detach().cpu().contiguous()},
            str(temp),
            metadata={"fingerprint": self.fingerprint, "image": Path(image).name},
        )
        os.replace(temp, entry)


def precompute(
    cache: FeatureCache,
    images: Sequence[Path],
    encode: Callable[[torch.Tensor], torch.Tensor],
    load_pixels: Callable[[Path], torch.Tensor],
    *,
    batch_size: int = 16,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
) -> int:
    """Encode the images missing from the cache (this rank's share: every ``world_size``-th) and store
    them; returns how many this rank wrote. ``encode`` maps a ``(B, 3, S, S)`` batch to ``(B, N, C)``.

    Two runs started together on an empty cache (an A/B on one machine) share the work: each walks
    its batches in its own order (seeded by the process id) and skips the images the other has
    written meanwhile, instead of both encoding every image."""
    unique = sorted({str(Path(p)) for p in images})
    mine = [Path(p) for p in unique[rank::world_size] if Path(p) not in cache]
    chunks = [mine[start : start + batch_size] for start in range(0, len(mine), batch_size)]
    random.Random(os.getpid()).shuffle(chunks)
    written = 0
    bar = tqdm(total=len(mine), desc="caching vision features", unit="img", disable=not progress)
    for chunk in chunks:
        todo = [p for p in chunk if p not in cache]  # another run may have written some since
        if todo:
            with torch.no_grad():
                features = encode(torch.stack([load_pixels(p) for p in todo]))
            for path, tensor in zip(todo, features, strict=True):
                cache.put(path, tensor)
            written += len(todo)
        bar.update(len(chunk))
    bar.close()
    return written
