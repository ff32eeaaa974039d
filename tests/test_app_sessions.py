"""Sessions that last: the saved file refers to a kept copy of the image (size and sha256), reopens
after the upload's temporary copy is gone, can be re-pointed at a moved image, and gives the model
its conversation back."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from test_app_handlers import run, scripted_engine

from app import handlers as H
from app.demo_tiles import DEMO_DIR
from app.image_store import find_image, image_ref, keep_image, prune_store, store_dir
from app.session_files import open_session_file, repoint_session, save_session_file
from app.session_io import Session, session_from_json, session_to_json


@pytest.fixture
def upload(shared_data: Path, tmp_path: Path) -> Path:
    """The Landsat tile as Gradio's temporary copy of an upload would be."""
    folder = tmp_path / "gradio" / "3f2a"
    folder.mkdir(parents=True)
    return Path(shutil.copy(shared_data / "geotiff" / "optical" / "RGB.byte.tif", folder / "RGB.byte.tif"))


def _worked(path: Path) -> Session:
    engine, _ = scripted_engine("ship [100, 200, 300, 400]")
    session = H.set_window(H.load_image(Session(), path), 100, 50, 300, 300)
    session = H.draw_region(session, [{"xmin": 10, "ymin": 10, "xmax": 50, "ymax": 60}])
    session = run(H.quick_task(session, engine, "detection_hbb"))
    return run(H.ask(session, engine, "How many ships?"))


def test_the_saved_session_outlives_the_upload(upload: Path, tmp_path: Path) -> None:
    session = _worked(upload)
    saved = save_session_file(session, tmp_path, "scripted")
    image = json.loads(saved.read_text())["image"]
    ref = image_ref(upload)
    assert (image["size"], image["sha256"]) == (ref.size, ref.sha256)
    assert Path(image["path"]).parent == store_dir() / ref.sha256 and image["name"] == "RGB.byte.tif"
    shutil.rmtree(upload.parent)  # the server restarted: Gradio's temporary copy is gone
    back = open_session_file(saved)
    assert back.window == session.window and back.region == session.region and back.name == "RGB.byte.tif"
    assert [f.detection for f in back.found] == [f.detection for f in session.found]
    assert [t.prompt for t in back.turns] == [t.prompt for t in session.turns]
    assert keep_image(back.path).path == Path(back.path)  # saving again keeps the one copy


def test_a_moved_image_is_refused_unless_it_is_the_same(upload: Path, tmp_path: Path) -> None:
    session = _worked(upload)
    saved = save_session_file(session, tmp_path, "scripted")
    moved = Path(shutil.copy(upload, tmp_path / "moved.tif"))
    shutil.rmtree(store_dir() / image_ref(upload).sha256)
    shutil.rmtree(upload.parent)
    with pytest.raises(H.UserError, match=r"RGB\.byte\.tif is no longer where") as caught:
        open_session_file(saved)
    assert str(tmp_path) not in str(caught.value)  # no server path in the message
    other = tmp_path / "other.tif"
    data = moved.read_bytes()
    other.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, one bit differs
    with pytest.raises(H.UserError, match=r"other\.tif is not the session's image RGB\.byte\.tif"):
        repoint_session(saved, other)
    with pytest.raises(H.UserError, match="open the saved session"):
        repoint_session(None, moved)
    back = repoint_session(saved, moved)
    assert back.path == str(moved) and back.name == "RGB.byte.tif" and back.window == session.window
    assert len(back.turns) == 2 and len(back.found) == len(session.found)


def test_the_model_gets_the_conversation_back_on_reopen(upload: Path, tmp_path: Path) -> None:
    session = _worked(upload)
    back = open_session_file(save_session_file(session, tmp_path, "scripted"))
    engine, chats = scripted_engine("Two.")
    back = run(H.ask(back, engine, "And planes?"))
    assert chats[0].restored == [(t.prompt, t.answer) for t in session.turns]
    assert chats[0].questions == ["And planes?"]
    moved = run(H.ask(H.set_window(back, 0, 0, 200, 200), engine, "Here?"))  # a new window: a new chat
    assert not hasattr(chats[1], "restored") and len(moved.turns) == 4


