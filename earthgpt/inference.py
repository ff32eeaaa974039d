"""Generation and multi-turn chat about one image.

- :func:`generate` / :func:`iter_generate`: a plain token loop over :class:`EarthGPT` with a KV
  cache, greedy or temperature/top-p sampling, stopping at EOS / end-of-turn ids. The LM head runs
  on the last fed position only (a prompt's other positions need no logits).
- :class:`ChatSession`: ``set_image`` encodes the image once; each ``ask`` renders the whole
  conversation with the LLM's chat template but feeds the model only the tokens that are not in
  the KV cache yet (the new turn), so a follow-up costs a few dozen tokens, not image + history.
  ``restore`` gives a new session the exchanges of an earlier one (a reopened app session).
- Stop rules (:mod:`earthgpt.answer_stream`): ``ask(..., stop_rule=repeats_a_line)`` ends an
  answer early when it starts repeating itself (a small model's detection answers loop on one
  box); ``finish_reason`` says why the last answer ended (``end``, ``length``, ``rule``, ``closed``).
- :func:`load_model`: a preset name or checkpoint folder → ``(model, processor)``.

No module-level state: every session owns its cache, features and random generator, so an app can
serve several sessions at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache

from earthgpt.answer_stream import IncrementalDecoder, LineGate, LineRule
from earthgpt.conversation import Conversation, PromptTooLongError
from earthgpt.processor import EarthGPTProcessor


def load_model(
    name_or_path: str = "nano", *, load_4bit: bool = False, load_8bit: bool = False,
    device: str | None = None, dtype: torch.dtype | None = None,
) -> tuple[Any, EarthGPTProcessor]:
    """Load a model (preset name or checkpoint folder) and its processor, ready for inference.

    ``nano`` loads the trained weights shipped in ``assets/`` when they are there; another preset
    name gives the preset's untrained start (see :func:`is_untrained_start`). ``device``
    defaults to CUDA when available; a 4/8-bit LLM stays where bitsandbytes put it and the vision
    encoders and projector join it there.
    """
    from earthgpt.model.checkpoint import load_pretrained

    model = load_pretrained(name_or_path, load_4bit=load_4bit, load_8bit=load_8bit, dtype=dtype)
    if getattr(model, "tokenizer", None) is None:
        raise ValueError(
            f"model {name_or_path!r} has no tokenizer: a preset with a random LLM cannot chat; "
            "use a preset with a pretrained LLM (nano) or a checkpoint folder"
        )
    if load_4bit or load_8bit:
        llm_device = next(model.llm.parameters()).device
        model.vision.to(llm_device)
        model.projector.to(llm_device)
    else:
        model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.requires_grad_(False)  # for answering only: no forward pass anywhere can build a graph
    return model, EarthGPTProcessor(model.tokenizer, model.config)


UNTRAINED_WARNING = (
    "no trained EarthGPT weights: this is the preset's base with an untrained (random) projector "
    "from image to text, so answers do not describe the image; pass --model CHECKPOINT_DIR"
)
"""What the CLI and the app say when :func:`is_untrained_start` is true."""


def is_untrained_start(name_or_path: str | Path) -> bool:
    """True when ``name_or_path`` resolves to a preset's untrained start rather than a checkpoint
    (a folder, a shipped model, a hub id): its base components with a random projector, so its
    answers do not describe the image."""
    from earthgpt.model.checkpoint import resolve_model

    try:
        return isinstance(resolve_model(name_or_path), str)
    except FileNotFoundError:
        return False


# ----------------------------------------------------------------------------- generation


def sample_token(
    logits: torch.Tensor, *, temperature: float = 0.0, top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> int:
    """Pick the next id from ``(vocab,)`` logits: argmax when ``temperature`` is 0, else nucleus sampling."""
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    choice = torch.multinomial(probs.cpu(), 1, generator=generator)
    return int(choice)


def iter_generate(
    model: Any,
    input_ids: torch.Tensor,
    image_features: torch.Tensor | None = None,
    *,
    cache: DynamicCache,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop_ids: Iterable[int] = (),
    generator: torch.Generator | None = None,
) -> Iterator[int]:
    """Feed ``input_ids`` ``(1, T)`` after whatever ``cache`` already holds, then yield new ids one by one.

    ``image_features`` are needed only when ``input_ids`` contains image placeholders. The last
    yielded id is a stop id or the ``max_new_tokens``-th id; it is never fed to the model, so on
    exit the cache holds the previous contents, ``input_ids`` and every yielded id but the last.
    """
    if input_ids.ndim != 2 or input_ids.shape[0] != 1 or input_ids.shape[1] == 0:
        raise ValueError(f"expected input_ids of shape (1, T) with T >= 1, got {tuple(input_ids.shape)}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    stops = set(stop_ids)
    device = model.device
    step_ids = input_ids.to(device)
    features = image_features if bool((input_ids == model.image_token_id).any()) else None
    for step in range(max_new_tokens):
        # Inference mode is thread-local: entered per step, never held across a yield, since the
        # consumer may resume this generator on another thread (Gradio steps a streaming handler
        # on whichever worker thread is free). Held across yields, a step resumed elsewhere ran
        # with autograd on, and the KV cache kept every step's graph alive: gigabytes per answer.
        with torch.inference_mode():
            past = cache.get_seq_length()
            positions = torch.arange(past, past + step_ids.shape[1], device=device).unsqueeze(0)
            out = model(step_ids, image_features=features, past_key_values=cache, use_cache=True,
                        position_ids=positions, logits_to_keep=1)  # the LM head on the last position only
            features = None
            token = sample_token(out.logits[0, -1], temperature=temperature, top_p=top_p, generator=generator)
        yield token
        if token in stops or step == max_new_tokens - 1:
            return
        step_ids = torch.tensor([[token]], device=device)


def generate(
    model: Any,
    input_ids: torch.Tensor,
    image_features: torch.Tensor | None = None,
    *,
    past_key_values: DynamicCache | None = None,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop_ids: Iterable[int] = (),
    on_token: Callable[[int], None] | None = None,
    seed: int | None = None,
) -> list[int]:
    """Generate up to ``max_new_tokens`` ids after ``input_ids`` ``(1, T)``; the stop id is not returned.

    ``past_key_values`` (a DynamicCache, grown in place) lets ``input_ids`` be only the tokens
    after a cached prefix. ``on_token`` is called with each new id as it is produced (streaming).
    ``seed`` makes sampling reproducible without touching the global random state.
    """
    stops = set(stop_ids)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    cache = past_key_values if past_key_values is not None else DynamicCache()
    out: list[int] = []
    for token in iter_generate(model, input_ids, image_features, cache=cache, max_new_tokens=max_new_tokens,
                               temperature=temperature, top_p=top_p, stop_ids=stops, generator=generator):
        if token in stops:
            break
        out.append(token)
        if on_token is not None:
            on_token(token)
    return out


# ----------------------------------------------------------------------------- chat


MIN_ANSWER_TOKENS = 16
"""Room a question must leave in the model's context for its answer (:class:`PromptTooLongError`)."""


