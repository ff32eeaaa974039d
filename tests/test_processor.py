"""EarthGPTProcessor: image preprocessing and tokenization with the expanded placeholder."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_conversation import tiny_tokenizer

from earthgpt.config import get_preset
from earthgpt.conversation import IGNORE_INDEX, Conversation
from earthgpt.processor import EarthGPTProcessor


def tiny_processor() -> EarthGPTProcessor:
    """The tiny preset resized to the tiny tokenizer, so ``<image>`` is the first id past the vocabulary."""
    tokenizer = tiny_tokenizer()
    config = get_preset("tiny")
    config.llm = dataclasses.replace(config.llm, vocab_size=tokenizer.convert_tokens_to_ids("<image>"))
    return EarthGPTProcessor(tokenizer, config)


@pytest.fixture(scope="module")
def processor() -> EarthGPTProcessor:
    return tiny_processor()


def test_image_token_is_a_single_special_token(processor):
    tok = processor.tokenizer
    assert tok.convert_tokens_to_ids("<image>") == processor.image_token_id
    assert tok("a <image> b", add_special_tokens=False)["input_ids"].count(processor.image_token_id) == 1
    assert processor.image_token_id == processor.config.resolved_image_token_id
    EarthGPTProcessor(tok, processor.config)  # adding it again is a no-op


def test_mismatched_image_token_id_is_reported():
    config = get_preset("tiny")  # vocabulary of 49,152: expects <image> at 49152
    with pytest.raises(ValueError, match=r"set config\.image_token_id"):
        EarthGPTProcessor(tiny_tokenizer(), config)


def test_preprocess_resizes_and_normalises(processor):
    size = processor.config.image_size
    image = np.zeros((30, 70, 3), dtype=np.uint8)
    image[..., 0] = 255
    pixels = processor.preprocess_image(image)
    assert pixels.shape == (3, size, size) and pixels.dtype == torch.float32
    mean, std = processor.config.image_mean, processor.config.image_std
    assert torch.allclose(pixels[0], torch.full((size, size), (1 - mean[0]) / std[0]), atol=1e-5)
    assert torch.allclose(pixels[1], torch.full((size, size), -mean[1] / std[1]), atol=1e-5)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((8, 8), np.uint8), "H×W×3"),
        (np.zeros((8, 8, 4), np.uint8), "H×W×3"),
        (np.zeros((8, 8, 3), np.float32), "uint8"),
        (np.zeros((0, 8, 3), np.uint8), "empty"),
        ([[1, 2, 3]], "numpy array or PIL"),
    ],
)
def test_bad_images_are_rejected_with_a_clear_message(processor, image, message):
    with pytest.raises((ValueError, TypeError), match=message):
        processor.preprocess_image(image)


def test_call_for_inference_and_training(processor):
    image = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    conv = Conversation().add_human("What is this?")
    prompt = processor(image, conv)
    assert set(prompt) == {"input_ids", "attention_mask", "pixel_values"}
    n = processor.config.num_visual_tokens
    assert int((prompt["input_ids"] == processor.image_token_id).sum()) == n
    text = processor.tokenizer.decode(prompt["input_ids"])
    assert text.endswith("<|im_start|>assistant\n")

    conv.add_assistant("airport")
    train = processor(image, conv, for_training=True)
    labelled = train["labels"][train["labels"] != IGNORE_INDEX]
    assert processor.tokenizer.decode(labelled) == "airport<|im_end|>"
    assert train["input_ids"][: len(prompt["input_ids"])].tolist() == prompt["input_ids"].tolist()
