"""Conversations in the LLaVA json layout: ``[{"id", "image", "conversations": [{"from": "human"
| "gpt", "value"}]}]`` (LLaVA pretrain caption sets, LLaVA-Instruct, GeoChat-Instruct exports).

``PATH`` is the json file; ``image`` paths are relative to the ``images`` option's folder (relative
to the json's folder, default the json's folder). Each human/assistant pair is kept verbatim (the
``<image>`` placeholder removed) in ``annotations["dialogue"]``; entries of the same image are
joined. The ``task`` option says which task the turns count as (default ``caption``, so any
caption set serves stage 1). Entries without an image or with unpaired turns are counted skips.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from earthgpt.data.karpathy import json_file, load_json
from earthgpt.data.records import Sample, SkipLog
from earthgpt.data.sources import Source
from earthgpt.tasks import Task

OPTIONS: dict[str, str] = {
    "images": "image folder relative to the json's folder (default: the json's folder)",
    "task": "task the turns count as (default caption)",
}
_ROLES = {"human": "human", "user": "human", "gpt": "assistant", "assistant": "assistant"}


def _pairs(conversations: Any) -> list[dict[str, str]] | None:
    """Human/assistant pairs of one entry, or None when the turns do not alternate."""
    if not isinstance(conversations, list) or len(conversations) < 2 or len(conversations) % 2:
        return None
    pairs = []
    for human, answer in zip(conversations[0::2], conversations[1::2], strict=True):
        roles = [
            _ROLES.get(str(t.get("from", "")).lower()) if isinstance(t, dict) else None
            for t in (human, answer)
        ]
        if roles != ["human", "assistant"]:
            return None
        question = re.sub(r"\s*<image>\s*", " ", str(human.get("value", ""))).strip()
        reply = str(answer.get("value", "")).strip()
        if not question or not reply:
            return None
        pairs.append({"human": question, "assistant": reply})
    return pairs


def convert(source: Source, log: SkipLog) -> Iterator[Sample]:
    """One sample per image: ``{"dialogue": [{"human", "assistant"}], "dialogue_task": task}``."""
    task = Task(source.opt("task") or "caption")
    path = json_file(source)
    data = load_json(source, log, path)
    if data is None:
        return
    if not isinstance(data, list):
        log.skip(source.label, "LLaVA json is not a list of entries", path.name)
        return
    dialogues: dict[str, list[dict[str, str]]] = {}
    for entry in data:
        image = entry.get("image") if isinstance(entry, dict) else None
        if not isinstance(image, str) or not image:
            log.skip(
                source.label,
                "entry without an image",
                str(entry.get("id", "?")) if isinstance(entry, dict) else "?",
            )
            continue
        pairs = _pairs(entry.get("conversations"))
        if pairs is None:
            log.skip(source.label, "conversation does not alternate human/assistant", image)
            continue
        dialogues.setdefault(image, []).extend(pairs)
    folder = source.root_dir / (source.opt("images") or "")
    for image, pairs in sorted(dialogues.items()):
        key = str(PurePosixPath(image).with_suffix(""))
        annotations = {"dialogue": pairs, "dialogue_task": task.value}
        sample = source.make_sample(log, folder / Path(image), key, None, annotations)
        if sample is not None:
            yield sample
