"""Sharded training through accelerate on two CPU processes (gloo), launched with ``accelerate
launch --config_file train/configs/accelerate/<engine>.yaml --num_processes 2 --mixed_precision no``
(the shipped configs, in float32 so the comparison is tight).

FSDP2, stages 1 and 2 of the tiny preset: the sharded run (2 processes × batch 2) ends with the
parameters of the unsharded run (1 process × batch 4, the same global batch) to ``rtol=RTOL,
atol=ATOL`` after ``STEPS`` AdamW steps, and its final export, gathered onto rank 0, loads with
``load_pretrained`` and answers in a ``ChatSession`` (what ``earthgpt chat --model`` runs). In
stage 1 a sharded run killed after its step-2 checkpoint and launched again ends bit-identical to
the uninterrupted one (stage 2 resumes through the same code; one kill keeps FSDP to four launches).
``fsdp.yaml`` turns on ``cpu_ram_efficient_loading``: every FSDP run here builds its weights on rank
0 only (rank 1 builds the architecture on the meta device, and the log of each launch says how many
bytes of parameters each rank held before sharding) and gets its shards from rank 0 in ``prepare``;
stage 2 also reads its vision features from a cache whose fingerprint rank 0 computes.
DeepSpeed ZeRO-2 and ZeRO-3, stage 1, the same checks when ``deepspeed`` is installed (it is not in
``requirements.txt``; skipped otherwise); and ZeRO-2 owning accumulation: 2 processes × micro-batch
2 × ``grad_accum`` 2 end with the parameters of 2 × 4 × 1 (the same global batch of 8) to
``rtol=RTOL, atol=ATOL``, in a nearly plain-SGD regime (AdamW with ``eps`` far above the gradient's
size, no clipping) where a gradient divided again by the accumulation steps would move the
parameters by half as much.

accelerate 1.15 gives FSDP only to a multi-device state: on CPU processes it would run DDP and
ignore the FSDP config; and without a GPU it starts no process group for DeepSpeed. Each rank
therefore starts the gloo group as accelerate does for CPU processes (:func:`start_cpu_processes`)
and, for FSDP, presents that state as multi-device; everything after that (the plugin from the
launcher's environment, ``fully_shard`` per ``LlamaDecoderLayer`` or the ZeRO engine, the gathers)
is accelerate's, torch's and DeepSpeed's own path. The FSDP rank files hold optimizer shards
(``sharded`` lists them), which shows the run was sharded.

Run as a script, this file is one rank: ``DIE_AFTER_STEP CONFIG OVERRIDES…`` (0: never die).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from train_helpers import CONFIGS, free_port, generated_records, overrides, run_ranks, write_records

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE_CONFIGS = ROOT / "train" / "configs" / "accelerate"
STEPS = 4
RTOL, ATOL = 1e-4, 1e-5  # parameters of ~1e-2..1; one AdamW step at lr 3e-3 moves them by ~3e-3


def start_cpu_processes() -> None:
    """Start the gloo process group as accelerate does for CPU processes; under FSDP also mark the
    state multi-device so the next ``Accelerator()`` takes FSDP from the launcher's environment."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType

    state = PartialState(cpu=True)
    if os.environ.get("ACCELERATE_USE_FSDP") == "true":
        state.distributed_type = DistributedType.MULTI_GPU