def context_length(model: Any) -> int | None:
    """How many positions the model's LLM reads (``max_position_embeddings``), or None if it says not."""
    config = getattr(getattr(model, "llm", None), "config", None)
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


class ChatSession:
    """A multi-turn chat about one image with the image features and the KV prefix cached.

    ``set_image`` encodes the image once. ``ask`` renders the whole conversation with the chat
    template, keeps the longest prefix of cached token ids it shares with the rendering (normally
    everything fed so far: the template is prefix-stable) and feeds only the rest. When the
    re-rendered ids diverge from the cache (the answer re-tokenizes differently, a template
    quirk), the cache is cropped back to the common prefix, so the result always equals a full
    recompute of the conversation.
    """

    def __init__(
        self, model: Any, processor: EarthGPTProcessor, sensor: str | None = None, system: str | None = None
    ) -> None:
        if model.image_token_id != processor.image_token_id:
            raise ValueError(
                f"model and processor disagree on the image token id: {model.image_token_id} vs "
                f"{processor.image_token_id}"
            )
        self.model = model
        self.processor = processor
        self.sensor = sensor
        self.system = system
        self.image_features: torch.Tensor | None = None
        self.reused_tokens = 0  # tokens of the last prompt taken from the cache
        self.fed_tokens = 0  # tokens of the last prompt fed to the model
        self.answer_ids: list[int] = []  # ids of the last answer (without the stop id)
        self.finish_reason = ""
        """Why the last answer ended: ``end`` (a stop id), ``length`` (``max_new_tokens``), ``rule``
        (its stop rule refused a line) or ``closed`` (the consumer closed the stream)."""
        self.reset()

    def reset(self) -> None:
        """Forget the conversation (and its cache); the image stays."""
        self.conversation: Conversation = self.processor.new_conversation(system=self.system)
        self._questions: list[str] = []
        self._cache = DynamicCache()
        self._cached_ids: list[int] = []

    @property
    def history(self) -> list[tuple[str, str]]:
        """Completed exchanges as ``(question as asked, answer)`` pairs."""
        answers = [t.text for t in self.conversation.turns if t.role == "assistant"]
        return list(zip(self._questions, answers, strict=False))

    @property
    def turns(self) -> int:
        """Number of completed question/answer exchanges."""
        return len(self.history)

    def set_image(self, rgb: np.ndarray) -> None:
        """Encode an RGB ``uint8`` H×W×3 image once and start a new conversation about it."""
        pixels = self.processor.preprocess_image(rgb).unsqueeze(0)
        device, dtype = vision_placement(self.model)
        with torch.inference_mode():
            self.image_features = self.model.encode_images(pixels.to(device=device, dtype=dtype))
        self.reset()

    def restore(self, exchanges: Sequence[tuple[str, str]]) -> None:
        """Start the conversation over from earlier exchanges, ``(question as asked, answer)`` pairs
        (:attr:`history` of an earlier session): the next ``ask`` has them as context. Nothing is
        computed now; the next ``ask`` feeds them to the model once."""
        if self.image_features is None:
            raise RuntimeError("no image: call set_image(rgb) before restore()")
        self.reset()
        for question, answer in exchanges:
            if not isinstance(question, str) or not question.strip() or not isinstance(answer, str):
                raise ValueError(f"expected (question, answer) texts, got {(question, answer)!r}")
            question = question.strip()
            first = not self.conversation.turns
            self.conversation.add_human(self._with_sensor(question) if first else question)
            self.conversation.add_assistant(answer)
            self._questions.append(question)

    def ask(
        self, text: str, *, max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
        stream: bool = False, seed: int | None = None, stop_rule: LineRule | None = None,
    ) -> str | Iterator[str]:
        """Answer ``text`` about the current image, continuing the conversation.

        Returns the answer, or with ``stream=True`` an iterator of text pieces (the turn is added
        to the history when the iterator finishes or is closed early). ``stop_rule`` (e.g.
        :func:`repeats_a_line`) may end the answer at a line it refuses; that line is left out, and
        with a rule the text is streamed a line at a time.
        """
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the question is empty: expected some text")
        if self.image_features is None:
            raise RuntimeError("no image: call set_image(rgb) before ask()")
        question = text.strip()
        content = self._with_sensor(question) if not self.conversation.turns else question
        candidate = Conversation(list(self.conversation.turns), self.conversation.system,
                                 self.conversation.image_token)
        ids = self.processor.tokenize(candidate.add_human(content))["input_ids"]  # raises on bad input
        limit = context_length(self.model)
        if limit is not None:
            if len(ids) + MIN_ANSWER_TOKENS > limit:
                earlier = "" if not self.conversation.turns else " with the conversation so far"
                raise PromptTooLongError(
                    f"the question{earlier} is {len(ids):,} tokens (the image included); the model reads at "
                    f"most {limit:,} with its answer: shorten the question"
                    + (" or start a new conversation" if earlier else "")
                )
            max_new_tokens = min(max_new_tokens, limit - len(ids))  # the answer may end at the context's end
        pieces = self._stream(question, content, ids, len(self.conversation.turns),
                              max_new_tokens, temperature, top_p, seed, LineGate(stop_rule))
        return pieces if stream else "".join(pieces)

    def _stream(
        self, question: str, content: str, ids: list[int], turns_before: int, max_new_tokens: int,
        temperature: float, top_p: float, seed: int | None, gate: LineGate,
    ) -> Iterator[str]:
        """Run one turn: nothing changes until iteration starts; the turn is recorded when it ends
        (also when the consumer closes the stream early). An error drops the turn and the cache."""
        if len(self.conversation.turns) != turns_before:
            raise RuntimeError("the conversation changed after this question was asked; ask it again")
        self.conversation.add_human(content)
        keep = self._reuse_prefix(ids)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        tokens = iter_generate(
            self.model, torch.tensor([ids[keep:]], dtype=torch.long), self.image_features, cache=self._cache,
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
            stop_ids=self.processor.stop_token_ids, generator=generator,
        )
        decoder = IncrementalDecoder(self.processor.tokenizer)
        produced: list[int] = []
        failed = False
        self.finish_reason = "length"
        try:
            for token in tokens:
                produced.append(token)
                if token in self.processor.stop_token_ids:
                    self.finish_reason = "end"
                    break
                piece = gate.push(decoder.push(token))
                if piece:
                    yield piece
                if gate.refused:
                    break
            tail = gate.push(decoder.flush()) + gate.close()
            if tail:
                yield tail
            if gate.refused:
                self.finish_reason = "rule"
        except GeneratorExit:  # closed early by the consumer: keep the partial answer
            self.finish_reason = "closed"
            raise
        except BaseException:
            failed = True
            self.conversation.turns.pop()
            self._cache, self._cached_ids = DynamicCache(), []  # a failed forward may leave it half-written
            raise
        finally:
            tokens.close()
            if not failed:
                self._commit(question, ids, produced, gate.text)

    def _commit(self, question: str, ids: list[int], produced: list[int], answer: str) -> None:
        """Record the answer and what the cache now holds: the prompt and every produced id but the last."""
        fed = ids + produced[:-1]
        if self._cache.get_seq_length() != len(fed):  # closed before the first forward pass finished
            fed = fed[: self._cache.get_seq_length()]
        self._cached_ids = fed
        self.answer_ids = [t for t in produced if t not in self.processor.stop_token_ids]
        self.conversation.add_assistant(answer)
        self._questions.append(question)

    def _reuse_prefix(self, ids: list[int]) -> int:
        """Crop the cache to the longest prefix it shares with ``ids`` (at least one id left to feed)."""
        keep = _common_prefix(self._cached_ids, ids)
        keep = min(keep, len(ids) - 1)
        image_id = self.model.image_token_id
        if image_id in ids[keep:] and image_id in ids[:keep]:
            keep = ids.index(image_id)  # never split the visual tokens between cache and input
        cached = self._cache.get_seq_length()
        if keep < cached:
            self._cache.crop(keep - cached)
        self._cached_ids = self._cached_ids[:keep]
        self.reused_tokens, self.fed_tokens = keep, len(ids) - keep
        return keep

    def _with_sensor(self, question: str) -> str:
        return with_sensor(question, self.sensor)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def with_sensor(question: str, sensor: str | None) -> str:
    """The first question of a chat about a ``sensor`` image: the sensor sentence first, unless the
    question already starts with it."""
    if sensor is None:
        return question
    from earthgpt.sensors import Sensor
    from earthgpt.tasks import sensor_sentence

    sentence = sensor_sentence(Sensor(sensor))
    return question if question.startswith(sentence) else f"{sentence} {question}"


def vision_placement(model: Any) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the vision encoder's weights (where pixels must go)."""
    for param in model.vision.parameters():
        if param.is_floating_point():
            return param.device, param.dtype
    return model.device, torch.float32
