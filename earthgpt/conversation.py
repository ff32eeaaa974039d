"""Multi-turn conversations rendered with the language model's own chat template.

A :class:`Conversation` is a list of human/assistant turns about one image. The first human
turn carries the image placeholder (``<image>``); :func:`render` turns the conversation into the
text the LLM was instruction-tuned on (``tokenizer.apply_chat_template``), and
:func:`tokenize_for_training` gives token ids with labels that are ``-100`` everywhere except on
the assistant answers (and the end-of-turn token that closes each answer).

Label spans are found from character offsets: each answer's start is the length of the rendered
conversation up to its generation prompt, so the template decides where answers begin, not a
hard-coded role string. This module is pure text (no torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

IGNORE_INDEX = -100
IMAGE_PLACEHOLDER = "<image>"
"""The image placeholder: in MMRS records (first human turn) and the default image token of the model."""
Role = Literal["human", "assistant"]

_TEMPLATE_ROLES: dict[Role, str] = {"human": "user", "assistant": "assistant"}
# End-of-turn markers of common chat templates; the tokenizer's EOS is always one too.
_END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "</s>")


@dataclass
class Turn:
    """One message: who said it (``human`` or ``assistant``) and the text."""

    role: Role
    text: str


@dataclass
class Conversation:
    """Alternating human/assistant turns about one image, optionally with a system prompt.

    The image placeholder belongs to the first human turn; if that turn does not contain it,
    :meth:`messages` puts it at the start (``"<image>\\n" + text``). No other turn may contain it.
    """

    turns: list[Turn] = field(default_factory=list)
    system: str | None = None
    image_token: str = IMAGE_PLACEHOLDER
    has_image: bool = True

    def add_human(self, text: str) -> Conversation:
        """Append a human turn (returns ``self`` for chaining)."""
        self.turns.append(Turn("human", text))
        return self

    def add_assistant(self, text: str) -> Conversation:
        """Append an assistant turn (returns ``self`` for chaining)."""
        self.turns.append(Turn("assistant", text))
        return self

    def messages(self) -> list[dict[str, str]]:
        """The turns as chat-template messages (``role`` user/assistant/system, ``content``).

        Raises ``ValueError`` when roles do not alternate starting with a human turn, or the
        placeholder appears anywhere except the first human turn.
        """
        out: list[dict[str, str]] = []
        if self.system is not None:
            out.append({"role": "system", "content": self.system})
        for i, turn in enumerate(self.turns):
            expected: Role = "human" if i % 2 == 0 else "assistant"
            if turn.role != expected:
                raise ValueError(
                    f"turn {i}: expected a {expected} turn, got {turn.role} (turns must alternate)"
                )
            text = turn.text
            count = text.count(self.image_token)
            if i == 0 and self.has_image:
                if count > 1:
                    raise ValueError(f"turn 0 holds the image placeholder {self.image_token!r} {count} times")
                if count == 0:
                    text = f"{self.image_token}\n{text}"
            elif count:
                raise ValueError(
                    f"turn {i} contains the image placeholder {self.image_token!r}; "
                    "only the first human turn may carry the image"
                )
            out.append({"role": _TEMPLATE_ROLES[turn.role], "content": text})
        return out


def render(conversation: Conversation, tokenizer: Any, *, add_generation_prompt: bool) -> str:
    """The conversation as text in the tokenizer's own chat template.

    ``add_generation_prompt=True`` ends the text with the assistant header, ready for generation
    (the conversation should then end with a human turn).
    """
    return _render_messages(conversation.messages(), tokenizer, add_generation_prompt)


def _render_messages(messages: list[dict[str, str]], tokenizer: Any, add_generation_prompt: bool) -> str:
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} has no chat template; set tokenizer.chat_template"
        )
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template(tokenize=False) returned {type(text).__name__}, expected str")
    return text


def end_of_turn_ids(tokenizer: Any) -> set[int]:
    """Token ids that end an assistant turn: the EOS token and known end-of-turn markers in the vocabulary."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    ids.update(int(vocab[token]) for token in _END_OF_TURN_TOKENS if token in vocab)
    return ids


def image_token_id(tokenizer: Any, image_token: str) -> int:
    """The id of the image placeholder token; it must be a single (added) token in the vocabulary.

    Looked up token by token (``get_vocab`` builds a dict of the whole vocabulary: 40 ms for
    SmolLM2's 49 k tokens, paid on every prompt); an unknown token maps to the unknown id or None,
    so the id must map back to the token."""
    token_id = tokenizer.convert_tokens_to_ids(image_token)
    if token_id is None or tokenizer.convert_ids_to_tokens(int(token_id)) != image_token:
        raise ValueError(
            f"image token {image_token!r} is not in the tokenizer vocabulary; add it as a special token "
            "(EarthGPTProcessor does this)"
        )
    return int(token_id)


