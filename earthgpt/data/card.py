"""The dataset card of an MMRS build: ``card.json`` (machine-readable counts) and ``card.md``
(the same as tables). Counts of records and turns per task, sensor, dataset, split and licence,
turns per task and sensor, VQA question types, the sources and options used, and every skip or
warning with its reason. Paths in the card are relative; nothing in it depends on the time or on
where the data lives, so the same inputs give the same card.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from earthgpt.data.records import SkipLog
from earthgpt.data.sources import Source


def _pairs(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The human messages of a record (one per turn)."""
    return [m for m in record["conversations"] if m["from"] == "human"]


def _table(records: Sequence[dict[str, Any]], field: str) -> dict[str, dict[str, int]]:
    """``{value of record[field]: {"records", "turns", "generated_turns"}}`` sorted by value."""
    rows: dict[str, Counter] = defaultdict(Counter)
    for record in records:
        turns = _pairs(record)
        row = rows[record[field]]
        row["records"] += 1
        row["turns"] += len(turns)
        row["generated_turns"] += sum(t["generated"] for t in turns)
    return {k: dict(sorted(rows[k].items())) for k in sorted(rows)}


def _by_task(
    records: Sequence[dict[str, Any]],
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    tasks: dict[str, Counter] = defaultdict(Counter)
    task_sensor: dict[str, Counter] = defaultdict(Counter)
    for record in records:
        for task in record["tasks"]:
            tasks[task]["records"] += 1
        for turn in _pairs(record):
            tasks[turn["task"]]["turns"] += 1
            tasks[turn["task"]]["generated_turns"] += int(turn["generated"])
            task_sensor[turn["task"]][record["sensor"]] += 1
    return (
        {k: dict(sorted(v.items())) for k, v in sorted(tasks.items())},
        {k: dict(sorted(v.items())) for k, v in sorted(task_sensor.items())},
    )


def build_card(
    records: Sequence[dict[str, Any]],
    sources: Sequence[Source],
    log: SkipLog,
    files: Sequence[str],
    schema_version: int,
) -> dict[str, Any]:
    """The card as a JSON-ready dict."""
    by_task, task_sensor = _by_task(records)
    qtypes = Counter(t.get("question_type") for r in records for t in _pairs(r) if t.get("question_type"))
    turns = [t for r in records for t in _pairs(r)]
    return {
        "name": "MMRS unified instruction set",
        "schema_version": schema_version,
        "files": list(files),
        "image_roots": sorted({r["image_root"] for r in records}),
        "sources": [
            {
                "kind": s.kind,
                "root": s.root_name,
                "dataset": s.dataset,
                "options": dict(sorted(s.options.items())),
            }
            for s in sources
        ],
        "totals": {
            "records": len(records),
            "turns": len(turns),
            "generated_turns": sum(t["generated"] for t in turns),
            "skipped": log.total_skipped,
        },
        "by_task": by_task,
        "turns_by_task_and_sensor": task_sensor,
        "by_sensor": _table(records, "sensor"),
        "by_dataset": _table(records, "dataset"),
        "by_split": _table(records, "split"),
        "by_licence": _table(records, "licence"),
        "vqa_question_types": dict(sorted(qtypes.items())),
        "skipped": log.as_rows("skipped"),
        "warnings": log.as_rows("warning"),
    }


def _md_table(title: str, rows: dict[str, dict[str, int]], columns: Sequence[str]) -> list[str]:
    lines = [
        f"## {title}",
        "",
        "| " + " | ".join([title.split()[-1], *columns]) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for key, row in rows.items():
        lines.append("| " + " | ".join([key, *(str(row.get(c, 0)) for c in columns)]) + " |")
    return [*lines, ""]


def render_markdown(card: dict[str, Any]) -> str:
    """``card.md``: the card's counts as Markdown tables."""
    totals = card["totals"]
    cols = ("records", "turns", "generated_turns")
    sensors = sorted({s for row in card["turns_by_task_and_sensor"].values() for s in row})
    lines = [
        f"# {card['name']}",
        "",
        f"{totals['records']} records, {totals['turns']} turns "
        f"({totals['generated_turns']} template-generated), "
        f"{totals['skipped']} skipped. Files: {', '.join(card['files'])}. Image roots: "
        f"{', '.join(card['image_roots'])} (each found in the folder image_roots.json records for it, "
        "else under $EARTHGPT_DATA, unless mapped otherwise). Schema: docs/MMRS.md.",
        "",
        *_md_table("Records and turns by task", card["by_task"], cols),
        *_md_table("Turns by task and sensor", card["turns_by_task_and_sensor"], sensors),
        *_md_table("Records and turns by sensor", card["by_sensor"], cols),
        *_md_table("Records and turns by dataset", card["by_dataset"], cols),
        *_md_table("Records and turns by split", card["by_split"], cols),
        *_md_table("Records and turns by licence", card["by_licence"], cols),
        "## VQA question types",
        "",
        *(f"- {k}: {v} turns" for k, v in card["vqa_question_types"].items()),
        "",
        "## Sources",
        "",
        *(
            f"- `{s['kind']}` root `{s['root']}` → dataset `{s['dataset']}`"
            + (f", options {s['options']}" if s["options"] else "")
            for s in card["sources"]
        ),
        "",
    ]
    for kind in ("skipped", "warnings"):
        lines += [f"## {kind.capitalize()}", ""]
        rows = card[kind] or []
        lines += [
            f"- {r['source']}: {r['reason']}: {r['count']} (e.g. {', '.join(r['examples'])})" for r in rows
        ]
        lines += ["- none"] if not rows else []
        lines.append("")
    return "\n".join(lines)


def write_card(card: dict[str, Any], out_dir: Path) -> None:
    """Write ``card.json`` and ``card.md`` into ``out_dir``."""
    (out_dir / "card.json").write_text(
        json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (out_dir / "card.md").write_text(render_markdown(card) + "\n", encoding="utf-8")
