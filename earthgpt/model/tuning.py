"""The two training stages of the paper: which parameters learn, and the stage-2 scale/shift layers.

- Stage 1 (cross-modal mutual comprehension): the projector, every self-attention block (q/k/v/o)
  and every RMSNorm of the LLM learn; the MLPs, embeddings, LM head and both vision encoders are
  frozen.
- Stage 2 (unified instruction tuning): everything is frozen, then every ``nn.Linear`` of the LLM
  (the LM head included: the paper says every linear layer) is wrapped in a ``ScaleShiftLinear``
  whose two vectors, ``scale`` (init 1) and ``shift`` (init 0), are the only trainable parameters:
  ``y = scale ⊙ (W x + b) + shift``. The wrapped layer is left as it is, so a bitsandbytes
  ``Linear4bit`` works too. With ``config.stage2_tunes_stage1`` stage 2 also keeps training what
  stage 1 trained (a documented deviation for the 135 M nano, see MODEL_CARD.md).

With ``config.stage2_lora_rank`` = r > 0 (the nano's other deviation), the projections named by
``config.stage2_lora_modules`` also get a low-rank adapter trained in stage 2: ``y = scale ⊙ (W x +
b + B A x) + shift`` with ``A`` (r × in, small random) and ``B`` (out × r, zero), so adding it
changes nothing until it trains.

``merge_scale_shift`` folds the vectors (and ``B A``) into ``W`` and the bias (plain ``nn.Linear``
only) so that inference runs at plain-Linear cost; ``unmerge_scale_shift`` restores the wrapped
form (equal up to floating-point rounding). The LLM must be a LLaMA-family transformers model:
``llm.model.layers[i]`` with ``self_attn``, ``mlp``, ``input_layernorm``, ``post_attention_layernorm``,
and ``llm.model.norm``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from earthgpt.config import MLP_PROJECTIONS

if TYPE_CHECKING:
    from earthgpt.model.earthgpt import EarthGPT

GROUPS = (
    "vision_vit", "vision_cnn", "projector", "llm_attention", "llm_norms",
    "llm_mlp", "llm_embeddings", "scale_shift", "lora", "other",
)


class ScaleShiftLinear(nn.Module):
    """A frozen linear layer with a learnable per-output ``scale`` and ``shift`` (kept in float32),
    and optionally a low-rank adapter ``lora_b @ lora_a`` added to its weight (``add_low_rank``)."""

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        self.base = base
        device = base.weight.device
        self.scale = nn.Parameter(torch.ones(base.out_features, device=device, dtype=torch.float32))
        self.shift = nn.Parameter(torch.zeros(base.out_features, device=device, dtype=torch.float32))
        self.merged = False
        self._had_bias = base.bias is not None
        self._tied_weight: torch.Tensor | None = None
        self.lora_a: nn.Parameter | None = None
        self.lora_b: nn.Parameter | None = None

    def add_low_rank(self, rank: int) -> None:
        """Give the layer a rank-``rank`` adapter: ``A`` drawn like a linear layer's weight
        (uniform in ±1/√in), ``B`` zero, both float32; the layer's output is unchanged until it trains."""
        if self.merged:
            raise ValueError("cannot add a low-rank adapter to a merged layer; unmerge it first")
        if self.lora_a is not None:
            if self.lora_a.shape[0] != rank:
                raise ValueError(
                    f"the layer has a rank-{self.lora_a.shape[0]} adapter; asked for rank {rank}"
                )
            return
        device = self.scale.device
        bound = 1 / math.sqrt(self.in_features)
        a = torch.empty(rank, self.in_features, device=device, dtype=torch.float32).uniform_(-bound, bound)
        self.lora_a = nn.Parameter(a)
        self.lora_b = nn.Parameter(torch.zeros(self.out_features, rank, device=device, dtype=torch.float32))

    @property
    def in_features(self) -> int:
        """Input width of the wrapped layer."""
        return self.base.in_features

    @property
    def out_features(self) -> int:
        """Output width of the wrapped layer."""
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        """The wrapped layer's weight (for code that reads ``layer.weight``)."""
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``scale ⊙ (base(x) + B A x) + shift``, or ``base(x)`` once merged."""
        y = self.base(x)
        if self.merged:
            return y
        if self.lora_a is not None and self.lora_b is not None:
            y = y + (x.to(self.lora_a.dtype) @ self.lora_a.T @ self.lora_b.T).to(y.dtype)
        return y * self.scale.to(y.dtype) + self.shift.to(y.dtype)

    def _low_rank_weight(self) -> torch.Tensor | None:
        if self.lora_a is None or self.lora_b is None:
            return None
        return self.lora_b.float() @ self.lora_a.float()

    def merge(self, *, tied: bool) -> None:
        """Fold scale/shift into the weight and bias. A weight ``tied`` to another parameter (tied
        embeddings) is replaced by a merged copy and the shared one is kept for ``unmerge``."""
        if self.merged:
            return
        weight, bias = self.base.weight, self.base.bias
        low_rank = self._low_rank_weight()
        if low_rank is not None and tied:
            raise ValueError("cannot merge a low-rank adapter into a weight tied to another parameter")
        with torch.no_grad():
            full = weight.float() if low_rank is None else weight.float() + low_rank
            merged_w = (full * self.scale[:, None]).to(weight.dtype)
            old_b = bias.float() if bias is not None else torch.zeros_like(self.shift)
            merged_b = (self.scale * old_b + self.shift).to(weight.dtype)
            if tied:
                self._tied_weight = weight
                self.base.weight = nn.Parameter(merged_w, requires_grad=False)
            else:
                weight.copy_(merged_w)
            if bias is None:
                self.base.bias = nn.Parameter(merged_b, requires_grad=False)
            else:
                bias.copy_(merged_b)
        self.merged = True

    def unmerge(self) -> None:
        """Undo ``merge``: divide the scale back out of the weight, subtract the shift from the bias."""
        if not self.merged:
            return
        if bool((self.scale == 0).any()):
            raise ValueError("cannot unmerge a layer with a zero scale: the original weight is lost")
        weight, bias = self.base.weight, self.base.bias
        with torch.no_grad():
            if self._tied_weight is not None:
                self.base.weight = self._tied_weight
                self._tied_weight = None
            else:
                low_rank = self._low_rank_weight()
                full = weight.float() / self.scale[:, None]
                weight.copy_((full if low_rank is None else full - low_rank).to(weight.dtype))
            if self._had_bias:
                bias.copy_(((bias.float() - self.shift) / self.scale).to(bias.dtype))
            else:
                self.base.bias = None
        self.merged = False


def _decoder_parts(llm: nn.Module) -> tuple[nn.ModuleList, nn.Module]:
    inner = getattr(llm, "model", None)
    layers, norm = getattr(inner, "layers", None), getattr(inner, "norm", None)
    needed = ("self_attn", "mlp", "input_layernorm", "post_attention_layernorm")
    if layers is None or norm is None or not all(hasattr(layer, n) for layer in layers for n in needed):
        raise ValueError(
            f"{type(llm).__name__} is not a LLaMA-family model: expected .model.layers[i] with "
            f"{', '.join(needed)} and .model.norm"
        )
    return layers, norm


def scale_shift_layers(module: nn.Module) -> list[ScaleShiftLinear]:
    """Every ``ScaleShiftLinear`` inside ``module``."""
    return [m for m in module.modules() if isinstance(m, ScaleShiftLinear)]


def inject_scale_shift(llm: nn.Module) -> int:
    """Wrap every ``nn.Linear`` of ``llm`` that is not wrapped yet; returns how many were wrapped."""
    already = {id(layer.base) for layer in scale_shift_layers(llm)}
    targets = [
        (name, m) for name, m in llm.named_modules() if isinstance(m, nn.Linear) and id(m) not in already
    ]
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(llm.get_submodule(parent_name), child, ScaleShiftLinear(linear))
    return len(targets)


def inject_low_rank(model: EarthGPT) -> int:
    """Give the scale/shift layers of the projections ``config.stage2_lora_modules`` names in every
    decoder layer a rank-``config.stage2_lora_rank`` adapter (none when the rank is 0); returns how
    many layers have one. Call after ``inject_scale_shift``."""
    rank = model.config.stage2_lora_rank
    if rank == 0:
        return 0
    layers, _ = _decoder_parts(model.llm)
    count = 0
    for layer in layers:
        for name in model.config.stage2_lora_modules:
            block = layer.mlp if name in MLP_PROJECTIONS else layer.self_attn
            target = getattr(block, name)
            if not isinstance(target, ScaleShiftLinear):
                raise ValueError(
                    f"{name} has no scale/shift layer: inject_scale_shift before inject_low_rank"
                )
            target.add_low_rank(rank)
            count += 1
    return count


def low_rank_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The adapters' ``A`` and ``B`` inside ``module``."""
    return [p for layer in scale_shift_layers(module) for p in (layer.lora_a, layer.lora_b) if p is not None]