def launch(engine: str, config: Path, args: list[str], die_after: int = 0) -> subprocess.CompletedProcess:
    """Two ranks of this file under ``accelerate launch`` with the shipped ``<engine>.yaml``
    (through :func:`run_ranks`: one launch again after a gloo abort, from an empty output folder)."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    launcher += ["--config_file", str(ACCELERATE_CONFIGS / f"{engine}.yaml"), "--num_processes", "2"]
    launcher += ["--mixed_precision", "no", "--main_process_ip", "127.0.0.1"]
    paths = [str(ROOT), str(ROOT / "tests")]
    if engine.startswith("deepspeed"):
        import deepspeed

        paths.append(str(Path(deepspeed.__file__).parents[1]))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": "1"}

    rank = [str(Path(__file__)), str(die_after), str(config), *args]

    def command(port: int) -> list[str]:
        return [*launcher, "--main_process_port", str(port), *rank]

    if die_after:  # the run is meant to die
        return subprocess.run(command(free_port()), env=env, capture_output=True, text=True, timeout=900)
    output = next(Path(a.split("=", 1)[1]) for a in args if a.startswith("run.output_dir="))
    return run_ranks(command, env, fresh=[output])


def final_delta(output: Path) -> dict[str, torch.Tensor]:
    return load_file(output / "final" / "model.safetensors")


def assert_close(found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], exact: bool) -> None:
    assert found.keys() == expected.keys() and len(expected) > 0
    for name, tensor in expected.items():
        if exact:
            assert torch.equal(found[name], tensor), name
        else:
            torch.testing.assert_close(found[name], tensor, rtol=RTOL, atol=ATOL, msg=name)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    folder = tmp_path_factory.mktemp("fsdp_mmrs")
    return write_records(folder, generated_records(folder, 8)), {"images": folder / "images"}


def run_sharded(engine: str, config: Path, dataset, root: Path, extra: list[str], resume: bool) -> dict:
    """``config`` under ``engine`` (2 processes × batch 2); with ``resume``, also killed after its
    step-2 checkpoint, then launched again. Returns the output folders."""
    records, roots = dataset
    args = [f"optim.max_steps={STEPS}", "run.save_every=2", "optim.batch_size=2", *extra]
    out = {name: root / name for name in ("sharded", "resumed")}
    done = launch(engine, config, overrides(records, roots, out["sharded"], *args))
    assert done.returncode == 0, done.stderr[-3000:]
    out["log"] = root / "sharded.log"
    out["log"].write_text(done.stderr)
    if resume:
        killed = launch(engine, config, overrides(records, roots, out["resumed"], *args), die_after=2)
        assert killed.returncode != 0 and "simulated kill" in killed.stderr
        assert not (out["resumed"] / "final").exists()
        done = launch(engine, config, overrides(records, roots, out["resumed"], *args))
        assert done.returncode == 0, done.stderr[-3000:]
        assert "resumed from" in done.stdout
    return out


def run_stage(stage: int, dataset, root: Path, *extra: str, resume: bool) -> dict[str, Path]:
    """One stage unsharded (1 process × batch 4) and under FSDP (:func:`run_sharded`)."""
    from train.__main__ import main

    records, roots = dataset
    config = CONFIGS / f"tiny_stage{stage}.yaml"
    unsharded = root / "unsharded"
    args = [f"optim.max_steps={STEPS}", "run.save_every=2", "optim.batch_size=4", *extra]
    assert main([str(config), *overrides(records, roots, unsharded, *args)]) == 0
    return {"unsharded": unsharded, **run_sharded("fsdp", config, dataset, root, list(extra), resume)}


@pytest.fixture(scope="module")
def stage1(dataset, tmp_path_factory) -> dict[str, Path]:
    return run_stage(1, dataset, tmp_path_factory.mktemp("fsdp_stage1"), resume=True)


@pytest.fixture(scope="module")
def stage2(dataset, stage1, tmp_path_factory) -> dict[str, Path]:
    start = f"model.init_from={stage1['unsharded'] / 'final'}"
    root = tmp_path_factory.mktemp("fsdp_stage2")
    return run_stage(2, dataset, root, start, f"data.feature_cache={root / 'features'}", resume=False)


@pytest.mark.parametrize("stage", [1, 2])
def test_sharded_run_ends_with_the_unsharded_parameters(stage, request):
    out = request.getfixturevalue(f"stage{stage}")
    rank = torch.load(out["sharded"] / "checkpoints" / "step-00000002" / "rank1.pt", weights_only=True)
    assert rank["sharded"], "the optimizer state was not sharded: FSDP did not run"
    sharded, unsharded = final_delta(out["sharded"]), final_delta(out["unsharded"])
    assert_close(sharded, unsharded, exact=False)
    step2 = load_file(out["sharded"] / "checkpoints" / "step-00000002" / "trainable.safetensors")
    assert any(not torch.equal(sharded[name], t) for name, t in step2.items())  # steps 3 and 4 moved it


@pytest.mark.parametrize("stage", [1, 2])
def test_only_rank0_materialises_the_weights(stage, request):
    """With ``cpu_ram_efficient_loading`` rank 1 built every parameter on the meta device, rank 0
    the whole model (the run then ended with the unsharded parameters: the test above)."""
    from earthgpt.model.checkpoint import load_pretrained
    from earthgpt.model.tuning import apply_stage

    log = request.getfixturevalue(f"stage{stage}")["log"].read_text()
    held = dict(re.findall(r"process (\d): (\d+) bytes of parameters materialised before sharding", log))
    model = load_pretrained("tiny")  # float32, as the runs here; the stage adds scale/shift
    apply_stage(model, stage)
    assert held == {"0": str(sum(p.numel() * p.element_size() for p in model.parameters())), "1": "0"}


def test_killed_and_resumed_sharded_run_equals_the_uninterrupted_one(stage1):
    assert_close(final_delta(stage1["resumed"]), final_delta(stage1["sharded"]), exact=True)
    for step in (2, 4):  # the optimizer shards of both ranks went through the kill
        folders = [out / "checkpoints" / f"step-{step:08d}" for out in (stage1["sharded"], stage1["resumed"])]
        for rank in (0, 1):
            a, b = (torch.load(f / f"rank{rank}.pt", weights_only=True) for f in folders)
            assert a["sharded"] == b["sharded"] and a["sharded"]
            for pid, key in a["sharded"]:
                assert torch.equal(a["optimizer"]["state"][pid][key], b["optimizer"]["state"][pid][key])


@pytest.mark.parametrize("stage", [1, 2])
def test_sharded_export_loads_and_answers(stage, request, dataset):
    """What ``earthgpt chat --model FOLDER`` does: the random base rebuilt from the export's config
    and seed, the run's byte-level tokenizer taken from the export."""
    from PIL import Image

    from earthgpt.inference import ChatSession, load_model

    final = request.getfixturevalue(f"stage{stage}")["sharded"] / "final"
    model, processor = load_model(str(final))
    assert model.stage == stage and processor.image_token_id == model.config.image_token_id
    session = ChatSession(model, processor)
    session.set_image(np.asarray(Image.open(dataset[1]["images"] / "scene_0.png").convert("RGB")))
    session.ask("Describe the image.", max_new_tokens=4)
    assert 1 <= len(session.answer_ids) <= 4


