"""Turns of a record: what each annotation of a :class:`~earthgpt.data.records.Sample` says, as
instruction/answer pairs in the canonical grammar (``docs/FORMATS.md``).

Native turns (``generated: false``) restate the source's own labels: its class, captions, Q/A,
boxes, referring expressions, dialogues. Template turns derived from labels are in
:mod:`earthgpt.data.templates`. Boxes go into text on the 0–1000 grid of the image
(:func:`~earthgpt.geometry.pixel_to_grid`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from earthgpt.conversation import IMAGE_PLACEHOLDER
from earthgpt.data.records import Sample
from earthgpt.geometry import HBB, Detection, obb_from_polygon8, pixel_to_grid
from earthgpt.tasks import Task, instruction
from earthgpt.textbox import format_detections, format_grounding


@dataclass(frozen=True)
class Turn:
    """One instruction and its answer, the task it trains, and whether a template made it."""

    task: Task
    human: str
    assistant: str
    generated: bool = False
    question_type: str | None = None


def grid_hbb(xyxy_px: list[float], sample: Sample) -> HBB:
    """A record's pixel ``xyxy`` as a grid HBB."""
    return pixel_to_grid(HBB(*xyxy_px), sample.width, sample.height)  # type: ignore[return-value]


def object_detections(objects: list[dict[str, Any]], sample: Sample) -> list[Detection]:
    """``objects_hbb`` / ``objects_obb`` entries as grid :class:`Detection` s, in record order."""
    dets = []
    for obj in objects:
        if "xyxy_px" in obj:
            box = grid_hbb(obj["xyxy_px"], sample)
        else:
            box = pixel_to_grid(obb_from_polygon8(obj["corners_px"]), sample.width, sample.height)
        dets.append(Detection(obj["label"], box))
    return dets


def expression_phrase(text: str) -> str:
    """A referring expression as a phrase inside a sentence: first letter lower-cased unless the
    first word looks like an acronym (``"A green golf field"`` → ``"a green golf field"``)."""
    text = " ".join(text.split()).rstrip(".")
    first = text.split()[0] if text else ""
    if text[:1].isupper() and not (len(first) > 1 and first.isupper()):
        return text[0].lower() + text[1:]
    return text


def native_turns(sample: Sample) -> Iterator[Turn]:
    """The turns that restate the sample's own labels, in a fixed task order."""
    ann, sensor = sample.annotations, sample.sensor
    if "class" in ann:
        yield Turn(Task.classification, instruction(Task.classification, sensor), ann["class"])
    for caption in ann.get("captions", []):
        yield Turn(Task.caption, instruction(Task.caption, sensor), caption)
    for qa in ann.get("qa", []):
        yield Turn(
            Task.vqa,
            instruction(Task.vqa, sensor, question=qa["question"]),
            qa["answer"],
            question_type=qa["type"],
        )
    for key, task in (("objects_hbb", Task.detection_hbb), ("objects_obb", Task.detection_obb)):
        if ann.get(key):
            answer = format_detections(object_detections(ann[key], sample))
            yield Turn(task, instruction(task, sensor), answer)
    for ref in ann.get("referring", []):
        box = grid_hbb(ref["xyxy_px"], sample)
        phrase = expression_phrase(ref["expression"])
        yield Turn(
            Task.grounding, instruction(Task.grounding, sensor, referring=phrase), format_grounding(box)
        )
        yield Turn(
            Task.region_caption,
            instruction(Task.region_caption, sensor, box=box),
            ref["expression"].rstrip(".") + ".",
        )
    task = Task(ann.get("dialogue_task", Task.caption))
    for pair in ann.get("dialogue", []):
        yield Turn(task, pair["human"], pair["assistant"])


def conversation(turns: list[Turn]) -> list[dict[str, Any]]:
    """Alternating human/assistant messages (``{"from", "value", "task", "generated"}``, plus
    ``question_type`` on VQA turns); the first human message starts with ``"<image>\\n"``."""
    messages: list[dict[str, Any]] = []
    for index, turn in enumerate(turns):
        extra = {"question_type": turn.question_type} if turn.question_type else {}
        human = f"{IMAGE_PLACEHOLDER}\n{turn.human}" if index == 0 else turn.human
        for role, text in (("human", human), ("assistant", turn.assistant)):
            messages.append(
                {"from": role, "value": text, "task": turn.task.value, "generated": turn.generated, **extra}
            )
    return messages
