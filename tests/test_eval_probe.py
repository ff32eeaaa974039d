"""Linear probe: separable features reach 100 %, random labels stay near chance, features of the
tiny random model on real AID images, the feature cache, and the CLI path with the probe."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from test_processor import tiny_processor

from earthgpt.commands import baselines as command
from earthgpt.config import get_preset
from earthgpt.eval.predictor import read_rgb
from earthgpt.eval.probe import (
    cached_features,
    encoder_identity,
    extract_features,
    fit_logistic,
    linear_probe,
    predict,
    standardise,
)
from earthgpt.model.vision import build_visual_perception

GRID = (0.1, 1.0)  # a short l2 grid of well-conditioned fits keeps the tests fast


def blobs(rng: np.random.Generator, n: int, centres: np.ndarray) -> tuple[np.ndarray, list[str]]:
    y = np.arange(n) % len(centres)
    return centres[y] + rng.normal(size=(n, centres.shape[1])), [f"class {i}" for i in y]


def test_separable_features_are_classified_perfectly():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 6
    train_x, train_y = blobs(rng, 120, centres)
    eval_x, eval_y = blobs(rng, 40, centres)
    result = linear_probe(train_x, train_y, eval_x, eval_y, grid=GRID)
    assert result.accuracy == 1.0
    assert result.per_class == {f"class {i}": 1.0 for i in range(4)}
    assert result.l2 in GRID and result.n_train == 120 and result.n_eval == 40


def test_random_labels_stay_near_chance():
    rng = np.random.default_rng(1)
    train_x, eval_x = rng.normal(size=(200, 32)), rng.normal(size=(400, 32))
    train_y = [f"c{i}" for i in rng.integers(0, 4, 200)]
    eval_y = [f"c{i}" for i in rng.integers(0, 4, 400)]
    result = linear_probe(train_x, train_y, eval_x, eval_y, grid=GRID)
    assert 0.15 < result.accuracy < 0.35  # chance is 0.25; 400 items give a std of about 0.02


def test_fit_is_deterministic_and_standardise_uses_train_statistics():
    rng = np.random.default_rng(2)
    x, labels = blobs(rng, 60, rng.normal(size=(3, 5)) * 8)
    y = np.array([int(name.split()[1]) for name in labels])
    train, other = standardise(x, x + 1)
    assert np.allclose(train.mean(axis=0), 0) and np.allclose(other.mean(axis=0), 1 / x.std(axis=0))
    first, second = fit_logistic(train, y, 3, 0.1), fit_logistic(train, y, 3, 0.1)
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(first, second, strict=True))
    assert (predict(train, *first) == y).mean() == 1.0


@pytest.fixture(scope="module")
def tiny_vision():
    config = get_preset("tiny")
    return build_visual_perception(config, pretrained=False), config


def aid_images(shared_data):
    folder = shared_data / "aid" / "AID"
    return [sorted((folder / cls).glob("*.jpg"))[0] for cls in ("Airport", "Beach")]


def test_features_of_the_tiny_model_on_real_aid_images(shared_data, tiny_vision):
    vision, _ = tiny_vision
    images = aid_images(shared_data)
    features = extract_features(images, read_rgb, tiny_processor().preprocess_image, vision, batch_size=1)
    assert features.shape == (2, vision.out_channels) and features.dtype == np.float32
    assert np.isfinite(features).all() and not np.allclose(features[0], features[1])
    # the pooled features are the mean of exactly the tokens the projector sees
    pixels = tiny_processor().preprocess_image(read_rgb(images[0]))[None]
    assert np.allclose(features[0], vision(pixels)[0].mean(dim=0).numpy(), atol=1e-6)


def test_feature_cache_reads_back_and_keys_on_encoder(shared_data, tiny_vision, tmp_path):
    vision, config = tiny_vision
    images = aid_images(shared_data)
    identity = encoder_identity(vision, config)
    calls = []

    def compute() -> np.ndarray:
        calls.append(1)
        return np.arange(2 * 3, dtype=np.float32).reshape(2, 3)

    first, hit = cached_features(images, identity, tmp_path, compute)
    again, hit_again = cached_features(images, identity, tmp_path, compute)
    assert (hit, hit_again, len(calls)) == (False, True, 1) and np.array_equal(first, again)
    other = build_visual_perception(config, pretrained=False)
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    assert encoder_identity(other, config) != identity
    cached_features(images, encoder_identity(other, config), tmp_path, compute)
    assert len(calls) == 2


def test_cli_probe_on_real_aid_records(shared_data, tiny_vision, tmp_path, monkeypatch):
    """The whole ``--probe`` path with the tiny random model on 8 AID images of 2 classes."""
    vision, config = tiny_vision
    preprocess = tiny_processor().preprocess_image
    monkeypatch.setattr(command, "load_vision", lambda model: (vision, preprocess, config))
    folder = shared_data / "aid" / "AID"
    data = tmp_path / "set"
    data.mkdir()
    for split, picks in (("train", slice(0, 5)), ("val", slice(5, 8))):
        lines = []
        for cls, name in (("Airport", "airport"), ("Beach", "beach")):
            for path in sorted((folder / cls).glob("*.jpg"))[picks]:
                convo = [
                    {"from": "human", "value": "<image>\nclass?", "task": "classification"},
                    {"from": "assistant", "value": name, "task": "classification"},
                ]
                lines.append(json.dumps({
                    "id": f"aid/{cls}/{path.stem}", "split": split, "sensor": "optical", "dataset": "aid",
                    "image_root": "aid", "image": f"AID/{cls}/{path.name}", "conversations": convo,
                }))
        (data / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    out = tmp_path / "report.json"
    args = ["--data", str(data), "--out", str(out), "--probe", "--model", "tiny", "--no-progress",
            "--cache", str(tmp_path / "cache"), "--image-root", f"aid={shared_data / 'aid'}"]
    assert command.run(parser.parse_args(args)) == 0
    probe = json.loads(out.read_text())["probe"]
    assert (probe["n_train"], probe["n_eval"], probe["classes"]) == (10, 6, 2)
    assert probe["report"]["tasks"]["classification"]["all"]["accuracy"] == pytest.approx(probe["accuracy"])
    assert "Linear probe" in out.with_suffix(".md").read_text()
