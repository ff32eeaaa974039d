"""Batched greedy generation: several prompts, each about its own image, answered in one token loop.

Whole-scene detection asks the same question of many windows. Answered one at a time
(:class:`earthgpt.inference.ChatSession`), every new token costs one forward pass of the whole
model per window; answered together, one forward pass serves every window, so the weights are read
once per step instead of once per window.

- :func:`greedy_batch`: token ids of several prompts → the greedy continuation of each. Prompts are
  left-padded to one length (an attention mask hides the padding, positions count real tokens
  only); a row ends at a stop id, at ``max_new_tokens`` or when ``on_token`` says so, and a row that
  has ended is dropped from the batch and its KV cache, so it costs nothing more.
- The KV cache of a batch grows inside a buffer with spare room (:class:`BufferedKVCache`) instead
  of by concatenation: appending one token to 16 rows' caches by ``torch.cat`` copied every row's
  whole cache on every step, which took a fifth of a decode step on a CPU. The text before the
  first image (system prompt and turn header), the same in every row of a detection batch, is
  prefilled once and shared.
- :func:`answer_batch`: images and questions → one :class:`BatchAnswer` per image, rendered,
  decoded and stopped exactly as ``ChatSession.ask`` does for a fresh chat (the same prompt ids,
  the same :class:`~earthgpt.answer_stream.LineGate` stop rule, the same ``finish_reason``), so a
  batch gives the answers that one-by-one chats give (``tests/test_batch_generate.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from earthgpt.answer_stream import IncrementalDecoder, LineGate, LineRule
from earthgpt.inference import vision_placement, with_sensor
from earthgpt.processor import EarthGPTProcessor


def greedy_batch(
    model: Any,
    prompts: Sequence[Sequence[int]],
    image_features: torch.Tensor | None = None,
    *,
    max_new_tokens: int = 256,
    stop_ids: Iterable[int] = (),
    pad_id: int = 0,
    on_token: Callable[[int, int], bool] | None = None,
) -> list[list[int]]:
    """Greedy ids after each of ``prompts`` (lists of ids), all rows in one forward pass per step.

    ``image_features`` ``(B_img, N, D)`` fill the image placeholders of the prompts in order (one
    image per prompt in detection). ``on_token(row, token)`` sees each new id of each row as it is
    made; True ends that row. Returns, per prompt, the ids made: the last one is a stop id, the
    ``max_new_tokens``-th id or the one ``on_token`` ended on (as :func:`earthgpt.inference.iter_generate`
    yields them). Ended rows leave the batch (their cache rows are dropped).
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError(f"expected at least one prompt, none empty; got lengths {[len(p) for p in prompts]}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    stops = set(stop_ids)
    device = model.device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    produced: list[list[int]] = [[] for _ in prompts]
    rows = list(range(len(prompts)))  # the prompt of each row still in the batch
    cache = BufferedKVCache()
    shared = shared_prefix(prompts, getattr(model, "image_token_id", None))
    with torch.inference_mode():
        if shared:  # one row's pass over the common text, its keys and values repeated for every row
            _step(model, ids[:1, :shared], mask[:1, :shared], positions[:1, :shared], cache, None)
            cache.batch_repeat_interleave(len(prompts))
        logits = _step(model, ids[:, shared:], mask, positions[:, shared:], cache, image_features)
        for step in range(max_new_tokens):
            tokens = logits.argmax(-1).tolist()
            keep = []
            for i, (row, token) in enumerate(zip(rows, tokens, strict=True)):
                produced[row].append(token)
                ended = on_token is not None and on_token(row, token)
                if not ended and token not in stops:
                    keep.append(i)
            if not keep or step == max_new_tokens - 1:
                break
            if len(keep) < len(rows):  # finished rows stop costing compute
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                mask, positions = mask[index], positions[index]
                rows, tokens = [rows[i] for i in keep], [tokens[i] for i in keep]
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
            positions = positions[:, -1:] + 1
            step_ids = torch.tensor(tokens, device=device).unsqueeze(1)
            logits = _step(model, step_ids, mask, positions, cache, None)
    return produced


def shared_prefix(prompts: Sequence[Sequence[int]], image_token_id: int | None) -> int:
    """How many leading ids every prompt shares and can be prefilled once for all rows: 0 for one
    prompt or prompts of different lengths (left padding puts their text at different columns);
    otherwise the common prefix, up to the first image token (each row's image differs) and leaving
    at least one id to feed."""
    if len(prompts) < 2 or len({len(p) for p in prompts}) > 1:
        return 0
    first = list(prompts[0])
    limit = len(first) - 1
    if image_token_id is not None and image_token_id in first:
        limit = min(limit, first.index(image_token_id))
    shared = 0
    while shared < limit and all(p[shared] == first[shared] for p in prompts[1:]):
        shared += 1
    return shared


class _BufferedLayer(DynamicLayer):
    """A layer's keys and values ``(B, heads, T, head_dim)`` kept in a buffer with room to grow: a
    new token is written in place, and the buffer is reallocated (twice as long) only when full,
    where ``DynamicLayer`` concatenates, copying the whole cache, on every step. ``keys`` and
    ``values`` are views of the filled part, so attention reads exactly what ``DynamicLayer``
    would hold."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None
        self._length = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self._length + key_states.shape[-2]
        if self._buffers is None or end > self._buffers[0].shape[-2]:
            room = max(2 * end, end + 64)
            grown = tuple(s.new_empty((*s.shape[:-2], room, s.shape[-1])) for s in (key_states, value_states))
            if self._buffers is not None:
                for old, new in zip(self._buffers, grown, strict=True):
                    new[..., : self._length, :] = old[..., : self._length, :]
            self._buffers = grown
        for buffer, states in zip(self._buffers, (key_states, value_states), strict=True):
            buffer[..., self._length:end, :] = states
        self._length = end
        self._views()
        return self.keys, self.values

    def _views(self) -> None:
        assert self._buffers is not None
        self.keys, self.values = (b[..., : self._length, :] for b in self._buffers)

    def get_seq_length(self) -> int:
        return self._length if self.is_initialized else 0

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative number of tokens to remove, got {tokens_to_remove}")
        if tokens_to_remove and self.is_initialized:
            self._length = max(0, self._length + tokens_to_remove)
            self._views()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.get_seq_length() > 0 and self._buffers is not None:
            self._buffers = tuple(b.repeat_interleave(repeats, dim=0) for b in self._buffers)
            self._views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.get_seq_length() > 0 and self._buffers is not None:
            self._buffers = tuple(b[indices, ...] for b in self._buffers)
            self._views()

    def reset(self) -> None:
        self._buffers, self._length = None, 0
        super().reset()


class BufferedKVCache(DynamicCache):
    """A ``DynamicCache`` whose layers grow in place (:class:`_BufferedLayer`): the same keys and
    values, without a copy of the whole cache at every decode step."""

    def __init__(self) -> None:
        super().__init__()
        self.layer_class_to_replicate = _BufferedLayer


def _step(model: Any, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: DynamicCache,
          features: torch.Tensor | None) -> torch.Tensor:
    """One forward pass over ``ids`` after ``cache``: the next-token logits ``(B, vocab)``, the LM head
    on the last position only. Without padding the mask is left out (the same computation as one
    unpadded row)."""
    out = model(ids, attention_mask=None if bool(mask.all()) else mask, image_features=features,
                past_key_values=cache, use_cache=True, position_ids=positions, logits_to_keep=1)
    return out.logits[:, -1]


@dataclass
class BatchAnswer:
    """One row's answer: its text, why it ended (``end``, ``length``, ``rule`` or ``closed``, as
    ``ChatSession.finish_reason``) and its ids (without the stop id)."""

    text: str
    finish_reason: str
    ids: list[int] = field(default_factory=list)


class _RowText:
    """One row's ids → answer text through the stop rule, as ``ChatSession.ask`` streams it."""

    def __init__(self, processor: EarthGPTProcessor, rule: LineRule | None) -> None:
        self.stops = set(processor.stop_token_ids)
        self.decoder = IncrementalDecoder(processor.tokenizer)
        self.gate = LineGate(rule)
        self.reason = "length"
        self.ids: list[int] = []

    def push(self, token: int) -> bool:
        """Add one id; True when the answer ends with it (a stop id, or a line the rule refused)."""
        if token in self.stops:
            self.reason = "end"
            return True
        self.ids.append(token)
        self.gate.push(self.decoder.push(token))
        return self.gate.refused

    def finish(self) -> BatchAnswer:
        """The answer as recorded: a closed answer keeps what was passed on; otherwise the held-back
        text and the last line go through the rule too."""
        if self.reason != "closed":
            self.gate.push(self.decoder.flush())
            self.gate.close()
            if self.gate.refused:
                self.reason = "rule"
        return BatchAnswer(self.gate.text, self.reason, list(self.ids))


