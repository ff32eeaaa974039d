"""EarthGPT: frozen visual perception → learnable projector → visual tokens spliced into a LLaMA.

This module only glues tensors: the processor (``earthgpt/processor.py``) expands each ``<image>``
in the text into ``num_visual_tokens`` placeholder ids, and ``EarthGPT.embed`` writes one visual
token over each placeholder. The placeholder id may lie past the LLM vocabulary: it is embedded as
id 0 and then overwritten, so the LLM's embeddings are never resized.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from earthgpt.config import EarthGPTConfig, LLMConfig
from earthgpt.identity import combine_base_identity, module_state_identity
from earthgpt.model.projector import build_projector
from earthgpt.model.vision import VisualPerception, build_visual_perception

IGNORE_INDEX = -100


class EarthGPT(nn.Module):
    """The multimodal model: ``vision`` (frozen), ``projector``, ``llm`` (a LlamaForCausalLM).

    ``stage`` records the last training stage applied (0 none, 1, 2; see ``earthgpt.model.tuning``);
    ``tokenizer`` is the LLM's tokenizer when the LLM was loaded pretrained, else None.
    ``pretrained_base``, ``seed`` and ``dtype`` say how the base components were made, and
    ``base_identity`` is the identity of a random base, taken when it was built (before any
    training); a pretrained base's identity is read from its weight files when needed.
    """

    def __init__(
        self,
        config: EarthGPTConfig,
        vision: VisualPerception,
        projector: nn.Module,
        llm: nn.Module,
        tokenizer: Any = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.vision = vision
        self.projector = projector
        self.llm = llm
        self.tokenizer = tokenizer
        self.image_token_id = config.resolved_image_token_id
        self.stage = 0
        self.pretrained_base = False
        self.seed = 0
        self.dtype = torch.float32
        self.base_identity: dict | None = None

    @classmethod
    def from_config(
        cls,
        config: EarthGPTConfig,
        *,
        pretrained: bool,
        load_4bit: bool = False,
        load_8bit: bool = False,
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
        keep_unquantized: Sequence[str] = (),
        empty: bool = False,
    ) -> EarthGPT:
        """Build the model: base components pretrained (``loaders.load_*``) or random at the config's
        sizes. The projector is always freshly initialised; random parts draw from ``seed`` without
        touching the global random state, so the same call gives the same weights.
        ``keep_unquantized`` names LLM modules (e.g. ``q_proj``) that 4/8-bit loading leaves in
        ``dtype``: the ones a trained delta replaces.

        Every part is created and initialised in ``dtype`` (never float32 first, then cast), and a
        pretrained part is read from its files straight into ``dtype`` (transformers builds it on
        the meta device). ``empty`` (random bases only) builds the parameters on the meta device,
        with no memory and no initialisation, for a caller that then takes every tensor from a full
        checkpoint (``loaders.assign_weights``); such a model has no ``base_identity``."""
        if load_4bit and load_8bit:
            raise ValueError("choose one of load_4bit and load_8bit, not both")
        quantization = "4bit" if load_4bit else "8bit" if load_8bit else None
        if quantization and not pretrained:
            raise ValueError(f"{quantization} quantization needs a pretrained LLM (pretrained=True)")
        if empty and pretrained:
            raise ValueError("empty=True builds a random base's architecture; use pretrained=False")
        with torch.random.fork_rng(devices=[]), _default_dtype(dtype), _meta_parameters(empty):
            torch.manual_seed(seed)
            vision = build_visual_perception(config, pretrained=pretrained, dtype=dtype)
            llm, tokenizer = _build_llm(
                config.llm, pretrained=pretrained, dtype=dtype, quantization=quantization,
                keep_unquantized=keep_unquantized,
            )
            projector = build_projector(
                config.projector, vision.out_channels, config.llm.hidden_size, vision.channel_groups
            )
        if empty:
            llm.tie_weights()  # the meta build gives each name its own parameter
        model = cls(config, vision, projector.to(dtype), llm, tokenizer)
        model.pretrained_base, model.seed, model.dtype = pretrained, seed, dtype
        if not pretrained and not empty:
            model.base_identity = _random_base_identity(model)
        model.requires_grad_(False)
        return model.eval()

    @property
    def device(self) -> torch.device:
        """Device of the projector (where visual tokens are made)."""
        return next(self.projector.parameters()).device

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised pixels → visual tokens ``(B, num_visual_tokens, D_llm)``."""
        tokens = self.vision(pixel_values)
        first = next(self.projector.parameters())
        return self.projector(tokens.to(device=first.device, dtype=first.dtype))

    def embed(self, input_ids: torch.Tensor, image_features: torch.Tensor | None = None) -> torch.Tensor:
        """Text embeddings with the visual tokens written over the image placeholders, in order.

        ``image_features`` is ``(B_img, N, D)``; its ``B_img * N`` vectors fill the placeholder
        positions of ``input_ids`` row by row.
        """
        is_image = input_ids == self.image_token_id
        num_tokens = int(is_image.sum())
        num_features = 0 if image_features is None else image_features.shape[0] * image_features.shape[1]
        if num_tokens != num_features:
            raise ValueError(
                "Image features and image tokens do not match: "
                f"tokens: {num_tokens}, features: {num_features}"
            )
        text_ids = input_ids.masked_fill(is_image, 0)
        vocab = self.llm.get_input_embeddings().num_embeddings
        if text_ids.numel() and (int(text_ids.max()) >= vocab or int(text_ids.min()) < 0):
            raise ValueError(
                f"token ids must lie in 0..{vocab - 1} (the LLM vocabulary) or be the image id "
                f"{self.image_token_id}; got min {int(text_ids.min())}, max {int(text_ids.max())}"
            )
        embeddings = self.llm.get_input_embeddings()(text_ids)
        if image_features is None or num_tokens == 0:
            return embeddings
        if image_features.shape[-1] != embeddings.shape[-1]:
            raise ValueError(
                f"image features have width {image_features.shape[-1]}, "
                f"the LLM expects {embeddings.shape[-1]}"
            )
        features = image_features.reshape(-1, embeddings.shape[-1]).to(embeddings.device, embeddings.dtype)
        return embeddings.masked_scatter(is_image.unsqueeze(-1), features)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        past_key_values: Any = None,
        use_cache: bool = False,
        position_ids: torch.Tensor | None = None,
        answer_logits_only: bool = False,
        loss_reduction: str = "mean",
        logits_to_keep: int = 0,
    ) -> CausalLMOutputWithPast:
        """Run the LLM on text with spliced visual tokens.

        Give either ``pixel_values`` (encoded here) or precomputed ``image_features``. ``labels``
        use -100 for positions without loss (the image placeholders are always masked); the loss
        is the LLM's shifted cross-entropy. With ``past_key_values`` (a transformers Cache) and no
        image placeholder in ``input_ids``, only the text is embedded and any images are ignored:
        they are already in the cache. The returned cache is ``output.cache``.

        ``answer_logits_only`` (training): the LM head runs only at the positions that predict a
        labelled token, so ``output.logits`` is ``(n_answer_tokens, vocab)`` instead of
        ``(B, T, vocab)``; the loss is the same. Answers are a small part of each sequence and the
        head (576 × 49,152 in nano) is a large part of the compute. With it, ``loss_reduction``
        ``"sum"`` gives the summed cross-entropy over the answer tokens instead of their mean, so a
        training loop can divide by the answer tokens of a whole global batch
        (:meth:`answer_token_count`).

        ``logits_to_keep`` (generation): a positive ``n`` runs the LM head on the last ``n``
        positions only (``logits`` ``(B, n, vocab)``); 0 keeps every position.
        """
        if pixel_values is not None and image_features is not None:
            raise ValueError("give pixel_values or image_features, not both")
        if loss_reduction not in ("mean", "sum"):
            raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")
        if loss_reduction == "sum" and not answer_logits_only:
            raise ValueError("loss_reduction='sum' needs answer_logits_only=True")
        has_placeholders = bool((input_ids == self.image_token_id).any())
        if past_key_values is not None and not has_placeholders:
            pixel_values = image_features = None
        if pixel_values is not None:
            image_features = self.encode_images(pixel_values)
        inputs_embeds = self.embed(input_ids, image_features)
        if labels is not None:
            labels = labels.masked_fill(input_ids == self.image_token_id, IGNORE_INDEX)
        if answer_logits_only and labels is not None and not use_cache:
            return self._answer_only_loss(inputs_embeds, attention_mask, position_ids, labels, loss_reduction)
        return self.llm(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=past_key_values,
            use_cache=use_cache,
            labels=labels,
            logits_to_keep=logits_to_keep,
        )

    def _answer_only_loss(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        labels: torch.Tensor,
        reduction: str,
    ) -> CausalLMOutputWithPast:
        hidden = self.llm.model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids
        ).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        logits = self.llm.lm_head(hidden[:, :-1][keep])
        if not bool(keep.any()):  # nothing to learn from: a zero loss that still has a graph
            return CausalLMOutputWithPast(loss=hidden.sum() * 0.0, logits=logits)
        loss = nn.functional.cross_entropy(logits.float(), targets[keep], reduction=reduction)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def answer_token_count(self, input_ids: torch.Tensor, labels: torch.Tensor) -> int:
        """How many tokens the answer loss of ``forward`` sums over: the positions whose next
        token is labelled, image placeholders excluded."""
        targets = labels[:, 1:].masked_fill(input_ids[:, 1:] == self.image_token_id, IGNORE_INDEX)
        return int((targets != IGNORE_INDEX).sum())


