"""The training objective is the same at every scale: one step over 8 examples with answers of very
different lengths gives the same gradient (and the same logged loss) as 8 × 1, 4 × 2 and 2 × 4
micro-batches × accumulation, and as 2 processes × 4 (gloo on CPU, launched with torchrun).

Run as a script, this file is one rank of the 2-process case: ``CONFIG OUT_DIR OVERRIDES…``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from train_helpers import CONFIGS, generated_records, overrides, torchrun_ranks, write_records

from train.config import load_config
from train.run import setup
from train.steps import backward_step

HERE = Path(__file__).resolve().parent
STAGE1 = CONFIGS / "tiny_stage1.yaml"
EXAMPLES = 8


def one_step_gradients(config: Path, args: list[str]) -> tuple[dict[str, torch.Tensor], float, int]:
    """The trainable parameters' gradients after one step's backward, this process's summed token
    loss and the step's global answer tokens."""
    run = setup(load_config(config, args))
    loss = backward_step(run)
    grads = {
        name: p.grad.detach().float().cpu().clone()
        for name, p in run.model.named_parameters()
        if p.requires_grad
    }
    run.accelerator.end_training()
    return grads, loss.local_sum, loss.tokens


def test_summed_loss_is_the_mean_times_the_answer_tokens() -> None:
    from earthgpt.config import get_preset
    from earthgpt.model.earthgpt import EarthGPT

    model = EarthGPT.from_config(get_preset("tiny"), pretrained=False)
    image = [model.image_token_id] * model.config.num_visual_tokens
    ids = torch.tensor([[5, *image, 6, 7, 8, 9], [5, *image, 10, 11, 12, 13]])
    labels = ids.clone()
    labels[0, :-2] = -100  # 2 answer tokens, the last one predicted by the position before it
    labels[1, 0] = -100  # everything after the first token but the image placeholders: 4
    pixels = torch.randn(2, 3, 56, 56)
    mean = model(ids, pixel_values=pixels, labels=labels, answer_logits_only=True)
    total = model(ids, pixel_values=pixels, labels=labels, answer_logits_only=True, loss_reduction="sum")
    count = model.answer_token_count(ids, labels)
    assert count == 6 == mean.logits.shape[0]
    torch.testing.assert_close(total.loss, mean.loss * count)
    with pytest.raises(ValueError, match="needs answer_logits_only"):
        model(ids, pixel_values=pixels, labels=labels, loss_reduction="sum")


@pytest.fixture(scope="module")
def uneven_set(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """8 caption examples whose answers run from 1 to 22 words."""
    folder = tmp_path_factory.mktemp("uneven")
    records = generated_records(folder, EXAMPLES)
    for i, record in enumerate(records):
        record["conversations"][1]["value"] = " ".join(["field"] * (1 + 3 * i)) + "."
    return write_records(folder, records), {"images": folder / "images"}


def run_args(records: Path, roots: dict[str, Path], output: Path, batch: int, accum: int) -> list[str]:
    return overrides(
        records, roots, output, f"optim.batch_size={batch}", f"optim.grad_accum={accum}",
        "optim.grad_clip=0", "run.progress=false",
    )


@pytest.fixture(scope="module")
def one_big_batch(uneven_set, tmp_path_factory):
    records, roots = uneven_set
    return one_step_gradients(STAGE1, run_args(records, roots, tmp_path_factory.mktemp("b8"), EXAMPLES, 1))


def assert_same_gradients(found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert found.keys() == expected.keys() and len(expected) > 0
    for name, grad in expected.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(found[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize(("batch", "accum"), [(4, 2), (2, 4)])
def test_accumulation_gives_the_gradient_of_one_big_batch(uneven_set, one_big_batch, tmp_path, batch, accum):
    records, roots = uneven_set
    expected, expected_sum, tokens = one_big_batch
    grads, local_sum, step_tokens = one_step_gradients(
        STAGE1, run_args(records, roots, tmp_path, batch, accum)
    )
    assert step_tokens == tokens > EXAMPLES
    assert local_sum == pytest.approx(expected_sum, rel=1e-5)
    assert_same_gradients(grads, expected)


def test_two_processes_give_the_gradient_of_one_big_batch(uneven_set, one_big_batch, tmp_path):
    records, roots = uneven_set
    expected, expected_sum, tokens = one_big_batch
    out = tmp_path / "ranks"
    out.mkdir()
    run = run_args(records, roots, tmp_path / "run", EXAMPLES // 2, 1)
    args = [str(Path(__file__)), str(STAGE1), str(out), *run]
    done = torchrun_ranks(args, fresh=[out, tmp_path / "run"])
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["tokens"] for r in ranks] == [tokens, tokens]
    assert 0 < ranks[0]["local_sum"] < expected_sum  # each rank holds part of the global batch
    assert ranks[0]["local_sum"] + ranks[1]["local_sum"] == pytest.approx(expected_sum, rel=1e-5)
    for rank in (0, 1):  # after the all-reduce both ranks hold the global gradient
        assert_same_gradients(load_file(out / f"rank{rank}.safetensors"), expected)


def _rank_main(argv: list[str]) -> int:
    """One rank of the 2-process test: one step's gradients and loss parts into OUT_DIR."""
    config, out_dir, *args = argv
    grads, local_sum, tokens = one_step_gradients(Path(config), args)
    rank = int(os.environ["RANK"])
    save_file(grads, str(Path(out_dir, f"rank{rank}.safetensors")))
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"local_sum": local_sum, "tokens": tokens}))
    return 0


if __name__ == "__main__":
    sys.exit(_rank_main(sys.argv[1:]))
