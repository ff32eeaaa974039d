"""The module the training loop runs and accelerate wraps: cached or live vision features → loss."""

from __future__ import annotations

import torch
from torch import nn

from earthgpt.model.earthgpt import EarthGPT


class TrainingModule(nn.Module):
    """The model as accelerate wraps it: vision (or cached vision features) → projector → LLM loss."""

    def __init__(self, model: EarthGPT) -> None:
        super().__init__()
        self.model = model

    def tie_weights(self) -> None:
        """Tie the LLM's output embeddings to its input ones again, when its config ties them
        (accelerate calls this around moving the model to the meta device under FSDP2's
        ``cpu_ram_efficient_loading``, which unties them on the processes that held real weights)."""
        llm = self.model.llm
        if not llm.config.tie_word_embeddings:
            return
        head = llm.get_output_embeddings()
        head = getattr(head, "base", head)  # stage 2 wraps the LM head in a ScaleShiftLinear
        head.weight = llm.get_input_embeddings().weight

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The cross-entropy summed over the answer tokens of this micro-batch (not averaged: the
        loop divides by the answer tokens of the whole global batch, ``train/steps.py``)."""
        if vision_features is None:
            vision_features = self.model.vision(pixel_values)
        weight = next(self.model.projector.parameters())
        image_features = self.model.projector(vision_features.to(weight.device, weight.dtype))
        out = self.model(
            input_ids, attention_mask=attention_mask, image_features=image_features, labels=labels,
            answer_logits_only=True, loss_reduction="sum",
        )
        return out.loss
