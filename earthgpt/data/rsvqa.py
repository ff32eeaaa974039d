"""RSVQA (LR and HR) in its official split-file layout: for each split ``<P>_images.json``,
``<P>_questions.json``, ``<P>_answers.json`` (``P`` such as ``LR_split_train`` or
``USGS_split_test_phili``), each a dict with one list (``images`` / ``questions`` / ``answers``).

``PATH`` is the folder holding the split files; every ``*_images.json`` there is read. Images are
``<images>/<id><ext>``: the full distribution keeps ``Images_LR/<id>.tif`` (LR) and
``Data/<id>.tif`` (HR), the project's sample ``Images/<id>.png``, so both are options (default:
the first of ``Images``, ``Images_LR``, ``Data`` that exists, and the first of ``.png``, ``.tif``
that exists per image). Entries with ``"active": false`` are left out, as the official loaders do.
The split is the word in ``P`` (train / val / test / test_phili); the sample's ``P`` names none,
so it gets the hash split. All Q/A of an image go into one record; the question type is kept
(``comp`` renamed ``comparison``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from earthgpt.data.karpathy import load_json
from earthgpt.data.records import Sample, SkipLog, find_image, split_from_name
from earthgpt.data.sources import Source

OPTIONS: dict[str, str] = {
    "images": "image folder relative to PATH (default: Images, Images_LR or Data, whichever exists)",
    "ext": "image extension (default: .png or .tif, whichever exists)",
}
QUESTION_TYPES = {"comp": "comparison"}


def _entries(source: Source, log: SkipLog, path: Path, key: str) -> dict[int, dict[str, Any]] | None:
    """The active entries of one split file by id, or None (counted) when the file is unusable."""
    data = load_json(source, log, path)
    if data is None:
        return None
    items = data.get(key) if isinstance(data, dict) else None
    if not isinstance(items, list):
        log.skip(source.label, f"no '{key}' list in the split file", path.name)
        return None
    return {
        int(item["id"]): item
        for item in items
        if isinstance(item, dict) and isinstance(item.get("id"), int) and item.get("active", True)
    }


def _with_mark(question: str) -> str:
    """A question ending in ``?`` (some RSVQA questions have no mark: "Is it a rural or an urban area")."""
    return question if question.endswith(("?", ".")) else question + "?"


def _qa(image: dict[str, Any], questions: dict, answers: dict) -> list[dict[str, str]]:
    """The Q/A of one image in question-id order (questions without an active answer dropped)."""
    rows = []
    for qid in sorted(int(q) for q in image.get("questions_ids", []) if int(q) in questions):
        question = questions[qid]
        answer = next((answers[a] for a in question.get("answers_ids", []) if a in answers), None)
        if answer is None or not str(question.get("question", "")).strip():
            continue
        qtype = str(question.get("type", "unknown"))
        rows.append(
            {
                "question": _with_mark(" ".join(str(question["question"]).split())),
                "answer": str(answer.get("answer", "")).strip(),
                "type": QUESTION_TYPES.get(qtype, qtype),
            }
        )
    return rows


def _image_dir(source: Source) -> Path:
    if source.opt("images"):
        return source.root_dir / source.opt("images")
    for name in ("Images", "Images_LR", "Data"):
        if (source.root_dir / name).is_dir():
            return source.root_dir / name
    return source.root_dir


def convert(source: Source, log: SkipLog) -> Iterator[Sample]:
    """One sample per active image: ``{"qa": [{"question", "answer", "type"}]}``."""
    if not source.path.is_dir():
        raise ValueError(f"{source.label}: expected the folder of the RSVQA split files, got {source.path}")
    folder = _image_dir(source)
    extensions = (source.opt("ext"),) if source.opt("ext") else (".png", ".tif", ".tiff")
    extensions = tuple(e if e.startswith(".") else f".{e}" for e in extensions)
    for images_file in sorted(source.path.glob("*_images.json")):
        prefix = images_file.name[: -len("_images.json")]
        images = _entries(source, log, images_file, "images")
        questions = _entries(source, log, source.path / f"{prefix}_questions.json", "questions")
        answers = _entries(source, log, source.path / f"{prefix}_answers.json", "answers")
        if images is None or questions is None or answers is None:
            continue
        split = split_from_name(prefix.split("_split_", 1)[-1])
        for image_id in sorted(images):
            qa = _qa(images[image_id], questions, answers)
            if not qa:
                log.skip(source.label, "image without answered questions", f"{prefix}:{image_id}")
                continue
            path = find_image(folder, str(image_id), extensions) or folder / f"{image_id}{extensions[0]}"
            sample = source.make_sample(log, path, str(image_id), split, {"qa": qa})
            if sample is not None:
                yield sample