def _build_llm(
    cfg: LLMConfig,
    *,
    pretrained: bool,
    dtype: torch.dtype,
    quantization: str | None,
    keep_unquantized: Sequence[str] = (),
) -> tuple[nn.Module, Any]:
    if not pretrained:
        from transformers import LlamaConfig, LlamaForCausalLM

        hf_config = LlamaConfig(
            vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_kv_heads, max_position_embeddings=cfg.max_position_embeddings,
            rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=cfg.tie_word_embeddings,
            rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        )
        return LlamaForCausalLM(hf_config).to(dtype), None
    if cfg.source is None:
        raise ValueError("the config names no pretrained source for the LLM (llm.source is None)")
    from earthgpt.model.loaders import load_llm

    llm, tokenizer = load_llm(
        cfg.source, dtype=dtype, quantization=quantization, keep_unquantized=keep_unquantized
    )
    check_llm_config(cfg, llm.config)
    return llm, tokenizer


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Create new floating tensors in ``dtype`` (parameters made and initialised there)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _meta_parameters(enabled: bool) -> contextlib.AbstractContextManager:
    """Parameters on the meta device (buffers stay real: some are never saved), when ``enabled``."""
    if not enabled:
        return contextlib.nullcontext()
    from accelerate import init_empty_weights

    return init_empty_weights(include_buffers=False)


