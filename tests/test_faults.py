"""Faults: a process killed during an export, a disk that fills during an export or a save of the
weights or during a training checkpoint, and weights with a flipped byte. Each ends with a clear
one-line message and nothing corrupt: the file the user looks at is whole (the previous one, or
none), and damaged weights are refused naming the file.

A full disk is real where this process may mount a small tmpfs (root), and simulated everywhere
(a write that stops half-way with ``ENOSPC``). A kill -9 during a training step or a checkpoint
write is ``tests/test_train_e2e.py::test_resume_after_kill_and_partial_write_equals_uninterrupted``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyogrio
import pytest
import torch
from train_helpers import CONFIGS, generated_records, overrides, write_records

import train.checkpoints
from app import handlers as H
from app.demo_tiles import DEMO_DIR
from app.session_io import Found, Session
from earthgpt import vector_export
from earthgpt.config import get_preset
from earthgpt.geometry import HBB, Detection
from earthgpt.model import checkpoint
from earthgpt.model.checkpoint import load_pretrained, save_pretrained
from earthgpt.model.earthgpt import EarthGPT
from train.__main__ import main as train_main

ROOT = Path(__file__).resolve().parents[1]
TILE = DEMO_DIR / "RGB.byte.tif"


def _ships(count: int) -> list[Found]:
    """``count`` small boxes in rows of 60 on the Landsat tile."""
    corners = [(5 + i % 60 * 10, 5 + i // 60 * 10) for i in range(count)]
    return [Found(Detection("ship", HBB(x, y, x + 7, y + 7)), "p", 1) for x, y in corners]


@pytest.fixture(scope="module")
def landsat() -> Session:
    return H.load_image(Session(), TILE)


def _features(path: Path) -> int:
    if path.suffix == ".gpkg":
        return int(pyogrio.read_info(path)["features"])
    return len(json.loads(path.read_text())["features"])


# ----------------------------------------------------------------------------- kill -9 during an export

KILLED_EXPORT = """
import os, sys, time
from pathlib import Path
from app import handlers as H
from app.session_io import Found, Session
from earthgpt.geometry import HBB, Detection

folder, kind, hook, tile = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ship = Found(Detection("ship", HBB(10, 10, 40, 40)), "p", 1)
session = H.load_image(Session(), tile)
H.export_file(Session(**{**session.__dict__, "found": [ship]}), folder, "scripted", kind)  # the one before

def pause(*args, **kwargs):
    print("paused", flush=True)
    time.sleep(600)