def prompt_ids(processor: EarthGPTProcessor, question: str, sensor: str | None = None,
               system: str | None = None) -> list[int]:
    """The ids a fresh ``ChatSession(model, processor, sensor, system).ask(question)`` feeds: the
    question (with the sensor sentence first, unless it starts with it) as the first turn."""
    first = with_sensor(question.strip(), sensor)
    return processor.tokenize(processor.new_conversation(system=system).add_human(first))["input_ids"]


def encode_batch(model: Any, processor: EarthGPTProcessor, images: Sequence[np.ndarray]) -> torch.Tensor:
    """RGB ``uint8`` H×W×3 images → visual tokens ``(B, num_visual_tokens, D)``, one vision pass."""
    pixels = torch.stack([processor.preprocess_image(image) for image in images])
    device, dtype = vision_placement(model)
    with torch.inference_mode():
        return model.encode_images(pixels.to(device=device, dtype=dtype))


def answer_batch(
    model: Any, processor: EarthGPTProcessor, images: Sequence[np.ndarray], questions: Sequence[str], *,
    sensor: str | None = None, system: str | None = None, max_new_tokens: int = 256,
    stop_rule: LineRule | None = None, cancelled: Callable[[], bool] | None = None,
) -> list[BatchAnswer]:
    """Answer ``questions[i]`` about ``images[i]`` for every ``i`` at once, greedily, each as a fresh
    chat would (:func:`prompt_ids`). ``stop_rule`` ends a row at a line it refuses (left out);
    when ``cancelled()`` turns True every row still being written ends there (``closed``)."""
    if len(images) != len(questions):
        raise ValueError(f"expected one question per image: {len(images)} images, {len(questions)} questions")
    if not images:
        return []
    texts = [_RowText(processor, stop_rule) for _ in images]

    def on_token(row: int, token: int) -> bool:
        if texts[row].push(token):
            return True
        if cancelled is not None and cancelled():
            texts[row].reason = "closed"
            return True
        return False

    greedy_batch(model, [prompt_ids(processor, q, sensor, system) for q in questions],
                 encode_batch(model, processor, images), max_new_tokens=max_new_tokens,
                 stop_ids=processor.stop_token_ids, pad_id=processor.pad_token_id, on_token=on_token)
    return [text.finish() for text in texts]