def _random_base_identity(model: EarthGPT) -> dict:
    parts = {"llm": model.llm, "vit": model.vision.vit, "cnn": model.vision.cnn}
    label = f"random-{model.config.name}-seed{model.seed}"
    identities = {role: module_state_identity(module, f"{label}-{role}") for role, module in parts.items()}
    return combine_base_identity(identities, prefix=label)


def check_llm_config(cfg: LLMConfig, hf_config: Any) -> None:
    """Raise ValueError naming every size where a loaded LLM differs from the config."""
    rope = (getattr(hf_config, "rope_parameters", None) or {}).get("rope_theta")
    found = {
        "hidden_size": hf_config.hidden_size,
        "num_layers": hf_config.num_hidden_layers,
        "num_heads": hf_config.num_attention_heads,
        "num_kv_heads": hf_config.num_key_value_heads,
        "intermediate_size": hf_config.intermediate_size,
        "vocab_size": hf_config.vocab_size,
        "tie_word_embeddings": hf_config.tie_word_embeddings,
        "rope_theta": rope,
    }
    diffs = [
        f"{key}: config {getattr(cfg, key)}, model {value}"
        for key, value in found.items()
        if value is not None and value != getattr(cfg, key)
    ]
    if diffs:
        raise ValueError(f"the LLM from {cfg.source!r} does not match the config: " + "; ".join(diffs))