@pytest.fixture(scope="module", params=[2, 3], ids=["zero2", "zero3"])
def zero(request, dataset, stage1, tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("deepspeed", reason="DeepSpeed is an optional extra: pip install deepspeed==0.19.8")
    root = tmp_path_factory.mktemp(f"zero{request.param}")
    config = CONFIGS / "tiny_stage1.yaml"
    return run_sharded(f"deepspeed_zero{request.param}", config, dataset, root, [], resume=True)


def test_deepspeed_zero_matches_unsharded_resumes_and_exports(zero, stage1):
    from earthgpt.model.checkpoint import load_pretrained

    assert_close(final_delta(zero["sharded"]), final_delta(stage1["unsharded"]), exact=False)
    assert_close(final_delta(zero["resumed"]), final_delta(zero["sharded"]), exact=True)
    assert load_pretrained(zero["sharded"] / "final").stage == 1


@pytest.fixture(scope="module")
def zero2_accumulation(dataset, tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("deepspeed", reason="DeepSpeed is an optional extra: pip install deepspeed==0.19.8")
    records, roots = dataset
    root = tmp_path_factory.mktemp("zero2_accumulation")
    sgd_like = ["optim.lr=30.0", "optim.eps=1000.0", "optim.grad_clip=0", "optim.warmup_steps=0"]
    out = {}
    for name, batch, accum in (("accumulated", 2, 2), ("one_batch", 4, 1)):
        out[name] = root / name
        args = [f"optim.max_steps={STEPS}", f"run.save_every={STEPS}", f"optim.batch_size={batch}",
                f"optim.grad_accum={accum}", *sgd_like]
        args = overrides(records, roots, out[name], *args)
        done = launch("deepspeed_zero2", CONFIGS / "tiny_stage1.yaml", args)
        assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_deepspeed_owns_accumulation_with_the_same_objective(zero2_accumulation, dataset):
    from earthgpt.model.checkpoint import delta_state, load_pretrained
    from earthgpt.model.tuning import apply_stage

    records, _ = dataset
    assert sum(1 for _ in records.open()) == 8  # one step is the whole set: both runs see the same batches
    accumulated = final_delta(zero2_accumulation["accumulated"])
    assert_close(accumulated, final_delta(zero2_accumulation["one_batch"]), exact=False)
    start = load_pretrained("tiny")  # the seed-0 random base and projector both runs started from
    apply_stage(start, 1)
    moved = max(float((t - accumulated[name]).abs().max()) for name, t in delta_state(start).items())
    # half this move (a gradient divided again by the accumulation steps) would be over the
    # tolerance, ATOL + RTOL·|p| = 11·ATOL even for parameters near 1 (it is 5e-3 here)
    assert moved > 30 * ATOL


def _rank_main(argv: list[str]) -> int:
    """One rank: the run of CONFIG with OVERRIDES, killed after the checkpoint of DIE_AFTER_STEP."""
    die_after, config, *args = argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")  # as the CLI
    start_cpu_processes()
    import train.steps
    from train.config import load_config

    real_save = train.steps.save_checkpoint

    def save_then_die(run):
        path = real_save(run)
        if run.step == int(die_after):
            raise KeyboardInterrupt(f"simulated kill after the step-{run.step} checkpoint")
        return path

    train.steps.save_checkpoint = save_then_die
    train.steps.train(load_config(config, args))
    # after this line an abort happened in the process's teardown, with every output written
    logging.getLogger("rank").info("process %d: the run returned", int(os.environ.get("RANK", "0")))
    return 0


if __name__ == "__main__":
    sys.exit(_rank_main(sys.argv[1:]))