def half_then_pause(self, text, *args, **kwargs):
    with open(self, "w") as out:
        out.write(text[: len(text) // 2])
    pause()

if hook == "before the rename":
    os.replace = pause
else:
    Path.write_text = half_then_pause
H.export_file(Session(**{**session.__dict__, "found": [ship, ship]}), folder, "scripted", kind)
"""


@pytest.mark.parametrize(("kind", "hook"), [("geojson", "before the rename"), ("gpkg", "before the rename"),
                                            ("geojson", "half-way through the write")])
def test_an_export_killed_midway_leaves_the_previous_file_whole(tmp_path: Path, kind: str, hook: str) -> None:
    server = subprocess.Popen([sys.executable, "-c", KILLED_EXPORT, str(tmp_path), kind, hook, str(TILE)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "paused"  # the second export is being written
    finally:
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
        server.stdout.close()
    target = tmp_path / f"RGB.byte_detections.{kind}"
    assert _features(target) == 1  # the earlier export, whole: not the half-written one
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert len(leftovers) == 1 and leftovers[0].startswith(".RGB.byte_detections.")  # hidden, removed with
    # the session's folder (or by the next export's cleanup for a process still alive)


# ----------------------------------------------------------------------------- a full disk

@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs; skipped where mounting one is not allowed (not root)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)],
                             capture_output=True, text=True) if shutil.which("mount") else None
    if mounted is None or mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip() if mounted else 'no mount'}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path, leave: int) -> None:
    """Fill the disk of ``folder`` but for ``leave`` bytes."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
    os.truncate(filler, max(0, filler.stat().st_size - leave))


def _simulate_full_disk(monkeypatch: pytest.MonkeyPatch, target: object, name: str, path_arg: int = 0
                        ) -> None:
    """``target.name`` (whose argument ``path_arg`` is the file) writes a few bytes of the file, then
    fails as a full disk does."""

    def full(*args: object, **kwargs: object) -> None:
        with open(args[path_arg], "wb") as out:
            out.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(target, name, full)


def _full_export(folder: Path, session: Session, kind: str, fill: bool, monkeypatch: pytest.MonkeyPatch
                 ) -> str:
    """Export once (1 detection), fill the disk (really, or simulated), export 2,000: the message."""
    previous, _ = H.export_file(dataclasses.replace(session, found=_ships(1)), folder, "scripted", kind)
    before = previous.read_bytes()
    if fill:
        _fill(folder, leave=16 * 1024)
    elif kind == "gpkg":
        _simulate_full_disk(monkeypatch, vector_export, "write_polygon_layer")
    else:
        _simulate_full_disk(monkeypatch, Path, "write_text")
    with pytest.raises(H.UserError) as caught:
        H.export_file(dataclasses.replace(session, found=_ships(2000)), folder, "scripted", kind)
    assert previous.read_bytes() == before and _features(previous) == 1
    assert sorted(p.name for p in folder.iterdir()) == sorted([previous.name, *(["filler"] if fill else [])])
    return str(caught.value)


@pytest.mark.parametrize("kind", ["geojson", "gpkg"])
def test_a_full_disk_during_an_export(small_disk: Path, landsat: Session, kind: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    message = _full_export(small_disk, landsat, kind, True, monkeypatch)
    assert message.startswith(f"could not write RGB.byte_detections.{kind}: the disk is full")
    assert "\n" not in message and str(small_disk) not in message


@pytest.mark.parametrize("kind", ["geojson", "gpkg"])
def test_a_disk_that_fills_during_an_export_simulated(tmp_path: Path, landsat: Session, kind: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    message = _full_export(tmp_path, landsat, kind, False, monkeypatch)
    assert message == (f"could not write RGB.byte_detections.{kind}: the disk is full (no space left on the "
                       "device); free some space and export again")


def _trained_tiny(seed: int) -> EarthGPT:
    model = EarthGPT.from_config(get_preset("tiny"), pretrained=False, seed=0)
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in model.projector.parameters():
            param.add_(torch.randn_like(param))
    return model


@pytest.mark.parametrize("disk", ["real", "simulated"])
def test_a_full_disk_while_saving_weights_keeps_the_previous_ones(
    tmp_path: Path, disk: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    folder = (request.getfixturevalue("small_disk") if disk == "real" else tmp_path) / "weights"
    save_pretrained(_trained_tiny(1), folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    if disk == "real":
        _fill(folder.parent, leave=4096)
    else:
        _simulate_full_disk(monkeypatch, checkpoint, "save_file", path_arg=1)
    with pytest.raises(Exception, match=r"No space left on device|StorageFull|os error 28"):
        save_pretrained(_trained_tiny(2), folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no temporary file left either
    torch.testing.assert_close(dict(load_pretrained(folder).projector.state_dict()),
                               dict(_trained_tiny(1).projector.state_dict()))


@pytest.fixture(scope="module")
def checkpoint_on_a_full_disk(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int | None, str]:
    """A 4-step tiny run saving every 2 steps whose second checkpoint meets a full disk (simulated):
    its output folder, exit status (None: an exception escaped) and what it wrote to stderr."""
    folder = tmp_path_factory.mktemp("full_run")
    records = write_records(folder, generated_records(folder, 4))
    real_save = train.checkpoints.save_file
    writes: list[str] = []

    def full_at_step_4(tensors: dict, path: str, metadata: dict | None = None) -> None:
        writes.append(path)
        if (metadata or {}).get("step") == "4":
            with open(path, "wb") as out:
                out.write(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(tensors, path, metadata=metadata)

    stderr, status = io.StringIO(), None
    roots, steps = {"images": folder / "images"}, ("optim.max_steps=4", "run.save_every=2")
    argv = [str(CONFIGS / "tiny_stage1.yaml"), *overrides(records, roots, folder / "run", *steps)]
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(stderr):
        patch.setattr(train.checkpoints, "save_file", full_at_step_4)
        with contextlib.suppress(OSError):
            status = train_main(argv)
    assert len(writes) == 2  # the step-2 checkpoint, then the one that failed
    return folder / "run", status, stderr.getvalue()


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(
    checkpoint_on_a_full_disk: tuple[Path, int | None, str]
) -> None:
    output, _, _ = checkpoint_on_a_full_disk
    assert train.checkpoints.latest_checkpoint(output) == train.checkpoints.checkpoint_dir(output, 2)
    train.checkpoints.verify(train.checkpoints.checkpoint_dir(output, 2))
    assert not train.checkpoints.checkpoint_dir(output, 4).exists()


def test_a_full_disk_while_checkpointing_is_one_line(
    checkpoint_on_a_full_disk: tuple[Path, int | None, str]
) -> None:
    _, status, stderr = checkpoint_on_a_full_disk
    assert status == 2
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "Traceback" not in stderr


# ----------------------------------------------------------------------------- a flipped byte

def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("delta", [True, False])
@pytest.mark.parametrize("where", ["header", "tensors"])
def test_weights_with_a_flipped_byte_are_refused_naming_the_file(tmp_path: Path, delta: bool, where: str
                                                                  ) -> None:
    save_pretrained(_trained_tiny(1), tmp_path, delta=delta)
    weights = tmp_path / checkpoint.WEIGHTS_FILE
    _flip(weights, 12 if where == "header" else weights.stat().st_size - 3)
    expected = (rf"^{re.escape(str(weights))} is damaged: its sha256 \w{{12}}… is not the \w{{12}}… "
                r"recorded in config\.json when it was saved; export or download")
    with pytest.raises(ValueError, match=expected):
        load_pretrained(tmp_path)


def test_a_config_saved_before_the_checksum_loads_unchecked(tmp_path: Path) -> None:
    save_pretrained(_trained_tiny(1), tmp_path)
    meta = json.loads((tmp_path / checkpoint.CONFIG_FILE).read_text())
    del meta[checkpoint.WEIGHTS_SHA256]  # as a checkpoint saved before the field was recorded
    (tmp_path / checkpoint.CONFIG_FILE).write_text(json.dumps(meta))
    torch.testing.assert_close(dict(load_pretrained(tmp_path).projector.state_dict()),
                               dict(_trained_tiny(1).projector.state_dict()))


def test_the_shipped_weights_are_checked_and_a_flipped_byte_in_a_copy_is_refused(tmp_path: Path) -> None:
    shipped = checkpoint.resolve_model("nano")  # the default model: assets/earthgpt-nano
    meta = checkpoint.read_meta(shipped)
    assert re.fullmatch(r"[0-9a-f]{64}", meta[checkpoint.WEIGHTS_SHA256])
    checkpoint.verify_weights(shipped, meta)  # the shipped file is the one recorded
    copy = Path(shutil.copytree(shipped, tmp_path / "earthgpt-nano"))
    weights = copy / checkpoint.WEIGHTS_FILE
    _flip(weights, weights.stat().st_size // 2)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(weights))} is damaged: its sha256"):
        load_pretrained(copy)


def test_a_base_with_a_flipped_byte_is_refused_naming_the_file(nano_base: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / nano_base.name
    copy.mkdir()
    shutil.copy(nano_base / "manifest.json", copy)
    for role in ("llm", "vit"):
        (copy / role).symlink_to(nano_base / role)
    shutil.copytree(nano_base / "cnn", copy / "cnn")
    damaged = copy / "cnn" / "model.safetensors"
    _flip(damaged, damaged.stat().st_size - 3)
    monkeypatch.setenv("EARTHGPT_CACHE", str(tmp_path))
    expected = rf"trained on another base: .*weight files that differ: {re.escape(str(damaged))}$"
    with pytest.raises(ValueError, match=expected):
        load_pretrained("nano")
