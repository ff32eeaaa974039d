"""Instruction templates: the paper's wording, the sensor sentence first, clear errors."""

from __future__ import annotations

import pytest

from earthgpt.geometry import HBB, obb_from_corners
from earthgpt.sensors import Sensor
from earthgpt.tasks import TASK_SPECS, AnswerKind, Task, instruction, sensor_sentence


def test_every_task_has_a_spec():
    assert set(TASK_SPECS) == set(Task)
    assert TASK_SPECS[Task.detection_obb].answer is AnswerKind.detections
    assert TASK_SPECS[Task.detection_obb].box_kind == "obb"


def test_paper_templates_with_the_sensor_first():
    assert instruction(Task.classification, Sensor.optical) == (
        "This is an optical remote sensing image. What is the category of this remote sensing image? "
        "Answer the question using a single word or phrase."
    )
    assert instruction("caption", "SAR") == (
        "This is a SAR image. Please provide a one-sentence caption for the provided remote sensing "
        "image in detail."
    )
    assert instruction(Task.vqa, Sensor.infrared, question="How many ships are there?") == (
        "This is an infrared image. How many ships are there? "
        "Answer the question using a single word or phrase."
    )
    assert instruction(Task.detection_hbb) == (
        "Detect all objects shown in the remote sensing image and describe using horizontal bounding boxes."
    )
    assert instruction(Task.detection_obb, Sensor.sar).endswith("describe using oriented bounding boxes.")


def test_detection_restricted_to_classes():
    text = instruction(Task.detection_obb, classes=["ship", "storage tank"])
    assert text == (
        "Detect all objects of the following classes shown in the remote sensing image and describe "
        "using oriented bounding boxes: ship, storage tank."
    )


def test_grounding_and_region_caption():
    assert instruction(Task.grounding, Sensor.optical, referring="the white tank at the top left.") == (
        "This is an optical remote sensing image. Output the horizontal bounding box of the white tank "
        "at the top left in the remote sensing image."
    )
    assert instruction(Task.region_caption, box=HBB(10, 20, 300, 400)) == (
        "Please provide a short description of the region [10, 20, 300, 400] in the remote sensing image."
    )
    obb = obb_from_corners([(10, 20), (30, 20), (30, 40), (10, 40)])
    assert "[10, 20, 30, 20, 30, 40, 10, 40]" in instruction(Task.region_caption, box=obb)


def test_vqa_suffix_is_not_doubled():
    question = "Is there a road? Answer the question using a single word or phrase."
    assert instruction(Task.vqa, question=question) == question


def test_sensor_sentences():
    assert [sensor_sentence(s) for s in Sensor] == [
        "This is an optical remote sensing image.",
        "This is a SAR image.",
        "This is an infrared image.",
    ]


@pytest.mark.parametrize(
    ("task", "kwargs", "message"),
    [
        (Task.vqa, {}, "needs question="),
        (Task.vqa, {"question": "  "}, "non-empty"),
        (Task.grounding, {}, "needs referring="),
        (Task.region_caption, {}, "needs box="),
        (Task.region_caption, {"box": HBB(0, 0, 2000, 10)}, "grid coordinate"),
        (Task.caption, {"question": "why?"}, "does not use question="),
        (Task.detection_hbb, {"classes": []}, "non-empty list"),
        (Task.detection_hbb, {"classes": "ship"}, "non-empty list"),
        ("segmentation", {}, "unknown task"),
    ],
)
def test_errors_say_what_was_expected(task, kwargs, message):
    with pytest.raises(ValueError, match=message):
        instruction(task, **kwargs)


def test_unknown_sensor():
    with pytest.raises(ValueError, match="known: optical, sar, infrared"):
        instruction(Task.caption, "hyperspectral")
