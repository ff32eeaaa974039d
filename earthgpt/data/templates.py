"""Turns made from labels where a source has none of that kind, each marked ``generated: true``.

From complete object annotations (``objects_hbb``, else ``objects_obb``):

- counting: "How many <class plural> are there in the image?" → the count, per class present
  (VQA, question type ``count``);
- presence: "Are there any <class plural> in the image?" → ``yes`` for each class present and
  ``no`` for as many absent classes of the dataset's vocabulary (two for an image without objects;
  picked by a hash of the record id and class, so the choice is stable) (VQA, type ``presence``);
- grounding: "the <class>" → its box, for each class with exactly one object in the image;
- region captions: box → class name, for the (at most 5) largest objects.

From a scene class without captions (AID and the other classification sets): the caption
"An aerial image of a <class>." (SAR / infrared images say so instead of "aerial").
Referring expressions (DIOR-RSVG) are partial labels, so they never feed counts or presence.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from earthgpt.data.records import Sample
from earthgpt.data.turns import Turn, object_detections
from earthgpt.geometry import HBB
from earthgpt.sensors import Sensor
from earthgpt.tasks import Task, instruction
from earthgpt.textbox import format_grounding

MAX_REGION_CAPTIONS = 5
_IRREGULAR = {"person": "people", "people": "people", "man": "men", "woman": "women", "child": "children"}
_IMAGE_NOUN = {
    Sensor.optical: "An aerial image",
    Sensor.sar: "A SAR image",
    Sensor.infrared: "An infrared image",
}


def plural(name: str) -> str:
    """English plural of a class name's last word: ``"small vehicle"`` → ``"small vehicles"``,
    ``"person"`` → ``"people"``, ``"storage tanks"`` stays, ``"ferry"`` → ``"ferries"``."""
    head, _, last = name.rpartition(" ")
    lower = last.lower()
    if lower in _IRREGULAR:
        word = _IRREGULAR[lower]
    elif lower.endswith(("ss", "us", "sh", "ch", "x", "z")):
        word = last + "es"
    elif lower.endswith("s"):
        word = last
    elif lower.endswith("y") and len(lower) > 1 and lower[-2] not in "aeiou":
        word = last[:-1] + "ies"
    else:
        word = last + "s"
    return f"{head} {word}" if head else word


def article(phrase: str) -> str:
    """``"a"`` or ``"an"`` for a phrase, by its first letter."""
    return "an" if phrase[:1].lower() in "aeiou" else "a"


def _rank(record_id: str, name: str) -> str:
    return hashlib.sha1(f"{record_id}|{name}".encode()).hexdigest()


def scene_caption(sample: Sample) -> Iterator[Turn]:
    """ "An aerial image of a <class>." for a classified image without captions."""
    ann = sample.annotations
    if "class" in ann and not ann.get("captions"):
        name = ann["class"]
        text = f"{_IMAGE_NOUN[sample.sensor]} of {article(name)} {name}."
        yield Turn(Task.caption, instruction(Task.caption, sample.sensor), text, generated=True)


def _objects(sample: Sample) -> list[dict[str, Any]]:
    ann = sample.annotations
    return ann.get("objects_hbb") or ann.get("objects_obb") or []


def object_questions(sample: Sample, vocabulary: Sequence[str]) -> Iterator[Turn]:
    """Counting and presence questions from the sample's complete object labels."""
    counts = Counter(obj["label"] for obj in _objects(sample))
    sensor = sample.sensor
    for name in sorted(counts):
        question = f"How many {plural(name)} are there in the image?"
        yield Turn(
            Task.vqa,
            instruction(Task.vqa, sensor, question=question),
            str(counts[name]),
            generated=True,
            question_type="count",
        )
    absent = sorted((c for c in set(vocabulary) if c not in counts), key=lambda c: _rank(sample.id, c))
    chosen = absent[: len(counts) or 2]  # an image without objects still gets two "no" questions
    for name, answer in sorted([(n, "yes") for n in counts] + [(n, "no") for n in chosen]):
        question = f"Are there any {plural(name)} in the image?"
        yield Turn(
            Task.vqa,
            instruction(Task.vqa, sensor, question=question),
            answer,
            generated=True,
            question_type="presence",
        )


def object_regions(sample: Sample) -> Iterator[Turn]:
    """Grounding of objects whose class is unique in the image; region captions of the largest."""
    objects = _objects(sample)
    if not objects:
        return
    boxes = [d.box if isinstance(d.box, HBB) else d.box.to_hbb() for d in object_detections(objects, sample)]
    labels = [obj["label"] for obj in objects]
    counts = Counter(labels)
    sensor = sample.sensor
    for index, label in enumerate(labels):
        if counts[label] == 1:
            yield Turn(
                Task.grounding,
                instruction(Task.grounding, sensor, referring=f"the {label}"),
                format_grounding(boxes[index]),
                generated=True,
            )
    largest = sorted(range(len(boxes)), key=lambda i: (-boxes[i].area, i))[:MAX_REGION_CAPTIONS]
    for index in sorted(largest):
        if boxes[index].area > 0:
            yield Turn(
                Task.region_caption,
                instruction(Task.region_caption, sensor, box=boxes[index]),
                f"{article(labels[index]).capitalize()} {labels[index]}.",
                generated=True,
            )


def generated_turns(sample: Sample, vocabulary: Sequence[str]) -> list[Turn]:
    """All template turns of a sample; ``vocabulary`` is its dataset's object classes."""
    return [*scene_caption(sample), *object_questions(sample, vocabulary), *object_regions(sample)]