def _stage1_modules(model: EarthGPT) -> list[nn.Module]:
    layers, norm = _decoder_parts(model.llm)
    modules: list[nn.Module] = [model.projector, norm]
    for layer in layers:
        modules += [getattr(layer.self_attn, name) for name in model.config.stage1_attention]
        modules += [layer.input_layernorm, layer.post_attention_layernorm]
    return modules


def stage1_attention_names(model: EarthGPT) -> set[str]:
    """Names of the attention parameters that stage 1 trains (``config.stage1_attention``)."""
    layers, _ = _decoder_parts(model.llm)
    ids = {id(p) for layer in layers for n in model.config.stage1_attention
           for p in getattr(layer.self_attn, n).parameters()}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def apply_stage(model: EarthGPT, stage: int) -> None:
    """Freeze everything, then make trainable what ``stage`` (1 or 2) trains; sets ``model.stage``."""
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")
    model.requires_grad_(False)
    if stage == 1:
        if scale_shift_layers(model.llm):
            raise ValueError("stage 1 runs before stage 2: this model already has scale/shift layers")
        _unfreeze_stage1(model)
    else:
        _decoder_parts(model.llm)
        inject_scale_shift(model.llm)
        for layer in scale_shift_layers(model.llm):
            if layer.merged:
                raise ValueError("scale/shift layers are merged; unmerge_scale_shift before training")
            layer.scale.requires_grad_(True)
            layer.shift.requires_grad_(True)
        inject_low_rank(model)
        for param in low_rank_parameters(model.llm):
            param.requires_grad_(True)
        if model.config.stage2_tunes_stage1:
            _unfreeze_stage1(model)
    model.stage = stage


