"""Typed configuration of the EarthGPT model and the preset registry.

A config says which base components the model is made of (``source``: ``"bundled"``, a local
folder or a hub id; ``None`` means random initialisation at the stated sizes) and how they are
wired: which ViT layers and CNN strides feed the visual tokens, how many visual tokens there are,
which projector maps them to the LLM width.

Presets (``PRESETS``, ``get_preset``):

- ``tiny``: random weights, hidden sizes of 32, builds in well under a second; for tests. Its LLM
  vocabulary is 49,152 ids, the size of the SmolLM2 tokenizer, so the bundled SmolLM2 tokenizer can
  drive it; the ``<image>`` placeholder id may lie past the vocabulary (see ``image_token_id``).
- ``nano``: the offline default; DINOv2 ViT-S/14, EfficientNet-Lite0 and SmolLM2-135M-Instruct from
  packages (``source="bundled"``), 64 visual tokens (an 8×8 grid).
- ``7b`` / ``13b``: DINOv2-L/14, ConvNeXt-L and Llama-2-7B / 13B from the hub, 256 tokens (16×16).

``shrink_for_test`` keeps a preset's architecture types and wiring but makes every width and depth
tiny and every source random, so the wiring of the large presets can be tested on a CPU.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from earthgpt.config_dicts import dataclass_from_dict
from earthgpt.conversation import IMAGE_PLACEHOLDER

# The projections of a LLaMA self-attention block. Stage 1 trains all of them (the paper: every
# self-attention block); ``EarthGPTConfig.stage1_attention`` may keep fewer, e.g. to fit a size budget.
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
# The projections of a LLaMA MLP block; with ``EarthGPTConfig.stage2_lora_rank`` stage 2 may add
# low-rank adapters to them (and to attention projections).
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Output channels per stride (4, 8, 16, 32) at the stage ends of EfficientNet-Lite0; fixed by the
# architecture (width and depth multipliers of 1.0).
EFFICIENTNET_LITE0_CHANNELS = [24, 40, 112, 320]
CNN_STRIDES = (4, 8, 16, 32)
CNN_ARCHS = ("efficientnet-lite0", "convnext")
VIT_ARCHS = ("dinov2",)
LLM_ARCHS = ("llama",)


@dataclass
class ViTConfig:
    """The global-context branch: a DINOv2 ViT whose chosen layers become one token per patch.

    ``layers`` are 1-based indices into the encoder's layers (``hidden_states[i]`` is the output of
    layer ``i``; 0 would be the patch embeddings). ``image_size`` is the size the position
    embeddings were trained at (DINOv2: 518); inputs of other sizes are interpolated by the model.
    """

    arch: str = "dinov2"
    source: str | None = None
    layers: list[int] = field(default_factory=lambda: [3, 6, 9, 12])
    image_size: int = 518
    patch_size: int = 14
    hidden_size: int = 384
    num_layers: int = 12
    num_heads: int = 6

    def validate(self) -> None:
        """Raise ValueError when the fields contradict each other."""
        _check_choice("vit.arch", self.arch, VIT_ARCHS)
        if not self.layers:
            raise ValueError("vit.layers is empty: expected at least one 1-based layer index")
        bad = [i for i in self.layers if not 1 <= i <= self.num_layers]
        if bad:
            raise ValueError(f"vit.layers {bad} outside 1..{self.num_layers} (vit.num_layers)")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"vit.hidden_size {self.hidden_size} not divisible by vit.num_heads {self.num_heads}"
            )

    @property
    def out_channels(self) -> int:
        """Channels of the concatenated layer outputs."""
        return self.hidden_size * len(self.layers)


@dataclass
class CNNConfig:
    """The local-detail branch: a CNN whose feature maps at ``strides`` are concatenated.

    ``stage_channels`` and ``stage_depths`` describe the backbone at strides 4, 8, 16 and 32 (for
    ConvNeXt its ``hidden_sizes`` and ``depths``; EfficientNet-Lite0 is fixed by its name, so its
    channels are ``[24, 40, 112, 320]`` and its depths are not used).
    """

    arch: str = "efficientnet-lite0"
    source: str | None = None
    strides: list[int] = field(default_factory=lambda: list(CNN_STRIDES))
    stage_channels: list[int] = field(default_factory=lambda: list(EFFICIENTNET_LITE0_CHANNELS))
    stage_depths: list[int] = field(default_factory=list)

    def validate(self) -> None:
        """Raise ValueError when the fields contradict each other."""
        _check_choice("cnn.arch", self.arch, CNN_ARCHS)
        bad = [s for s in self.strides if s not in CNN_STRIDES]
        if not self.strides or bad:
            raise ValueError(f"cnn.strides {self.strides}: expected a non-empty subset of {CNN_STRIDES}")
        if len(self.stage_channels) != len(CNN_STRIDES):
            raise ValueError(f"cnn.stage_channels needs 4 entries (strides 4..32), got {self.stage_channels}")
        if self.arch == "efficientnet-lite0" and self.stage_channels != EFFICIENTNET_LITE0_CHANNELS:
            raise ValueError(
                f"efficientnet-lite0 has stage channels {EFFICIENTNET_LITE0_CHANNELS}, "
                f"config says {self.stage_channels}"
            )
        if self.arch == "convnext" and len(self.stage_depths) != len(CNN_STRIDES):
            raise ValueError(f"convnext needs 4 cnn.stage_depths, got {self.stage_depths}")

    @property
    def out_channels(self) -> int:
        """Channels of the concatenated feature maps."""
        return sum(self.stage_channels[CNN_STRIDES.index(s)] for s in self.strides)


@dataclass
class ProjectorConfig:
    """The learnable map from visual channels to the LLM width (``mlp2x_gelu`` or ``linear``).

    ``input_norm`` is ``"none"`` or ``"group_layernorm"``: a LayerNorm (with its own scale and shift,
    trained with the projector) over each source's channels on its own: each ViT layer and each
    CNN stage. The sources differ in scale by two orders of magnitude (DINOv2-S layer 3 has a
    per-channel std of about 0.02, layer 12 about 1.2 with offsets up to 26, the CNN about 2.6), so
    without it the projector starts out reading little but the last ViT layer and the CNN.

    ``position`` is ``"none"`` or ``"fourier2d"``: a learned map of each token's (x, y) centre on
    the grid, through fixed sines and cosines, added to the projected token (zero at
    initialisation), so that the LLM reads where a token lies in 2-D instead of working it out from
    its 1-D place in the sequence. Its input is the normalised centre, so it holds for any grid.

    ``context`` is ``"none"`` or ``"mean"``: a learned linear map of the image's mean token (after
    the input norm) added to every projected token (zero at initialisation), so that each token
    carries what the whole image shows, the summary a linear probe classifies scenes from, instead
    of the LLM having to gather it over all the tokens. ``in_dim × out_dim`` more weights."""

    type: str = "mlp2x_gelu"
    input_norm: str = "none"
    position: str = "none"
    context: str = "none"


@dataclass
class LLMConfig:
    """A LLaMA-architecture causal LM. The sizes build a random model and are checked against a
    pretrained one, so that a config always describes the network it names."""

    arch: str = "llama"
    source: str | None = None
    hidden_size: int = 576
    num_layers: int = 30
    num_heads: int = 9
    num_kv_heads: int = 3
    intermediate_size: int = 1536
    vocab_size: int = 49152
    max_position_embeddings: int = 8192
    rope_theta: float = 100000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True

    def validate(self) -> None:
        """Raise ValueError when the fields contradict each other."""
        _check_choice("llm.arch", self.arch, LLM_ARCHS)
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"llm: hidden_size {self.hidden_size}, num_heads {self.num_heads} and num_kv_heads "
                f"{self.num_kv_heads} must divide evenly"
            )


@dataclass
class EarthGPTConfig:
    """The whole model: both vision branches, the projector, the LLM and the visual token grid.

    ``num_visual_tokens`` must be a square; the visual grid is its square root on each side.
    ``image_token_id`` is the id of the ``<image>`` placeholder in the tokenizer; ``None`` means
    the first id past the LLM vocabulary (what adding one token to a tokenizer of exactly
    ``vocab_size`` entries gives). The LLM embeddings are never resized for it.
    ``stage1_attention`` names the attention projections stage 1 trains. ``stage2_tunes_stage1``
    makes stage 2 keep training what stage 1 trained (the projector, those projections and the
    RMSNorms) beside the scale/shift vectors: a deviation from the paper for a small LLM, where
    scale and shift alone are too little capacity (the delta checkpoint holds those tensors either
    way, so it does not grow). ``stage2_lora_rank`` > 0 gives each of the ``stage2_lora_modules``
    projections of every decoder layer a low-rank adapter in stage 2 (``tuning.ScaleShiftLinear``),
    trained beside scale and shift: the other deviation the nano may take (its MLPs hold half its
    weights and nothing else there learns); 0, the presets' value, is the paper's recipe.
    """

    name: str = "custom"
    vit: ViTConfig = field(default_factory=ViTConfig)
    cnn: CNNConfig = field(default_factory=CNNConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    image_size: int = 224
    num_visual_tokens: int = 64
    image_token: str = IMAGE_PLACEHOLDER
    image_token_id: int | None = None
    image_mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    image_std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    stage1_attention: list[str] = field(default_factory=lambda: list(ATTENTION_PROJECTIONS))
    stage2_tunes_stage1: bool = False
    stage2_lora_rank: int = 0
    stage2_lora_modules: list[str] = field(default_factory=lambda: list(MLP_PROJECTIONS))

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError when the fields contradict each other."""
        self.vit.validate()
        self.cnn.validate()
        self.llm.validate()
        side = math.isqrt(self.num_visual_tokens)
        if self.num_visual_tokens < 1 or side * side != self.num_visual_tokens:
            raise ValueError(f"num_visual_tokens must be a positive square, got {self.num_visual_tokens}")
        if self.image_size % self.vit.patch_size:
            raise ValueError(
                f"image_size {self.image_size} must be a multiple of the ViT patch size {self.vit.patch_size}"
            )
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError(f"image_mean/std need 3 values, got {self.image_mean} / {self.image_std}")
        bad = [p for p in self.stage1_attention if p not in ATTENTION_PROJECTIONS]
        if not self.stage1_attention or bad or len(set(self.stage1_attention)) != len(self.stage1_attention):
            raise ValueError(
                f"stage1_attention {self.stage1_attention}: expected distinct names among "
                f"{list(ATTENTION_PROJECTIONS)}"
            )
        if self.stage2_lora_rank < 0:
            raise ValueError(
                f"stage2_lora_rank must be 0 (no adapters) or positive, got {self.stage2_lora_rank}"
            )
        known = (*ATTENTION_PROJECTIONS, *MLP_PROJECTIONS)
        lora = self.stage2_lora_modules
        if not lora or any(p not in known for p in lora) or len(set(lora)) != len(lora):
            raise ValueError(
                f"stage2_lora_modules {lora}: expected distinct names among {list(known)}"
            )

    @property
    def grid_size(self) -> int:
        """Side of the visual token grid."""
        return math.isqrt(self.num_visual_tokens)

    @property
    def resolved_image_token_id(self) -> int:
        """``image_token_id``, or the first id past the LLM vocabulary when unset."""
        return self.llm.vocab_size if self.image_token_id is None else self.image_token_id

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EarthGPTConfig:
        """Build from ``to_dict`` output; unknown keys and values of the wrong type raise ValueError
        naming them."""
        return dataclass_from_dict(cls, data, "EarthGPTConfig")

    def to_json(self) -> str:
        """The config as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> EarthGPTConfig:
        """Parse ``to_json`` output."""
        return cls.from_dict(json.loads(text))


def _check_choice(name: str, value: str, known: tuple[str, ...]) -> None:
    if value not in known:
        raise ValueError(f"unknown {name} {value!r}; known: {', '.join(known)}")


# ----------------------------------------------------------------------------- presets


def _tiny() -> EarthGPTConfig:
    return EarthGPTConfig(
        name="tiny",
        vit=ViTConfig(layers=[2, 4], image_size=56, hidden_size=32, num_layers=4, num_heads=4),
        cnn=CNNConfig(arch="convnext", stage_channels=[8, 16, 32, 64], stage_depths=[1, 1, 1, 1]),
        llm=LLMConfig(
            hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64,
            vocab_size=49152, max_position_embeddings=2048,
        ),
        image_size=56,
        num_visual_tokens=16,
    )


def _nano() -> EarthGPTConfig:
    return EarthGPTConfig(
        name="nano",
        vit=ViTConfig(source="bundled", layers=[3, 6, 9, 12], hidden_size=384, num_layers=12, num_heads=6),
        cnn=CNNConfig(arch="efficientnet-lite0", source="bundled"),
        llm=LLMConfig(source="bundled"),  # SmolLM2-135M-Instruct
        image_size=224,
        num_visual_tokens=64,
        projector=ProjectorConfig(input_norm="group_layernorm"),
    )


def _llama2_vision(name: str, llm: LLMConfig) -> EarthGPTConfig:
    return EarthGPTConfig(
        name=name,
        vit=ViTConfig(
            source="facebook/dinov2-large", layers=[6, 12, 18, 24],
            hidden_size=1024, num_layers=24, num_heads=16,
        ),
        cnn=CNNConfig(
            arch="convnext", source="facebook/convnext-large-224",
            stage_channels=[192, 384, 768, 1536], stage_depths=[3, 3, 27, 3],
        ),
        llm=llm,
        image_size=224,
        num_visual_tokens=256,
        projector=ProjectorConfig(input_norm="group_layernorm"),
    )


def _llama2(source: str, hidden: int, layers: int, intermediate: int) -> LLMConfig:
    return LLMConfig(
        source=source, hidden_size=hidden, num_layers=layers, num_heads=hidden // 128,
        num_kv_heads=hidden // 128, intermediate_size=intermediate, vocab_size=32000,
        max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
    )


PRESETS: dict[str, Callable[[], EarthGPTConfig]] = {
    "tiny": _tiny,
    "nano": _nano,
    "7b": lambda: _llama2_vision("7b", _llama2("meta-llama/Llama-2-7b-hf", 4096, 32, 11008)),
    "13b": lambda: _llama2_vision("13b", _llama2("meta-llama/Llama-2-13b-hf", 5120, 40, 13824)),
}


def get_preset(name: str) -> EarthGPTConfig:
    """A fresh config for a preset name; unknown names raise ValueError listing the presets."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]()


