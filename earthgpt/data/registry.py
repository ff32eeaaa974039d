"""The source layouts ``earthgpt mmrs build`` reads: kind name → converter and its options.

Converters are looked up here by exact kind name (or a listed alias), never by matching parts of
names; an unknown kind or option raises with the known ones listed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from earthgpt.data import (
    coco,
    coco_captions,
    dior_rsvg,
    dota,
    folder_per_class,
    karpathy,
    llava,
    mmrs_records,
    rsvqa,
    voc,
)
from earthgpt.data.records import Sample, SkipLog
from earthgpt.data.sources import COMMON_OPTIONS, Source

ConvertFn = Callable[[Source, SkipLog], Iterator[Sample]]


@dataclass(frozen=True)
class Converter:
    """One source layout: its converter, a one-line description, its own options."""

    kind: str
    convert: ConvertFn
    description: str
    options: dict[str, str]


CONVERTERS: dict[str, Converter] = {
    c.kind: c
    for c in (
        Converter(
            "folder-per-class",
            folder_per_class.convert,
            "scene classes, one folder per class (AID, NWPU-RESISC45, UC Merced, EuroSAT)",
            folder_per_class.OPTIONS,
        ),
        Converter(
            "karpathy-json",
            karpathy.convert,
            "captions in Karpathy json (RSICD, UCM-Captions, Sydney-Captions)",
            karpathy.OPTIONS,
        ),
        Converter(
            "coco-captions", coco_captions.convert, "captions in COCO captions json", coco_captions.OPTIONS
        ),
        Converter("llava", llava.convert, "LLaVA json conversations (any caption set)", llava.OPTIONS),
        Converter("rsvqa", rsvqa.convert, "RSVQA LR / HR split files", rsvqa.OPTIONS),
        Converter("dota", dota.convert, "DOTA labelTxt polygons (OBB + HBB)", dota.OPTIONS),
        Converter(
            "voc-hbb",
            voc.convert_hbb,
            "VOC XML horizontal boxes (HIT-UAV normal_xml, SSDD VOC, DIOR)",
            voc.OPTIONS,
        ),
        Converter(
            "voc-obb",
            voc.convert_obb,
            "VOC XML rotated boxes (HIT-UAV rotate_xml, SSDD VOCOBB, DIOR-R)",
            voc.OPTIONS,
        ),
        Converter("coco", coco.convert, "COCO detection json (SSDD coco/)", coco.OPTIONS),
        Converter("dior-rsvg", dior_rsvg.convert, "DIOR-RSVG grounding XML + split lists", dior_rsvg.OPTIONS),
        Converter(
            "mmrs",
            mmrs_records.convert,
            "MMRS records (.jsonl or a folder): the app's MMRS export, an earlier build",
            mmrs_records.OPTIONS,
        ),
    )
}
ALIASES: dict[str, str] = {"aid": "folder-per-class", "rsicd": "karpathy-json"}


def get_converter(kind: str) -> Converter:
    """The converter of ``kind`` (or of an alias); ValueError listing the kinds otherwise."""
    name = ALIASES.get(kind, kind)
    if name not in CONVERTERS:
        known = ", ".join([*CONVERTERS, *(f"{a} (= {k})" for a, k in ALIASES.items())])
        raise ValueError(f"unknown source kind {kind!r}; known: {known}")
    return CONVERTERS[name]


def check_options(source: Source) -> None:
    """Raise when ``source`` has an option neither its converter nor :data:`COMMON_OPTIONS` knows."""
    converter = get_converter(source.kind)
    unknown = sorted(set(source.options) - set(converter.options) - set(COMMON_OPTIONS))
    if unknown:
        known = ", ".join(sorted({*converter.options, *COMMON_OPTIONS}))
        raise ValueError(
            f"{source.label}: unknown option(s) {', '.join(unknown)}; {converter.kind} takes: {known}"
        )
