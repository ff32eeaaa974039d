"""One rank of the two-process training test (launched by torchrun): two optimizer steps of the tiny
stage-1 config, then this rank's parameter checksum and the images it saw, as JSON in OUT_DIR."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from earthgpt.identity import tensors_digest
from train.config import load_config
from train.run import setup
from train.steps import train_step


def checksum(model) -> str:
    """sha256 over every parameter's name, shape, dtype and bytes."""
    return tensors_digest(dict(model.named_parameters())).hexdigest()


def main(argv: list[str]) -> int:
    config_path, out_dir, *overrides = argv
    run = setup(load_config(config_path, overrides))
    seen: list[str] = []
    stream_next = run.stream.next

    def record_next():
        batch = stream_next()
        seen.extend(batch["image_path"])
        return batch

    run.stream.next = record_next
    start = checksum(run.model)
    for _ in range(2):
        train_step(run)
    rank = run.accelerator.process_index
    payload = {
        "rank": rank,
        "world": run.accelerator.num_processes,
        "start": start,
        "sha256": checksum(run.model),
        "images": seen,
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(payload))
    run.accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
