"""Image + conversation → the tensors :class:`~earthgpt.model.earthgpt.EarthGPT` consumes.

:class:`EarthGPTProcessor` owns everything between text and tensors: it adds the ``<image>``
placeholder to the tokenizer as a special token (the LLM's embeddings are never resized; the model
splices visual features in at those positions), resizes and normalises images, tokenizes
conversations through :mod:`earthgpt.conversation`. Batches are padded by
:func:`earthgpt.data.torch_dataset.collate`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from earthgpt.config import EarthGPTConfig
from earthgpt.conversation import Conversation, end_of_turn_ids, tokenize_for_training, tokenize_prompt


class EarthGPTProcessor:
    """Turns an RGB image and a :class:`Conversation` into ``input_ids``, ``pixel_values`` (and ``labels``).

    ``tokenizer`` is the LLM's tokenizer (it gains the image token as an extra special token);
    ``config`` gives the image size, normalisation, number of visual tokens and the image token.
    """

    def __init__(self, tokenizer: Any, config: EarthGPTConfig) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.image_token = config.image_token
        if self.image_token not in tokenizer.get_vocab():
            tokenizer.add_special_tokens(
                {"extra_special_tokens": [self.image_token]}, replace_extra_special_tokens=False
            )
        self.image_token_id = int(tokenizer.convert_tokens_to_ids(self.image_token))
        expected = config.resolved_image_token_id
        if self.image_token_id != expected:
            raise ValueError(
                f"the tokenizer gives {self.image_token!r} id {self.image_token_id} but the model config "
                f"expects {expected} (config.image_token_id={config.image_token_id}, "
                f"llm.vocab_size={config.llm.vocab_size}); set config.image_token_id to match the tokenizer"
            )
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token to pad batches with")
        self.pad_token_id = int(pad)
        self.stop_token_ids = end_of_turn_ids(tokenizer)
        self._mean = torch.tensor(config.image_mean, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(config.image_std, dtype=torch.float32).view(3, 1, 1)

    def new_conversation(self, system: str | None = None) -> Conversation:
        """An empty conversation that uses this processor's image token."""
        return Conversation(system=system, image_token=self.image_token)

    def preprocess_image(self, image: np.ndarray | Image.Image) -> torch.Tensor:
        """An RGB ``uint8`` H×W×3 image → a normalised ``(3, S, S)`` float tensor, S = ``config.image_size``.

        The whole image is resized (PIL bicubic, no crop) so that grid box coordinates refer to the
        image the user gave.
        """
        if isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
        if not isinstance(image, np.ndarray):
            raise TypeError(
                f"expected an RGB image as a numpy array or PIL image, got {type(image).__name__}"
            )
        if image.dtype != np.uint8:
            raise ValueError(
                f"expected a uint8 RGB image, got dtype {image.dtype}; convert rasters with "
                "earthgpt.sensors.to_model_rgb first"
            )
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an H×W×3 RGB image, got shape {tuple(image.shape)}")
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"image is empty: shape {tuple(image.shape)}")
        size = self.config.image_size
        resized = Image.fromarray(np.ascontiguousarray(image)).resize((size, size), Image.Resampling.BICUBIC)
        pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (pixels - self._mean) / self._std

    def tokenize(self, conversation: Conversation, *, for_training: bool = False) -> dict[str, list[int]]:
        """Token ids (``input_ids``, plus ``labels`` when ``for_training``), the placeholder expanded."""
        if conversation.image_token != self.image_token:
            raise ValueError(
                f"conversation uses image token {conversation.image_token!r}, processor {self.image_token!r}"
            )
        n = self.config.num_visual_tokens
        if for_training:
            ids, labels = tokenize_for_training(conversation, self.tokenizer, self.image_token, n)
            return {"input_ids": ids, "labels": labels}
        return {"input_ids": tokenize_prompt(conversation, self.tokenizer, self.image_token, n)}

    def __call__(
        self, image: np.ndarray | Image.Image, conversation: Conversation, for_training: bool = False
    ) -> dict[str, torch.Tensor]:
        """One example, unbatched: ``input_ids`` (T,), ``attention_mask`` (T,), ``pixel_values`` (3,S,S),
        and ``labels`` (T,) when ``for_training``. Without ``for_training`` the ids end with the
        generation prompt. Batch examples with :func:`earthgpt.data.torch_dataset.collate`."""
        tokens = self.tokenize(conversation, for_training=for_training)
        ids = torch.tensor(tokens["input_ids"], dtype=torch.long)
        out = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "pixel_values": self.preprocess_image(image),
        }
        if for_training:
            out["labels"] = torch.tensor(tokens["labels"], dtype=torch.long)
        return out
