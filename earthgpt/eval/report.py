"""Write an evaluation report: ``report.json`` (every number) and a Markdown summary (tables).

Both are deterministic for the same input: JSON keys are sorted, floats are written as Python
writes them, ``NaN`` (a metric with no items) becomes ``null``; Markdown rows follow a fixed order
(all items, then each sensor, then each source, names sorted) and values have 4 decimals.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

HEADLINE_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy",),
    "caption": ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider"),
    "vqa": ("accuracy", "average_accuracy"),
    "detection_hbb": ("map", "map_voc07"),
    "detection_obb": ("map", "map_voc07"),
    "grounding": ("acc@0.5", "mean_iou"),
    "region_caption": ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider"),
}
COUNT_KEYS = ("n", "n_images")


def json_ready(value: Any) -> Any:
    """``value`` with NaN/inf floats replaced by ``None`` and tuples as lists (recursively)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


def write_json(report: Mapping[str, Any], path: Path) -> None:
    """Write the report as indented JSON with sorted keys."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_ready(report), indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4f}"
    if value is None:
        return "n/a"
    return str(value)


def _count(metrics: Mapping[str, Any]) -> Any:
    return next((metrics[k] for k in COUNT_KEYS if k in metrics), "")


def _subsets(task_report: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
    """``(sensor, source, metrics)`` rows: all items, each sensor, each source."""
    rows = [("all", "all", task_report["all"])]
    rows += [(name, "all", m) for name, m in sorted(task_report.get("by_sensor", {}).items())]
    rows += [("all", name, m) for name, m in sorted(task_report.get("by_source", {}).items())]
    return rows


def _task_table(task: str, task_report: Mapping[str, Any]) -> list[str]:
    lines = ["| metric | value | n | sensor | source |", "|---|---|---|---|---|"]
    for sensor, source, metrics in _subsets(task_report):
        for metric in HEADLINE_METRICS.get(task, ()):
            if metric in metrics:
                value, count = _fmt(metrics[metric]), _count(metrics)
                lines.append(f"| {metric} | {value} | {count} | {sensor} | {source} |")
    return lines


def _detail_lines(task: str, overall: Mapping[str, Any]) -> list[str]:
    """Per question type (VQA) or per class (detection, classification) for all items."""
    if task == "vqa" and overall.get("per_type"):
        rows = [(t, v["accuracy"], v["n"]) for t, v in sorted(overall["per_type"].items())]
        head = "| question type | accuracy | n |"
    elif task.startswith("detection") and overall.get("per_class"):
        rows = [(c, v["ap"], v["n_gt"]) for c, v in sorted(overall["per_class"].items())]
        head = "| class | AP@0.5 | n objects |"
    elif task == "classification" and overall.get("per_class_accuracy"):
        rows = [(c, v, "") for c, v in sorted(overall["per_class_accuracy"].items())]
        head = "| class | accuracy | |"
    else:
        return []
    return ["", head, "|---|---|---|", *(f"| {name} | {_fmt(value)} | {n} |" for name, value, n in rows)]


def markdown_summary(report: Mapping[str, Any], title: str = "EarthGPT evaluation") -> str:
    """The report as Markdown: the run summary, then one table per task (metric, value, n, sensor,
    source) and the per-type / per-class details of all items."""
    summary = report.get("summary", {})
    lines = [f"# {title}", ""]
    lines += [
        f"- {key}: {_fmt(summary[key])}" for key in sorted(summary) if not isinstance(summary[key], list)
    ]
    for task, task_report in report.get("tasks", {}).items():
        lines += ["", f"## {task}", "", *_task_table(task, task_report)]
        lines += _detail_lines(task, task_report["all"])
        parse = task_report.get("parse")
        if parse:
            lines += ["", "Answers parsed: " + ", ".join(f"{k} {v}" for k, v in sorted(parse.items()))]
    return "\n".join(lines) + "\n"


def write_markdown(report: Mapping[str, Any], path: Path, title: str = "EarthGPT evaluation") -> None:
    """Write :func:`markdown_summary` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown_summary(report, title))
