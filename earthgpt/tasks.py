"""The tasks EarthGPT is instructed to do and the paper's instruction templates.

An instruction is the sensor sentence ("This is a SAR image.") followed by the task's template;
see docs/FORMATS.md for the answers each task expects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from earthgpt.geometry import HBB, OBB, Box
from earthgpt.sensors import Sensor
from earthgpt.textbox import format_box


class Task(StrEnum):
    """Every instruction type of the unified instruction set (MMRS)."""

    classification = "classification"
    caption = "caption"
    vqa = "vqa"
    detection_hbb = "detection_hbb"
    detection_obb = "detection_obb"
    grounding = "grounding"
    region_caption = "region_caption"


class AnswerKind(StrEnum):
    """What an answer to a task looks like, so evaluation knows how to read it."""

    label = "label"  # one word or phrase (classification, VQA)
    text = "text"  # free sentence (captions)
    detections = "detections"  # one object per line, class name then grid box
    box = "box"  # one grid box (grounding)


@dataclass(frozen=True)
class TaskSpec:
    """How one task is asked and answered: the answer kind, the box kind of boxes in the answer,
    and which keyword arguments of :func:`instruction` it needs or accepts."""

    task: Task
    answer: AnswerKind
    box_kind: str | None = None
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


TASK_SPECS: dict[Task, TaskSpec] = {
    Task.classification: TaskSpec(Task.classification, AnswerKind.label),
    Task.caption: TaskSpec(Task.caption, AnswerKind.text),
    Task.vqa: TaskSpec(Task.vqa, AnswerKind.label, required=("question",)),
    Task.detection_hbb: TaskSpec(Task.detection_hbb, AnswerKind.detections, "hbb", optional=("classes",)),
    Task.detection_obb: TaskSpec(Task.detection_obb, AnswerKind.detections, "obb", optional=("classes",)),
    Task.grounding: TaskSpec(Task.grounding, AnswerKind.box, "hbb", required=("referring",)),
    Task.region_caption: TaskSpec(Task.region_caption, AnswerKind.text, required=("box",)),
}

SENSOR_SENTENCES: dict[Sensor, str] = {
    Sensor.optical: "This is an optical remote sensing image.",
    Sensor.sar: "This is a SAR image.",
    Sensor.infrared: "This is an infrared image.",
}

CLASSIFICATION_PROMPT = (
    "What is the category of this remote sensing image? Answer the question using a single word or phrase."
)
CAPTION_PROMPT = "Please provide a one-sentence caption for the provided remote sensing image in detail."
VQA_SUFFIX = " Answer the question using a single word or phrase."
DETECTION_PROMPT = (
    "Detect all objects shown in the remote sensing image and describe using {kind} bounding boxes."
)
DETECTION_CLASSES_PROMPT = (
    "Detect all objects of the following classes shown in the remote sensing image and describe "
    "using {kind} bounding boxes: {classes}."
)
GROUNDING_PROMPT = "Output the horizontal bounding box of {referring} in the remote sensing image."
REGION_CAPTION_PROMPT = "Please provide a short description of the region {box} in the remote sensing image."


def _as_task(task: Task | str) -> Task:
    try:
        return Task(task)
    except ValueError:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(Task)}") from None


def _as_sensor(sensor: Sensor | str) -> Sensor:
    try:
        return Sensor(sensor.lower() if isinstance(sensor, str) else sensor)
    except ValueError:
        raise ValueError(f"unknown sensor {sensor!r}; known: {', '.join(Sensor)}") from None


def sensor_sentence(sensor: Sensor | str) -> str:
    """The sentence that names the sensor at the start of an instruction."""
    return SENSOR_SENTENCES[_as_sensor(sensor)]


def _phrase(name: str, value: object) -> str:
    """A non-empty single-line phrase from the caller, stripped of spaces and a final full stop."""
    if not isinstance(value, str) or not value.strip() or len(value.strip().splitlines()) != 1:
        raise ValueError(f"{name} must be non-empty single-line text, got {value!r}")
    return value.strip().rstrip(".").strip()


def _class_list(classes: Sequence[str]) -> str:
    if isinstance(classes, str) or not classes:
        raise ValueError(f"classes must be a non-empty list of class names, got {classes!r}")
    return ", ".join(_phrase("a class name", name) for name in classes)


def _template(spec: TaskSpec, args: dict[str, object]) -> str:
    """The task's own sentence, arguments already checked against the spec."""
    match spec.task:
        case Task.classification:
            return CLASSIFICATION_PROMPT
        case Task.caption:
            return CAPTION_PROMPT
        case Task.vqa:
            question = str(args["question"]).strip()
            _phrase("question", question)
            return question if question.endswith(VQA_SUFFIX.strip()) else question + VQA_SUFFIX
        case Task.detection_hbb | Task.detection_obb:
            kind = "horizontal" if spec.box_kind == "hbb" else "oriented"
            if args.get("classes") is None:
                return DETECTION_PROMPT.format(kind=kind)
            return DETECTION_CLASSES_PROMPT.format(kind=kind, classes=_class_list(args["classes"]))  # type: ignore[arg-type]
        case Task.grounding:
            return GROUNDING_PROMPT.format(referring=_phrase("referring", args["referring"]))
        case Task.region_caption:
            box = args["box"]
            if not isinstance(box, HBB | OBB):
                raise ValueError(f"box must be a grid HBB or OBB, got {type(box).__name__}")
            return REGION_CAPTION_PROMPT.format(box=format_box(box))
    raise ValueError(f"no template for task {spec.task!r}")


def instruction(
    task: Task | str,
    sensor: Sensor | str | None = None,
    *,
    question: str | None = None,
    referring: str | None = None,
    box: Box | None = None,
    classes: Sequence[str] | None = None,
) -> str:
    """The human turn for ``task``: the sensor sentence (when a sensor is given), then the paper's
    template.

    ``question`` is needed by VQA, ``referring`` (the referring expression) by grounding, ``box``
    (a grid box, 0–1000) by region captioning; ``classes`` optionally restricts detection to those
    class names. A missing required argument, or one the task does not use, raises ValueError.
    """
    spec = TASK_SPECS[_as_task(task)]
    given = {"question": question, "referring": referring, "box": box, "classes": classes}
    for name, value in given.items():
        if value is None and name in spec.required:
            raise ValueError(f"task {spec.task} needs {name}=")
        if value is not None and name not in spec.required + spec.optional:
            raise ValueError(f"task {spec.task} does not use {name}= (it takes: {_accepted(spec)})")
    text = _template(spec, given)
    return text if sensor is None else f"{sensor_sentence(sensor)} {text}"


def _accepted(spec: TaskSpec) -> str:
    names = spec.required + spec.optional
    return ", ".join(names) if names else "no keyword arguments"
