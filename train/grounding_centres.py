"""Where grounding answers point, against where the objects are, with a control for luck.

    python -m train.grounding_centres --data chips1 reports/one_object_300.predictions.jsonl

Acc@0.5 says whether a box lands; before boxes land, the centre of each answer says whether the
model points near the object at all. For every grounding turn that ``earthgpt eval`` answered
(its ``*.predictions.jsonl``, earthgpt's 0–1000 grid dialect), against the val record's reference
box: Acc@0.5, the predicted centre inside the object's box, the median distance between the two
centres (grid units, and pixels of the 224-px model input), centres within 14 px (a visual token)
and within 100 grid units along x and along y, and how many distinct answers there are.

**The control**: the same answers paired with other turns' objects (every cyclic shift of the
answer list against the reference list but the true pairing). A model that answers with a few
well-placed constant boxes scores as well shifted as paired; one that reads the image scores
better paired than under every shift. Prints the shifted mean and maximum of the counts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from earthgpt.geometry import HBB, iou

INPUT_PX = 224
"""Side of the nano's model input: distances in grid units are reported in its pixels too."""
TOKEN_PX = 14
"""One visual token's cell at 16 × 16 tokens over 224 px."""
AXIS_GRID = 100
"""Centre offset along one axis, in grid units, counted as near (a tenth of the image)."""


def pair_counts(answers: Sequence[HBB], objects: Sequence[HBB]) -> dict[str, int]:
    """Counts over paired answers and reference boxes (grid units)."""
    counts = {"acc@0.5": 0, "centre_inside": 0, "within_token": 0, "x_near": 0, "y_near": 0}
    for answer, obj in zip(answers, objects, strict=True):
        (px, py), (ox, oy) = answer.center, obj.center
        counts["acc@0.5"] += iou(answer, obj) >= 0.5
        counts["centre_inside"] += obj.x1 <= px <= obj.x2 and obj.y1 <= py <= obj.y2
        counts["within_token"] += ((px - ox) ** 2 + (py - oy) ** 2) ** 0.5 * INPUT_PX / 1000 <= TOKEN_PX
        counts["x_near"] += abs(px - ox) <= AXIS_GRID
        counts["y_near"] += abs(py - oy) <= AXIS_GRID
    return counts


def centre_report(answers: Sequence[HBB], objects: Sequence[HBB]) -> dict[str, object]:
    """The statistics of the module doc for answers paired with their objects, and the control."""
    n = len(objects)
    if n < 2:
        raise ValueError("need at least two answered grounding turns")
    distances = [
        ((a[0] - o[0]) ** 2 + (a[1] - o[1]) ** 2) ** 0.5
        for a, o in zip((b.center for b in answers), (b.center for b in objects), strict=True)
    ]
    shifted = [pair_counts(answers, [objects[(i + s) % n] for i in range(n)]) for s in range(1, n)]
    median = statistics.median(distances)
    return {
        "turns": n,
        **pair_counts(answers, objects),
        "median_centre_distance_grid": round(median, 1),
        "median_centre_distance_px": round(median * INPUT_PX / 1000, 1),
        "distinct_answers": len(set(answers)),
        "shifted_mean": {k: round(statistics.mean(c[k] for c in shifted), 2) for k in shifted[0]},
        "shifted_max": {k: max(c[k] for c in shifted) for k in shifted[0]},
    }


def paired_boxes(data: Path, predictions: Path, split: str = "val") -> tuple[list[HBB], list[HBB], int]:
    """The parsed answers and reference boxes of the grounding turns in ``predictions``, and how
    many answers held no usable box (left out)."""
    from earthgpt.data.mmrs_reader import read_jsonl, read_records
    from earthgpt.eval.inputs import all_turns, index_predictions
    from earthgpt.textbox import parse_box

    rows = index_predictions(read_jsonl(predictions, "prediction"), str(predictions))
    references = {
        (t.record_id, t.turn): t.answer
        for t in all_turns(read_records(data, split=split))
        if t.task == "grounding"
    }
    answers, objects, unusable = [], [], 0
    for key, row in rows.items():
        if key not in references:
            continue
        if row.get("dialect", "earthgpt") != "earthgpt":
            raise ValueError(
                f"{predictions}: answers in the {row['dialect']!r} dialect; expected earthgpt's grid"
            )
        answer, obj = parse_box(row["answer"]), parse_box(references[key])
        if not isinstance(obj, HBB):
            continue
        if not isinstance(answer, HBB):
            unusable += 1
            continue
        answers.append(answer)
        objects.append(obj)
    return answers, objects, unusable


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.grounding_centres", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("predictions", type=Path, nargs="+", help="earthgpt eval's *.predictions.jsonl")
    parser.add_argument("--data", type=Path, required=True, help="MMRS records the answers were asked from")
    parser.add_argument("--split", default="val")
    args = parser.parse_args(argv)
    reports = []
    for path in args.predictions:
        try:
            answers, objects, unusable = paired_boxes(args.data, path, args.split)
            reports.append(
                {"predictions": str(path), **centre_report(answers, objects), "unusable_answers": unusable}
            )
        except (ValueError, FileNotFoundError) as err:
            print(f"error: {path}: {err}", file=sys.stderr)
            return 2
    print("\n".join(json.dumps(report) for report in reports))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
