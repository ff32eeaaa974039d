"""Training end to end on the tiny random model: stage 1 then stage 2 on real AID images, the loss on a
repeated batch, resume after a kill (and after a half-written checkpoint), the stage-2 base check."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import CONFIGS, aid_records, generated_records, overrides, write_records

import train.steps
from earthgpt.model.checkpoint import load_pretrained
from train import checkpoints
from train.__main__ import main

STAGE1 = str(CONFIGS / "tiny_stage1.yaml")
STAGE2 = str(CONFIGS / "tiny_stage2.yaml")


def losses(output: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (output / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def aid_set(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("aid_mmrs")
    return write_records(folder, aid_records(shared_data / "aid" / "AID", 6)), {
        "AID": shared_data / "aid" / "AID"
    }


@pytest.fixture(scope="module")
def generated_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gen_mmrs")
    return write_records(folder, generated_records(folder, 6)), {"images": folder / "images"}


def test_stage1_then_stage2_on_aid_images(aid_set, tmp_path):
    records, roots = aid_set
    out1, out2 = tmp_path / "s1", tmp_path / "s2"
    assert main([STAGE1, *overrides(records, roots, out1, "optim.max_steps=3")]) == 0
    assert all(torch.isfinite(torch.tensor(losses(out1))))
    stage1 = load_pretrained(out1 / "final")
    assert stage1.stage == 1
    assert (
        main(
            [
                STAGE2,
                *overrides(
                    records,
                    roots,
                    out2,
                    f"model.init_from={out1 / 'final'}",
                    f"data.feature_cache={tmp_path / 'cache'}",
                    "optim.max_steps=3",
                ),
            ]
        )
        == 0
    )
    assert all(torch.isfinite(torch.tensor(losses(out2))))
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 6  # one entry per image
    stage2 = load_pretrained(out2 / "final")
    assert stage2.stage == 2
    projector_1 = dict(stage1.projector.named_parameters())
    for name, param in stage2.projector.named_parameters():  # stage 2 keeps the stage-1 projector
        assert torch.equal(param, projector_1[name])
    scales = [m.scale for m in stage2.llm.modules() if hasattr(m, "scale")]
    assert scales and any(not torch.equal(s, torch.ones_like(s)) for s in scales)


def test_loss_decreases_on_a_repeated_batch(generated_set, tmp_path, capsys):
    records, roots = generated_set
    two = write_records(tmp_path / "two", [json.loads(x) for x in records.read_text().splitlines()[:2]])
    assert (
        main(
            [
                STAGE1,
                *overrides(
                    two,
                    roots,
                    tmp_path / "run",
                    "optim.max_steps=5",
                    "optim.batch_size=2",
                    "optim.warmup_steps=1",
                    "run.save_every=100",
                ),
            ]
        )
        == 0
    )
    # the run says what its epoch holds before it trains
    assert re.search(r"^mix: [\d,]+ examples an epoch: \w+ [\d,]+ \(100\.0 %", capsys.readouterr().out, re.M)
    values = losses(tmp_path / "run")
    assert len(values) == 5 and all(torch.isfinite(torch.tensor(values)))
    assert values[-1] < values[0] - 0.05, values


def test_resume_after_kill_and_partial_write_equals_uninterrupted(generated_set, tmp_path, monkeypatch):
    records, roots = generated_set
    common = ["optim.max_steps=4", "run.save_every=2", "optim.grad_accum=2", "optim.batch_size=1"]
    assert main([STAGE1, *overrides(records, roots, tmp_path / "a", *common)]) == 0

    real_save = train.steps.save_checkpoint

    def save_then_die(run):
        real_save(run)
        if run.step == 2:
            raise KeyboardInterrupt("simulated kill after the step-2 checkpoint")

    monkeypatch.setattr(train.steps, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        main([STAGE1, *overrides(records, roots, tmp_path / "b", *common)])
    monkeypatch.undo()
    good = checkpoints.checkpoint_dir(tmp_path / "b", 2)
    # A run killed while writing step 3: a complete-looking folder whose weights file is cut short,
    # plus a temporary folder of another write.
    broken = checkpoints.checkpoint_dir(tmp_path / "b", 3)
    shutil.copytree(good, broken)
    data = (broken / checkpoints.TRAINABLE).read_bytes()
    (broken / checkpoints.TRAINABLE).write_bytes(data[: len(data) // 2])
    checkpoints.temp_dir(tmp_path / "b", 4).mkdir()
    assert checkpoints.latest_checkpoint(tmp_path / "b") == good

    assert main([STAGE1, *overrides(records, roots, tmp_path / "b", *common)]) == 0
    final_a = load_file(checkpoints.checkpoint_dir(tmp_path / "a", 4) / checkpoints.TRAINABLE)
    final_b = load_file(checkpoints.checkpoint_dir(tmp_path / "b", 4) / checkpoints.TRAINABLE)
    assert final_a.keys() == final_b.keys() and len(final_a) > 0
    for name in final_a:
        assert torch.equal(final_a[name], final_b[name]), name
    assert losses(tmp_path / "a")[2:] == losses(tmp_path / "b")[-2:]


def test_stage2_refuses_an_export_of_another_base(generated_set, tmp_path, capsys):
    records, roots = generated_set
    assert main([STAGE1, *overrides(records, roots, tmp_path / "s1", "optim.max_steps=1")]) == 0
    final = tmp_path / "s1" / "final"
    code = main(
        [STAGE2, *overrides(records, roots, tmp_path / "s2", f"model.init_from={final}", "model.seed=7")]
    )
    assert code == 2
    assert "trained on another base" in capsys.readouterr().err
    code = main([STAGE2, *overrides(records, roots, tmp_path / "s3", f"model.init_from={tmp_path / 's2'}")])
    assert code == 2


def test_stage2_continues_a_stage2_export_from_its_trained_values(generated_set, tmp_path):
    """A stage-2 export may start another stage 2 (a second phase with another data mix): its scale
    and shift vectors, projector and stage-1 tensors carry over instead of starting again from ones
    and zeros. At learning rate 0 the continued export equals the one it started from."""
    records, roots = generated_set
    assert main([STAGE1, *overrides(records, roots, tmp_path / "s1", "optim.max_steps=1")]) == 0
    start = f"model.init_from={tmp_path / 's1' / 'final'}"
    assert main([STAGE2, *overrides(records, roots, tmp_path / "s2", start, "optim.max_steps=2")]) == 0
    first = load_file(tmp_path / "s2" / "final" / "model.safetensors")
    scales = [name for name in first if name.endswith(".scale")]
    assert scales and any(not torch.all(first[name] == 1) for name in scales)  # stage 2 trained them
    frozen = ["optim.lr=0", "optim.projector_lr=0", "optim.stage1_lr=0", "optim.max_steps=1"]
    start = f"model.init_from={tmp_path / 's2' / 'final'}"
    assert main([STAGE2, *overrides(records, roots, tmp_path / "s3", start, *frozen)]) == 0
    second = load_file(tmp_path / "s3" / "final" / "model.safetensors")
    assert second.keys() == first.keys()
    for name in first:
        assert torch.equal(second[name], first[name]), name
    assert load_pretrained(tmp_path / "s3" / "final").stage == 2


def test_stage2_may_use_another_visual_grid_than_stage1(generated_set, tmp_path):
    """The token grid is stage 2's choice (a finer grid for box tasks): the projector maps each
    token on its own, so stage 1's export (4 × 4 tokens) loads, trains and exports with 2 × 2."""
    from earthgpt.model.checkpoint import read_meta

    records, roots = generated_set
    assert main([STAGE1, *overrides(records, roots, tmp_path / "s1", "optim.max_steps=1")]) == 0
    assert read_meta(tmp_path / "s1" / "final")["config"]["num_visual_tokens"] == 16
    final = tmp_path / "s1" / "final"
    grid = "model.config={image_token_id: 259, num_visual_tokens: 4}"
    assert main([STAGE2, *overrides(records, roots, tmp_path / "s2", f"model.init_from={final}",
                                    "optim.max_steps=1", grid)]) == 0
    assert read_meta(tmp_path / "s2" / "final")["config"]["num_visual_tokens"] == 4
    from earthgpt.model.checkpoint import load_pretrained

    model = load_pretrained(tmp_path / "s2" / "final")
    size = model.config.image_size
    assert model.vision(torch.zeros(1, 3, size, size)).shape[1] == 4


