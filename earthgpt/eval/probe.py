"""Linear probe: how much of the scene class a linear map reads off the model's frozen visual features.

The features are exactly what the projector sees: :class:`~earthgpt.model.vision.VisualPerception`
on the image preprocessed by the model's processor, ``(B, N, C)`` visual tokens (ViT multi-layer
patch tokens and CNN multi-scale maps on one grid), **mean-pooled over the N tokens** to ``(B, C)``.
The ViT's CLS token is not used: the model never sees it.

The probe (:func:`linear_probe`):

1. standardise every channel with the training mean and standard deviation (a channel that is
   constant in training is left centred, not divided);
2. multinomial logistic regression, ``mean cross-entropy + l2 / 2 · ‖W‖²`` (bias not penalised),
   fitted full-batch in float64 with L-BFGS (strong Wolfe line search, at most ``MAX_ITER``
   iterations) from zero weights on one CPU thread, so the same features give the same weights
   (a fixed thread count fixes the order of the sums; the problem is small, and on a busy machine
   one thread is also the fastest);
3. ``l2`` is picked from ``L2_GRID`` on a held-out fifth of the training items (items ``i`` with
   ``i % 5 == 4`` in the given order; records are sorted by id, so every class contributes); the
   best held-out accuracy wins, ties go to the larger ``l2``; then the probe is refitted on all
   training items with that ``l2`` and scored on the evaluated items.

Features are cached (:func:`cached_features`) in one ``.npz`` per (image list, encoder identity):
the identity hashes every tensor of the vision encoders, the preprocessing and the pooling.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from earthgpt.identity import file_stamp, module_fingerprint

POOLING = "mean over visual tokens"
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
HOLDOUT_EVERY = 5
MAX_ITER = 300


# ----------------------------------------------------------------------------- features


def pooled_features(vision: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """``(B, 3, S, S)`` normalised pixels → ``(B, C)``: the visual tokens mean-pooled over tokens."""
    tokens = vision(pixel_values)
    if tokens.ndim != 3:
        raise ValueError(
            f"expected visual tokens (B, N, C) from the vision module, got {tuple(tokens.shape)}"
        )
    return tokens.float().mean(dim=1)


def extract_features(
    images: Sequence[Path],
    read: Callable[[Path], np.ndarray],
    preprocess: Callable[[np.ndarray], torch.Tensor],
    vision: nn.Module,
    *,
    batch_size: int = 32,
    progress: bool = False,
) -> np.ndarray:
    """Pooled features ``(len(images), C)`` float32 of the images, in order: ``read`` gives the
    RGB uint8 image, ``preprocess`` the model's ``(3, S, S)`` tensor (the processor's
    ``preprocess_image``), ``vision`` the visual tokens."""
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(vision.parameters()).device
    chunks = []
    bar = tqdm(total=len(images), desc="visual features", unit="img", disable=not progress)
    for start in range(0, len(images), batch_size):
        batch = [preprocess(read(Path(p))) for p in images[start : start + batch_size]]
        with torch.no_grad():
            chunks.append(pooled_features(vision, torch.stack(batch).to(device)).cpu().numpy())
        bar.update(len(batch))
    bar.close()
    if not chunks:
        raise ValueError("extract_features got no images")
    return np.concatenate(chunks).astype(np.float32)


def encoder_identity(vision: nn.Module, config: Any) -> str:
    """Hex sha256 over the vision module's tensors (names, shapes, bytes), the preprocessing
    (``image_size``, ``image_mean``, ``image_std``, ``num_visual_tokens`` of ``config``) and the pooling."""
    keys = ("image_size", "image_mean", "image_std", "num_visual_tokens")
    described = {k: getattr(config, k) for k in keys}
    described["pooling"] = POOLING
    return module_fingerprint(vision, described)


def images_key(images: Sequence[Path], identity: str) -> str:
    """Hex sha256 over the encoder identity and each image's resolved path, size and mtime (ns)."""
    digest = hashlib.sha256(identity.encode())
    for image in images:
        digest.update(f"\n{file_stamp(image)}".encode())
    return digest.hexdigest()


def cached_features(
    images: Sequence[Path], identity: str, cache_dir: Path, compute: Callable[[], np.ndarray]
) -> tuple[np.ndarray, bool]:
    """The features of ``images`` from ``cache_dir/probe-<key>.npz`` (key: :func:`images_key`), else
    ``compute()`` them and store them there (written to a temporary name, then renamed). Returns
    ``(features, from_cache)``."""
    path = Path(cache_dir) / f"probe-{images_key(images, identity)[:24]}.npz"
    names = np.array([str(Path(p)) for p in images])
    if path.is_file():
        with np.load(path) as stored:
            if stored["images"].tolist() == names.tolist() and str(stored["identity"]) == identity:
                return stored["features"], True
    features = compute()
    if features.shape[0] != len(images):
        raise ValueError(f"compute() gave {features.shape[0]} feature rows for {len(images)} images")
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(temp, features=features, images=names, identity=np.array(identity))
    temp.replace(path)
    return features, False