def expand_image_tokens(ids: Sequence[int], image_id: int, num_visual_tokens: int) -> list[int]:
    """Replace each image placeholder id by ``num_visual_tokens`` copies of it."""
    out: list[int] = []
    for token in ids:
        out.extend([token] * num_visual_tokens if token == image_id else [token])
    return out


def tokenize_prompt(
    conversation: Conversation, tokenizer: Any, image_token: str, num_visual_tokens: int
) -> list[int]:
    """Token ids of the conversation plus the generation prompt, the placeholder expanded."""
    text = render(conversation, tokenizer, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    image_id = image_token_id(tokenizer, image_token)
    _check_placeholder_count(ids, image_id, conversation)
    return expand_image_tokens(ids, image_id, num_visual_tokens)


def tokenize_for_training(
    conversation: Conversation, tokenizer: Any, image_token: str, num_visual_tokens: int
) -> tuple[list[int], list[int]]:
    """Token ids and labels for teacher forcing: labels are ``-100`` except on assistant answers.

    Each answer's tokens are labelled together with the end-of-turn token that closes it
    (EOS or the template's marker such as ``<|im_end|>``), so the model learns to stop; the
    template's text after that token (a newline) and every human turn stay masked. The image
    placeholder is expanded to ``num_visual_tokens`` copies of the image token id (masked).
    Needs a fast tokenizer (character offsets).
    """
    messages = conversation.messages()
    full = _render_messages(messages, tokenizer, add_generation_prompt=False)
    spans = _answer_spans(messages, tokenizer, full)
    if not spans:
        raise ValueError("conversation has no assistant turn to learn from")
    encoding = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(encoding["input_ids"])
    offsets: list[tuple[int, int]] = [tuple(o) for o in encoding["offset_mapping"]]
    stop_ids = end_of_turn_ids(tokenizer)
    labelled = [False] * len(ids)
    for answer_start, content_end, turn_end in spans:
        _label_span(ids, offsets, labelled, stop_ids, answer_start, content_end, turn_end)
    labels = [t if keep else IGNORE_INDEX for t, keep in zip(ids, labelled, strict=True)]

    image_id = image_token_id(tokenizer, image_token)
    _check_placeholder_count(ids, image_id, conversation)
    out_ids: list[int] = []
    out_labels: list[int] = []
    for token, label in zip(ids, labels, strict=True):
        if token == image_id:
            out_ids.extend([token] * num_visual_tokens)
            out_labels.extend([IGNORE_INDEX] * num_visual_tokens)
        else:
            out_ids.append(token)
            out_labels.append(label)
    return out_ids, out_labels


def _answer_spans(messages: list[dict[str, str]], tokenizer: Any, full: str) -> list[tuple[int, int, int]]:
    """Character spans ``(answer_start, content_end, turn_end)`` of each assistant message in ``full``."""
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _render_messages(messages[:i], tokenizer, add_generation_prompt=True)
        through = _render_messages(messages[: i + 1], tokenizer, add_generation_prompt=False)
        if not (full.startswith(prompt) and full.startswith(through) and through.startswith(prompt)):
            raise ValueError(
                f"the chat template is not prefix-stable at message {i}: rendering the first {i} messages "
                "is not a prefix of the whole conversation, so answer spans cannot be located"
            )
        offset = through.find(message["content"], len(prompt))
        if offset < 0:
            raise ValueError(f"the chat template altered the text of assistant message {i}; cannot locate it")
        spans.append((len(prompt), offset + len(message["content"]), len(through)))
    return spans


def _label_span(
    ids: list[int], offsets: list[tuple[int, int]], labelled: list[bool], stop_ids: set[int],
    answer_start: int, content_end: int, turn_end: int,
) -> None:
    """Mark the tokens of one answer: its content, then up to and including the end-of-turn token."""
    after_content = False
    for k, (start, end) in enumerate(offsets):
        if end <= answer_start or start >= turn_end:
            continue
        if start < content_end and end > answer_start and not after_content:
            labelled[k] = True
            continue
        after_content = True
        labelled[k] = True
        if ids[k] in stop_ids:
            return
    # No end-of-turn token inside the turn: everything the template wrote for it stays labelled.


def _check_placeholder_count(ids: Sequence[int], image_id: int, conversation: Conversation) -> None:
    found = sum(1 for t in ids if t == image_id)
    expected = 1 if conversation.has_image and conversation.turns else 0
    if found != expected:
        raise ValueError(
            f"expected {expected} image placeholder token(s) {conversation.image_token!r} in the rendered "
            f"conversation, found {found}"
        )


class PromptTooLongError(ValueError):
    """The question, with the conversation before it and the image, does not fit the model's context
    (raised by :meth:`earthgpt.inference.ChatSession.ask` before any of it is run)."""