@pytest.mark.parametrize(("key", "value", "module"), [
    ("position", "fourier2d", "GridPosition2D"), ("context", "mean", "GlobalContext"),
])
def test_stage2_may_add_a_position_signal_or_global_context_to_an_export_without_it(
    generated_set, tmp_path, key, value, module
):
    """Stage 2 may add the projector's 2-D position signal, or its global context, to an export
    trained without it: the export's projector is continued (at learning rate 0 it stays as it was
    and the addition stays zero), the new export holds the addition's tensors and loads with it.
    Another projector change is still refused."""
    from earthgpt.model import projector as projectors
    from earthgpt.model.checkpoint import load_pretrained, read_meta

    records, roots = generated_set
    assert main([STAGE1, *overrides(records, roots, tmp_path / "s1", "optim.max_steps=1")]) == 0
    final = tmp_path / "s1" / "final"
    start = load_file(final / "model.safetensors")
    pos = f"model.config={{image_token_id: 259, projector: {{{key}: {value}}}}}"
    frozen = ["optim.lr=0", "optim.projector_lr=0", "optim.stage1_lr=0", "optim.max_steps=1"]
    assert main([STAGE2, *overrides(records, roots, tmp_path / "s2", f"model.init_from={final}",
                                    pos, *frozen)]) == 0
    assert read_meta(tmp_path / "s2" / "final")["config"]["projector"][key] == value
    saved = load_file(tmp_path / "s2" / "final" / "model.safetensors")
    added = sorted(name for name in saved if name.startswith("projector.") and name not in start)
    assert [name.split(".", 2)[2] for name in added] == ["linear.bias", "linear.weight"]
    assert all(not saved[name].any() for name in added)
    for name in start:
        if name.startswith("projector."):
            assert torch.equal(saved[name], start[name]), name
    model = load_pretrained(tmp_path / "s2" / "final")
    assert isinstance(model.projector[-1], getattr(projectors, module))
    other = "model.config={image_token_id: 259, projector: {type: linear}}"
    assert main([STAGE2, *overrides(records, roots, tmp_path / "s3", f"model.init_from={final}",
                                    other, "optim.max_steps=1")]) == 2