def test_only_this_windows_turns_since_the_last_move_come_back() -> None:
    here, there = (0, 0, 9, 9), (5, 5, 9, 9)
    turns = [H.Turn("ask", "a", "1", here), H.Turn("ask", "b", "2", there), H.Turn("ask", "c", "3", here),
             H.Turn("ask", "d", f"4\n{H.MODEL_ERROR} x]", here), H.Turn("ask", "e", "5", here)]
    assert H.conversation_so_far(turns, here) == [("c", "3"), ("e", "5")]
    assert H.conversation_so_far(turns, there) == []


def test_a_sar_image_keeps_its_cross_polarised_sibling() -> None:
    vv = next(DEMO_DIR.glob("*_VV.tif"))
    kept = keep_image(vv)
    assert (kept.path.parent / vv.name.replace("_VV.", "_VH.")).is_file()
    assert find_image(str(vv), kept.size, kept.sha256) == vv  # still where it was: used as it is
    assert find_image("/nowhere/x.tif", kept.size, kept.sha256) == kept.path
    assert find_image("/nowhere/x.tif", None, None) is None


def test_session_files_without_an_image_reference_still_open(upload: Path) -> None:
    data = session_to_json(Session(path=str(upload), name="RGB.byte.tif", window=(0, 0, 64, 64)))
    del data["image"]["size"], data["image"]["sha256"]
    assert session_from_json(data).image_sha256 is None
    data["image"].update(size=12, sha256="abc")
    with pytest.raises(ValueError, match="'sha256' must be 64 hex digits"):
        session_from_json(data)
    data["image"].update(size=None)
    with pytest.raises(ValueError, match="given together"):
        session_from_json(data)


def test_the_store_is_bounded_keeping_the_images_used_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """At most ``$EARTHGPT_APP_IMAGES_MAX_MB``: the least recently saved or reopened images go first,
    and any not used for ``$EARTHGPT_APP_IMAGES_DAYS``; the image being saved always stays."""
    monkeypatch.setenv("EARTHGPT_APP_IMAGES", str(tmp_path / "store"))
    monkeypatch.setenv("EARTHGPT_APP_IMAGES_MAX_MB", "1")
    files = []
    for name, kilobytes in (("a", 400), ("b", 400), ("c", 400), ("big", 1500)):
        files.append(tmp_path / f"{name}.png")
        files[-1].write_bytes(bytes([len(files)]) * kilobytes * 1024)
    a, b = keep_image(files[0]), keep_image(files[1])
    os.utime(a.path.parent, (time.time() - 3000,) * 2)  # a saved first,
    os.utime(b.path.parent, (time.time() - 2000,) * 2)  # b later,
    assert find_image("/gone/a.png", a.size, a.sha256) == a.path  # then a reopened: b is the least recent
    c = keep_image(files[2])  # 1.2 MB would be over the bound: b goes
    assert sorted(p.name for p in store_dir().iterdir()) == sorted([a.sha256, c.sha256])
    assert find_image("/gone/b.png", b.size, b.sha256) is None
    os.utime(c.path.parent, (time.time() - 31 * 86_400,) * 2)  # not used for 31 days
    assert prune_store() == [c.sha256]
    big = keep_image(files[3])  # alone over the bound: kept, and the rest goes
    assert [p.name for p in store_dir().iterdir()] == [big.sha256] and big.path.is_file()
    monkeypatch.setenv("EARTHGPT_APP_IMAGES_DAYS", "soon")
    with pytest.raises(ValueError, match=r"\$EARTHGPT_APP_IMAGES_DAYS must be a positive whole number"):
        prune_store()