# ----------------------------------------------------------------------------- the probe


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """``train`` and ``others`` centred and scaled by the training mean and std (float64)."""
    train = np.asarray(train, dtype=np.float64)
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std[std == 0] = 1.0
    return [(np.asarray(x, dtype=np.float64) - mean) / std for x in (train, *others)]


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fit_logistic(
    x: np.ndarray, y: np.ndarray, num_classes: int, l2: float, max_iter: int = MAX_ITER
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression (module doc): weights ``(C, K)`` and bias ``(K,)``, float64."""
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"expected features (n, C) and n labels, got {x.shape} and {len(y)} labels")
    features = torch.as_tensor(x, dtype=torch.float64)
    labels = torch.as_tensor(np.asarray(y), dtype=torch.long)
    weight = torch.zeros(features.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS(
        [weight, bias], max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
        history_size=20, line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        logits = features @ weight + bias
        loss = nn.functional.cross_entropy(logits, labels) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with _one_thread():
        optimiser.step(closure)
    return weight.detach(), bias.detach()


def predict(x: np.ndarray, weight: torch.Tensor, bias: torch.Tensor) -> np.ndarray:
    """Class indices of the highest logit (ties: the lower index)."""
    logits = torch.as_tensor(x, dtype=torch.float64) @ weight + bias
    return logits.argmax(dim=1).numpy()


@dataclass
class ProbeResult:
    """Accuracy of the fitted probe on the evaluated items and how it was chosen."""

    accuracy: float
    per_class: dict[str, float]
    predictions: list[str]
    l2: float
    holdout_accuracy: dict[float, float]
    n_train: int
    n_eval: int
    classes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (predictions left out)."""
        return {
            "accuracy": self.accuracy,
            "per_class_accuracy": self.per_class,
            "l2": self.l2,
            "holdout_accuracy": {str(k): v for k, v in self.holdout_accuracy.items()},
            "n_train": self.n_train,
            "n_eval": self.n_eval,
            "classes": len(self.classes),
            "pooling": POOLING,
        }


def choose_l2(
    x: np.ndarray, y: np.ndarray, num_classes: int, grid: Sequence[float] = L2_GRID
) -> dict[float, float]:
    """Held-out accuracy of each ``l2`` (fit on items ``i % 5 != 4``, score on the rest)."""
    held = np.arange(len(y)) % HOLDOUT_EVERY == HOLDOUT_EVERY - 1
    if held.all() or not held.any():
        raise ValueError(f"need at least {HOLDOUT_EVERY} training items to pick l2, got {len(y)}")
    fit_x, held_x = standardise(x[~held], x[held])
    scores = {}
    for l2 in grid:
        weight, bias = fit_logistic(fit_x, y[~held], num_classes, l2)
        scores[l2] = float((predict(held_x, weight, bias) == y[held]).mean())
    return scores


def linear_probe(
    train_x: np.ndarray,
    train_labels: Sequence[str],
    eval_x: np.ndarray,
    eval_labels: Sequence[str],
    grid: Sequence[float] = L2_GRID,
) -> ProbeResult:
    """Fit the probe on the training features and labels and score it on the evaluated ones."""
    classes = sorted(set(train_labels))
    index = {name: i for i, name in enumerate(classes)}
    y = np.array([index[name] for name in train_labels])
    holdout = choose_l2(np.asarray(train_x), y, len(classes), grid)
    l2 = max(holdout, key=lambda v: (holdout[v], v))
    fit_x, test_x = standardise(train_x, eval_x)
    weight, bias = fit_logistic(fit_x, y, len(classes), l2)
    predicted = [classes[i] for i in predict(test_x, weight, bias)]
    hits = [p == t for p, t in zip(predicted, eval_labels, strict=True)]
    per_class = {
        name: float(np.mean([h for h, t in zip(hits, eval_labels, strict=True) if t == name]))
        for name in sorted(set(eval_labels))
    }
    return ProbeResult(
        accuracy=float(np.mean(hits)) if hits else float("nan"), per_class=per_class,
        predictions=predicted, l2=l2, holdout_accuracy=holdout,
        n_train=len(train_labels), n_eval=len(eval_labels), classes=classes,
    )