def test_stage2_may_add_low_rank_adapters_to_an_export_without_them(generated_set, tmp_path):
    """Stage 2 may add low-rank adapters (``stage2_lora_rank``) to an export trained without them:
    they start at zero (B = 0), train, land in the delta and load; a continuation keeps them as
    they are, and one that asks for another rank is refused."""
    from earthgpt.model.checkpoint import read_meta

    records, roots = generated_set
    assert main([STAGE1, *overrides(records, roots, tmp_path / "s1", "optim.max_steps=1")]) == 0
    final = tmp_path / "s1" / "final"
    lora = "model.config={image_token_id: 259, stage2_lora_rank: 2}"
    assert main([STAGE2, *overrides(records, roots, tmp_path / "s2", f"model.init_from={final}",
                                    lora, "optim.max_steps=2")]) == 0
    assert read_meta(tmp_path / "s2" / "final")["config"]["stage2_lora_rank"] == 2
    saved = load_file(tmp_path / "s2" / "final" / "model.safetensors")
    b = [name for name in saved if name.endswith(".lora_b")]
    assert len(b) == 6 and any(saved[name].any() for name in b)  # two layers × three MLP projections
    assert load_pretrained(tmp_path / "s2" / "final").config.stage2_lora_rank == 2
    again = f"model.init_from={tmp_path / 's2' / 'final'}"
    assert main([STAGE2, *overrides(records, roots, tmp_path / "s3", again, lora, "optim.max_steps=1")]) == 0
    assert set(load_file(tmp_path / "s3" / "final" / "model.safetensors")) == set(saved)
    other = "model.config={image_token_id: 259, stage2_lora_rank: 4}"
    assert main([STAGE2, *overrides(records, roots, tmp_path / "s4", again, other, "optim.max_steps=1")]) == 2


def test_stop_at_ends_early_on_the_full_schedule(generated_set, tmp_path):
    records, roots = generated_set
    common = ["optim.batch_size=2", "optim.warmup_steps=1", "run.save_every=100", "run.log_every=1"]
    assert main([STAGE1, *overrides(records, roots, tmp_path / "full", "optim.max_steps=4", *common)]) == 0
    assert main([STAGE1, *overrides(records, roots, tmp_path / "stop", "optim.max_steps=4",
                                    "run.stop_at=2", *common)]) == 0
    full = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    stop = [json.loads(x) for x in (tmp_path / "stop" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in stop] == [1, 2] and (tmp_path / "stop" / "final").is_dir()
    assert [m["lr"] for m in stop] == [m["lr"] for m in full[:2]]  # the 4-step schedule, cut at 2
    assert [m["loss"] for m in stop] == [m["loss"] for m in full[:2]]


def test_a_step_checkpoint_exports_as_the_final_of_a_run_stopped_there(generated_set, tmp_path, capsys):
    """``python -m train.export_weights`` takes a training checkpoint (``checkpoints/step-N``) as
    well as a final export: the run's config rebuilds the model, the step's tensors go in, and the
    delta equals the ``final`` of a run that ends at that step."""
    from train.export_weights import main as export

    records, roots = generated_set
    common = ["optim.max_steps=2", "run.save_every=1", "run.keep_checkpoints=2", "optim.warmup_steps=1"]
    assert main([STAGE1, *overrides(records, roots, tmp_path / "run", *common)]) == 0
    step2 = checkpoints.checkpoint_dir(tmp_path / "run", 2)
    step1 = checkpoints.checkpoint_dir(tmp_path / "run", 1)
    assert export([str(step2), str(tmp_path / "at2"), "--dtype", "float32", "--max-mb", "1000"]) == 0
    assert export([str(step1), str(tmp_path / "at1"), "--dtype", "float32", "--max-mb", "1000"]) == 0
    assert (tmp_path / "at2" / "tokenizer").is_dir()
    final = load_pretrained(tmp_path / "run" / "final").state_dict()
    at2 = load_pretrained(tmp_path / "at2").state_dict()
    at1 = load_pretrained(tmp_path / "at1").state_dict()
    assert final.keys() == at2.keys()
    assert all(torch.equal(at2[name], final[name].to(at2[name].dtype)) for name in final)
    assert not all(torch.equal(at1[name], at2[name]) for name in at2)  # step 1 is another model
    (tmp_path / "run" / "train_config.yaml").unlink()
    assert export([str(step2), str(tmp_path / "lost")]) == 2
    assert "train_config.yaml is missing" in capsys.readouterr().err