def _unfreeze_stage1(model: EarthGPT) -> None:
    for module in _stage1_modules(model):
        for name, param in module.named_parameters():
            if not param.is_floating_point():
                raise ValueError(
                    f"stage 1's parameters train here but {name} is stored as {param.dtype} (a quantized "
                    "LLM); load the LLM unquantized"
                )
            param.requires_grad_(True)


def _tied_parameter_ids(module: nn.Module) -> set[int]:
    seen: dict[int, int] = {}
    for _, param in module.named_parameters(remove_duplicate=False):
        seen[id(param)] = seen.get(id(param), 0) + 1
    return {key for key, count in seen.items() if count > 1}


def merge_scale_shift(model: EarthGPT) -> int:
    """Fold every scale/shift into its layer's weight and bias; returns how many layers were merged.

    Only plain ``torch.nn.Linear`` layers can be merged; with a quantized one (bitsandbytes) nothing
    is changed and a TypeError names the layer.
    """
    layers = scale_shift_layers(model.llm)
    for name, module in model.llm.named_modules():
        if isinstance(module, ScaleShiftLinear) and type(module.base) is not nn.Linear:
            kind = f"{type(module.base).__module__}.{type(module.base).__name__}"
            raise TypeError(
                f"cannot merge scale/shift into {name}: it is a {kind}, merging needs a plain "
                "torch.nn.Linear; keep the wrapped form or load the LLM unquantized"
            )
    tied = _tied_parameter_ids(model.llm)
    for layer in layers:
        layer.merge(tied=id(layer.base.weight) in tied)
        for param in (layer.scale, layer.shift, layer.lora_a, layer.lora_b):
            if param is not None:
                param.requires_grad_(False)
    return len(layers)


def unmerge_scale_shift(model: EarthGPT) -> int:
    """Restore the wrapped form after ``merge_scale_shift``; returns how many layers were unmerged."""
    layers = [layer for layer in scale_shift_layers(model.llm) if layer.merged]
    for layer in layers:
        layer.unmerge()
    return len(layers)


def parameter_groups(model: EarthGPT) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Every parameter (tied ones once) by group: see ``GROUPS``."""
    owner: dict[int, str] = {}
    for layer in scale_shift_layers(model.llm):
        owner[id(layer.scale)] = owner[id(layer.shift)] = "scale_shift"
    for param in low_rank_parameters(model.llm):
        owner[id(param)] = "lora"
    claims: list[tuple[nn.Module | None, str]] = [
        (model.vision.vit, "vision_vit"), (model.vision.cnn, "vision_cnn"), (model.projector, "projector"),
    ]
    layers, norm = _decoder_parts(model.llm)
    for layer in layers:
        claims += [(layer.self_attn, "llm_attention"), (layer.mlp, "llm_mlp")]
        claims += [(layer.input_layernorm, "llm_norms"), (layer.post_attention_layernorm, "llm_norms")]
    claims += [(norm, "llm_norms"), (model.llm.get_input_embeddings(), "llm_embeddings")]
    claims += [(model.llm.get_output_embeddings(), "llm_embeddings")]
    for module, group in claims:
        for param in module.parameters() if module is not None else []:
            owner.setdefault(id(param), group)
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {g: [] for g in GROUPS}
    for name, param in model.named_parameters():
        groups[owner.get(id(param), "other")].append((name, param))
    return groups


def _numel(param: torch.Tensor) -> int:
    quant_state = getattr(param, "quant_state", None)  # bitsandbytes 4-bit stores packed bytes
    shape = getattr(quant_state, "shape", None)
    return math.prod(shape) if shape is not None else param.numel()


def parameter_report(model: EarthGPT) -> dict[str, dict[str, int]]:
    """``{group: {"trainable": n, "total": n}}`` per group of ``GROUPS``, plus ``"all"`` (with
    ``"frozen"``). Tied parameters count once; 4-bit weights count their unpacked size."""
    report = {}
    for group, params in parameter_groups(model).items():
        report[group] = {
            "trainable": sum(_numel(p) for _, p in params if p.requires_grad),
            "total": sum(_numel(p) for _, p in params),
        }
    trainable = sum(r["trainable"] for r in report.values())
    total = sum(r["total"] for r in report.values())
    report["all"] = {"trainable": trainable, "total": total, "frozen": total - trainable}
    return report


def trainable_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters that will receive gradients, in model order."""
    return [name for name, param in model.named_parameters() if param.requires_grad]