def shrink_for_test(config: EarthGPTConfig) -> EarthGPTConfig:
    """A copy with the same architecture types and wiring at tiny widths, all sources random.

    ViT layer choices keep their relative depth (layer 6 of 24 becomes layer 1 of 4), attention
    keeps its kind (multi-head stays multi-head, grouped-query stays grouped), a ConvNeXt keeps four
    stages; EfficientNet-Lite0 has fixed sizes and stays as it is.
    """
    small = copy.deepcopy(config)
    vit_layers = 4
    small.vit = dataclasses.replace(
        config.vit, source=None, hidden_size=32, num_layers=vit_layers, num_heads=4, image_size=56,
        layers=sorted({max(1, round(i * vit_layers / config.vit.num_layers)) for i in config.vit.layers}),
    )
    small.cnn = dataclasses.replace(config.cnn, source=None)
    if config.cnn.arch == "convnext":
        small.cnn.stage_channels, small.cnn.stage_depths = [8, 16, 32, 64], [1, 1, 1, 1]
    grouped = config.llm.num_kv_heads < config.llm.num_heads
    small.llm = dataclasses.replace(
        config.llm, source=None, hidden_size=32, num_layers=2, num_heads=4,
        num_kv_heads=2 if grouped else 4, intermediate_size=64,
    )
    small.image_size = 56
    small.num_visual_tokens = 16
    small.name = f"{config.name}-shrunk"
    small.validate()
    return small
