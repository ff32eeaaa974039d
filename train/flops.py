"""Model FLOPs per training step and model FLOPs utilisation (MFU).

The convention (model FLOPs: what the algorithm needs, not what the hardware ran; activation
recomputation from gradient checkpointing is not counted). One multiply-add is 2 FLOPs. For a
batch with ``T`` non-padding tokens (text and visual) in sequences of length ``s``, ``I`` images:

- LLM, every token: forward ``2·N_llm`` (``N_llm``: weights of every matmul of the LLM, LM head
  included, input embeddings excluded since a lookup is no matmul); backward to the activations
  ``2·N_llm`` (always needed: the projector at the bottom learns in stage 1, scale/shift vectors in
  every layer learn in stage 2); backward to the weights ``2·N_llm_trainable`` (only matmul weights
  that learn: stage 1 the attention projections, stage 2 none: scale/shift are element-wise and
  negligible). Attention scores (no weights): forward ``4·L·d·s``, backward ``8·L·d·s``
  (``L`` layers, width ``d``): ``12·L·d·s`` per token, PaLM's term.
  So ``LLM = T · (4·N_llm + 2·N_llm_trainable + 12·L·d·s)``; with everything trainable this is
  the usual ``6N + 12·L·d·s``.
- Projector, per visual token: forward ``2·N_proj`` plus weight gradients ``2·N_proj`` (its input
  comes from frozen encoders, so no input gradient): ``4·N_proj``.
- Vision encoders, per image, forward only (frozen, no backward): measured once with
  ``torch.utils.flop_counter.FlopCounterMode`` on one image (convolutions included); zero when the
  features come from the cache.

MFU = model FLOPs per second / (peak FLOP/s per device × devices). The peak is the dense bf16/fp16
tensor-core figure from :data:`PEAK_TFLOPS` for the device name, or ``run.peak_tflops``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# Dense (no sparsity) bf16/fp16 tensor-core peak in TFLOP/s, from the vendors' data sheets.
# Looked up by the words of torch.cuda.get_device_name(); first entry whose words all appear wins.
PEAK_TFLOPS: list[tuple[tuple[str, ...], float]] = [
    (("H200",), 989.0),
    (("H100", "PCIE"), 756.0),
    (("H100",), 989.0),
    (("GH200",), 989.0),
    (("A100",), 312.0),
    (("A800",), 312.0),
    (("L40S",), 362.0),
    (("L40",), 181.0),
    (("L4",), 121.0),
    (("A10G",), 70.0),
    (("A10",), 125.0),
    (("V100",), 125.0),
    (("4090",), 165.0),
    (("3090",), 71.0),
    (("MI300X",), 1307.0),
    (("MI250X",), 383.0),
]


def peak_tflops_for(device_name: str) -> float | None:
    """The table's peak for a device name (``"NVIDIA H100 80GB HBM3"`` → 989), or None when unknown."""
    words = set(device_name.upper().replace("-", " ").split())
    for required, tflops in PEAK_TFLOPS:
        if all(word in words for word in required):
            return tflops
    return None


@dataclass(frozen=True)
class FlopModel:
    """The counts the formula needs (see the module doc)."""

    llm_matmul: int
    llm_matmul_trainable: int
    projector: int
    layers: int
    width: int
    vision_per_image: float

    def step_flops(self, tokens: int, visual_tokens: int, seq_len: int, images_encoded: int) -> float:
        """Model FLOPs of one training step over ``tokens`` (non-padding) tokens."""
        per_token = (
            4 * self.llm_matmul + 2 * self.llm_matmul_trainable + 12 * self.layers * self.width * seq_len
        )
        return float(
            tokens * per_token + visual_tokens * 4 * self.projector + images_encoded * self.vision_per_image
        )


def _matmul_weights(module: nn.Module) -> tuple[int, int]:
    """(all, trainable) element counts of ``nn.Linear`` weights, each tensor once."""
    seen: set[int] = set()
    total = trainable = 0
    for sub in module.modules():
        if isinstance(sub, nn.Linear) and id(sub.weight) not in seen:
            seen.add(id(sub.weight))
            total += sub.weight.numel()
            trainable += sub.weight.numel() if sub.weight.requires_grad else 0
    return total, trainable


def vision_forward_flops(
    vision: nn.Module, image_size: int, device: torch.device, dtype: torch.dtype
) -> float:
    """Forward FLOPs of the vision encoders on one image, counted by ``FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    pixels = torch.zeros(1, 3, image_size, image_size, device=device, dtype=dtype)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        vision(pixels)
    return float(counter.get_total_flops())


def flop_model(model: nn.Module, vision_per_image: float) -> FlopModel:
    """Counts for an ``EarthGPT`` (after ``apply_stage``), with the measured vision FLOPs per image."""
    llm_all, llm_trainable = _matmul_weights(model.llm)
    projector = sum(p.numel() for n, p in model.projector.named_parameters() if n.endswith("weight"))
    config = model.config.llm
    return FlopModel(
        llm_all, llm_trainable, projector, config.num_layers, config.hidden_size, vision_per_image
    )


def mfu(flops_per_second: float, peak_tflops: float | None, num_devices: int) -> float | None:
    """Model FLOPs utilisation in [0, 1], or None without a peak."""
    if not peak_tflops:
        return None
    return flops_per_second / (peak_tflops * 1e12 * num_devices)
