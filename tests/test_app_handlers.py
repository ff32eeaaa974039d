"""The app's pure handlers, without a server: a scripted model checks the whole chain from a grid
box in a window to full-raster pixels to lon/lat, and bad input gets a clear error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform as warp_transform

from app import handlers as H
from app.export import session_geojson
from app.overlay import session_overview, session_view
from app.session_files import open_session_file, save_session_file
from app.session_io import Session
from earthgpt.geometry import HBB, OBB
from earthgpt.raster import RasterError


class ScriptedChat:
    """Answers every question with a fixed text, streamed in two pieces; records what it saw."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.images: list[np.ndarray] = []
        self.questions: list[str] = []

    def set_image(self, rgb: np.ndarray) -> None:
        self.images.append(rgb)

    def ask(self, text: str, max_new_tokens: int = 256, stream: bool = False, **options: object):
        self.questions.append(text)
        half = len(self.answer) // 2
        return iter([self.answer[:half], self.answer[half:]]) if stream else self.answer

    def restore(self, exchanges: list[tuple[str, str]]) -> None:
        self.restored = list(exchanges)


def scripted_engine(answer: str) -> tuple[H.Engine, list[ScriptedChat]]:
    chats: list[ScriptedChat] = []

    def new_chat(sensor: object) -> ScriptedChat:
        chats.append(ScriptedChat(answer))
        return chats[-1]

    return H.Engine("scripted", new_chat), chats


def run(turns):
    """The last session a streaming handler yields."""
    return list(turns)[-1]


@pytest.fixture
def landsat(shared_data: Path) -> Path:
    return shared_data / "geotiff" / "optical" / "RGB.byte.tif"


def test_grid_box_in_window_lands_on_rasterio_lonlat(landsat: Path) -> None:
    engine, chats = scripted_engine("ship [100, 200, 300, 400]\nboat [1, 2, 3")
    session = H.load_image(Session(), landsat)
    session = H.set_window(session, 200, 100, 400, 300)
    steps = list(H.quick_task(session, engine, "detection_hbb"))
    assert len(steps) >= 3 and steps[0].turns[-1].answer != steps[-1].turns[-1].answer  # streamed
    session = steps[-1]
    assert chats[0].images[0].shape == (300, 400, 3)
    assert "horizontal" in chats[0].questions[0]
    assert session.turns[-1].skipped == 1
    (found,) = session.found
    assert found.turn == 1 and found.detection.label == "ship"
    box = found.detection.box
    assert (box.x1, box.y1, box.x2, box.y2) == pytest.approx((240, 160, 320, 220))
    with rasterio.open(landsat) as src:
        xs, ys = rasterio.transform.xy(src.transform, [160, 220], [240, 320], offset="ul")
        lons, lats = warp_transform(src.crs, "EPSG:4326", list(xs), list(ys))
    collection = session_geojson(session, "scripted")
    ring = collection["features"][0]["geometry"]["coordinates"][0]
    for lon, lat in zip(lons, lats, strict=True):
        assert min(abs(p[0] - lon) + abs(p[1] - lat) for p in ring) < 1e-6


def test_region_enters_prompt_as_grid_box(landsat: Path) -> None:
    engine, chats = scripted_engine("a small island")
    session = H.set_window(H.load_image(Session(), landsat), 0, 0, 400, 400)
    session = H.draw_region(session, [{"xmin": 40, "ymin": 100, "xmax": 200, "ymax": 300}])
    assert session.region == HBB(40, 100, 200, 300)
    session = run(H.quick_task(session, engine, "region_caption"))
    assert "[100, 250, 500, 750]" in chats[0].questions[0]
    typed = H.type_region(session, "[100, 250, 500, 750]")
    assert typed.region == HBB(40, 100, 200, 300)
    # a typed question (and a VQA one) is about the region too (review of 2026-12-04: it was sent bare)
    assert H.build_prompt(session, "ask", "What is here?") == (
        "About the region [100, 250, 500, 750] in the image: What is here?")
    assert "About the region [100, 250, 500, 750] in the image: Is there a road?" in H.build_prompt(
        session, "vqa", "Is there a road?")
    assert H.build_prompt(session, "ask", "Is [0, 0, 10, 10] a ship?") == "Is [0, 0, 10, 10] a ship?"
    cleared = H.draw_region(session, [])
    assert H.build_prompt(cleared, "ask", "What is here?") == "What is here?"


def test_obb_answer_and_overlays(landsat: Path) -> None:
    engine, _ = scripted_engine("plane [100, 100, 300, 120, 280, 300, 80, 280]\nship [500, 500, 600, 600]")
    session = run(H.quick_task(H.load_image(Session(), landsat), engine, "detection_obb"))
    assert [type(f.detection.box) for f in session.found] == [OBB, HBB]
    drawn = session_view(session)
    assert drawn.shape == session.view.shape and not np.array_equal(drawn, session.view)
    only_obb = session_view(H.set_layers(session, ["OBB"]))
    none = session_view(H.set_layers(session, []))
    assert np.array_equal(none, session.view) and not np.array_equal(only_obb, drawn)
    assert session_overview(session).shape == session.overview.shape


def test_fresh_conversation_per_window_and_many_turns(landsat: Path) -> None:
    engine, chats = scripted_engine("harbour")
    session = H.load_image(Session(), landsat)
    session = run(H.ask(session, engine, "What is this?"))
    session = run(H.ask(session, engine, "And the clouds?"))
    assert len(chats) == 1 and chats[0].questions == ["What is this?", "And the clouds?"]
    session = run(H.ask(H.set_window(session, 0, 0, 256, 256), engine, "Again?"))
    assert len(chats) == 2 and len(session.turns) == 3
    messages = H.chat_messages(session)
    assert sum(m["role"] == "user" for m in messages) == 3 and "Window" in messages[0]["content"]


def test_click_overview_centres_window(landsat: Path) -> None:
    session = H.load_image(Session(), landsat)
    sx, sy = session.overview_scale
    moved = H.click_overview(session, 300, 200, 256)
    assert moved.window == (round(300 * sx - 128), round(200 * sy - 128), 256, 256)
    assert moved.view.shape == (256, 256, 3)
    assert len(H.grid_windows(session, 256)) == 4 * 3  # 791 × 718 px: edge windows shifted inward


def test_empty_prompt_is_refused(landsat: Path) -> None:
    engine, _ = scripted_engine("x")
    session = H.load_image(Session(), landsat)
    with pytest.raises(H.UserError, match="empty"):
        run(H.ask(session, engine, "   "))
    with pytest.raises(H.UserError, match="draw a box"):
        run(H.quick_task(session, engine, "region_caption"))
    with pytest.raises(H.UserError, match="no image"):
        run(H.ask(Session(), engine, "hello"))


def test_a_question_too_long_for_the_model_is_refused_and_the_chat_kept(landsat: Path) -> None:
    """Review of 2026-12-04: a 153,000-character question ran for 14 minutes (8 GB) with no word."""
    from earthgpt.conversation import PromptTooLongError

    class Bounded(ScriptedChat):
        def ask(self, text: str, max_new_tokens: int = 256, stream: bool = False, **options: object):
            if len(text) > 100:
                raise PromptTooLongError("the question is 9,000 tokens; the model reads at most 8,192")
            return super().ask(text, max_new_tokens, stream, **options)

    chats: list[Bounded] = []
    engine = H.Engine("scripted", lambda sensor: chats.append(Bounded("A field.")) or chats[-1])
    session = run(H.ask(H.load_image(Session(), landsat), engine, "What is this?"))
    with pytest.raises(H.UserError, match="at most 8,192"):
        run(H.ask(session, engine, "word " * 100))
    after = run(H.ask(session, engine, "And now?"))
    assert [t.prompt for t in after.turns] == ["What is this?", "And now?"] and len(chats) == 1


def test_clearing_the_conversation_starts_the_model_afresh_and_keeps_detections(landsat: Path) -> None:
    engine, chats = scripted_engine("ship [100, 100, 200, 200]")
    session = H.load_image(Session(), landsat)
    session = run(H.ask(run(H.ask(session, engine, "Find ships.")), engine, "And again?"))
    assert len(session.turns) == 2 and [f.turn for f in session.found] == [1, 2]
    cleared = H.clear_conversation(session)
    assert cleared.turns == [] and cleared.chat is None and cleared.window == session.window
    assert [f.turn for f in cleared.found] == [None, None] and len(cleared.found) == 2
    after = run(H.ask(cleared, engine, "Anything else?"))
    assert len(chats) == 2 and not getattr(chats[1], "restored", [])  # a new chat, told nothing earlier
    assert [t.prompt for t in after.turns] == ["Anything else?"] and after.found[-1].turn == 1


def test_the_chat_clear_button_is_wired_to_the_conversation() -> None:
    from app.ui import build

    demo = build(H.Engine("scripted", lambda sensor: ScriptedChat("x")))
    chatbot = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "chatbot")
    triggers = {tuple(target) for fn in demo.fns.values() for target in fn.targets}
    assert (chatbot._id, "clear") in triggers


def test_model_error_keeps_the_session(landsat: Path) -> None:
    class Broken(ScriptedChat):
        def ask(self, text: str, max_new_tokens: int = 256, stream: bool = False, **options: object):
            raise RuntimeError("out of memory")

    session = run(H.ask(H.load_image(Session(), landsat), H.Engine("b", lambda s: Broken("")), "hi"))
    assert "model error" in session.turns[-1].answer and session.chat is None


def _write(path: Path, array: np.ndarray, **profile: object) -> Path:
    meta = {"driver": "GTiff", "count": array.shape[0], "height": array.shape[1], "width": array.shape[2],
            "dtype": str(array.dtype), **profile}
    with rasterio.open(path, "w", **meta) as dst:
        dst.write(array)
    return path


def test_bad_input_gets_clear_errors(tmp_path: Path) -> None:
    corrupt = tmp_path / "broken.tif"
    corrupt.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    for path in (corrupt, text, tmp_path / "missing.tif"):
        with pytest.raises(RasterError):
            H.load_image(Session(), path)
    cube = _write(tmp_path / "cube.tif", np.ones((20, 8, 8), np.uint16))
    with pytest.raises(RasterError, match="20 bands"):
        H.load_image(Session(), cube)
    with pytest.raises(H.UserError, match="band numbers"):
        H.parse_bands("4,3")


def test_thirteen_bands_and_band_override(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    s2 = _write(tmp_path / "s2.tif", rng.integers(1, 4000, (13, 32, 32), dtype=np.uint16),
                crs="EPSG:32633", transform=from_origin(500000, 4000000, 10, 10))
    session = H.load_image(Session(), s2)
    assert session.sensor == "optical" and session.view.shape == (32, 32, 3)
    chosen = H.load_image(Session(), s2, bands=H.parse_bands("8,4,3"))
    assert chosen.bands == (8, 4, 3) and not np.array_equal(chosen.view, session.view)


def test_all_nodata_window_is_refused(tmp_path: Path) -> None:
    data = np.zeros((1, 64, 64), np.uint8)
    data[0, :32, :32] = 200
    path = _write(tmp_path / "half.tif", data, nodata=0, crs="EPSG:32633",
                  transform=from_origin(500000, 4000000, 10, 10))
    session = H.load_image(Session(), path)
    with pytest.raises(RasterError, match="nodata"):
        H.set_window(session, 40, 40, 16, 16)


def test_no_crs_exports_in_pixel_space(tmp_path: Path) -> None:
    from PIL import Image

    png = tmp_path / "frame.png"
    Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(png)
    engine, _ = scripted_engine("car [0, 0, 500, 500]")
    session = run(H.quick_task(H.load_image(Session(), png), engine, "detection_hbb"))
    path, note = H.export_file(session, tmp_path, "scripted", "geojson")
    data = json.loads(path.read_text())
    assert "pixels" in note and "pixels" in data["note"]
    xs = [p[0] for p in data["features"][0]["geometry"]["coordinates"][0]]
    assert (min(xs), max(xs)) == (0, 30)
    with pytest.raises(H.UserError, match="nothing to export"):
        H.export_file(H.clear_detections(session), tmp_path, "scripted", "gpkg")


def test_save_and_reopen_session(landsat: Path, tmp_path: Path) -> None:
    engine, _ = scripted_engine("ship [100, 200, 300, 400]")
    session = H.set_window(H.load_image(Session(), landsat), 100, 50, 300, 300)
    session = H.draw_region(session, [{"xmin": 10, "ymin": 10, "xmax": 50, "ymax": 60}])
    session = run(H.quick_task(session, engine, "detection_hbb"))
    path = save_session_file(session, tmp_path, "scripted")
    saved = json.loads(path.read_text())
    assert saved["image"]["name"] == landsat.name and saved["image"]["size"] == landsat.stat().st_size
    assert saved["turns"][0]["answer"] == "ship [100, 200, 300, 400]"
    back = open_session_file(path)
    assert back.window == session.window and back.region == session.region
    assert [f.detection for f in back.found] == [f.detection for f in session.found]
    assert [t.prompt for t in back.turns] == [t.prompt for t in session.turns] and back.view is not None
    path.write_text("{not json")
    with pytest.raises(H.UserError, match="session file"):
        open_session_file(path)


def test_box_off_the_earth_keeps_the_parsed_table(shared_data: Path) -> None:
    """A box in the space around a geostationary disk has no lon/lat: that row says so, the rest shows."""
    goes = shared_data / "geotiff" / "optical" / "goes.tif"
    engine, _ = scripted_engine("ship [0, 0, 100, 100]\nship [450, 450, 550, 550]")
    session = H.load_image(Session(), goes)
    session = run(H.quick_task(H.set_window(session, 0, 0, session.info.width, session.info.height),
                               engine, "detection_hbb"))
    table = H.parsed_markdown(session)
    rows = [line for line in table.splitlines() if line.startswith("| ship")]
    assert len(rows) == 2 and "off the Earth" in rows[0] and "off the Earth" not in rows[1]


@pytest.mark.parametrize(("change", "named"), [
    (lambda d: d["turns"][0].pop("prompt"), "turns[0] is malformed: missing key 'prompt'"),
    (lambda d: d["detections"][0].pop("box"), "detections[0] is malformed: missing key 'box'"),
    (lambda d: d["detections"][0]["box"].update(xyxy=[1, 2]), "detections[0] is malformed"),
    (lambda d: d["detections"].__setitem__(0, "ship"), "detections[0] is malformed: expected an object"),
    (lambda d: d.__setitem__("turns", {"a": 1}), "'turns' must be a list"),
    (lambda d: d["image"].__setitem__("window", 5), "'image' is malformed: 'window' must be 4 numbers"),
    (lambda d: d["image"].__setitem__("path", 7), "'image' is malformed: 'path' must be a string"),
    (lambda d: d.__setitem__("region", {"kind": "hbb"}), "'region' is malformed: missing key 'xyxy'"),
])
def test_malformed_session_file_names_the_key(tmp_path: Path, change, named: str) -> None:
    from app.session_io import Found, session_from_json, session_to_json
    from earthgpt.geometry import Detection

    session = Session(path="x.tif", name="x.tif", window=(0, 0, 10, 10), turns=[H.Turn("ask", "hi", "ok")],
                      found=[Found(Detection("ship", HBB(1, 2, 3, 4)), "hi", 1)])
    data = session_to_json(session)
    change(data)
    with pytest.raises(ValueError, match=re.escape(named)) as caught:
        session_from_json(data)
    assert type(caught.value) is ValueError
    path = tmp_path / "bad.session.json"
    path.write_text(json.dumps(data))
    with pytest.raises(H.UserError, match=re.escape(named)):
        open_session_file(path)


def test_opening_another_image_empties_the_typed_region_and_download(landsat: Path, tmp_path: Path) -> None:
    import gradio as gr
    from PIL import Image

    from app.ui_wiring import panels_after_open

    session = H.draw_region(H.set_window(H.load_image(Session(), landsat), 0, 0, 400, 400),
                            [{"xmin": 40, "ymin": 100, "xmax": 200, "ymax": 300}])
    assert panels_after_open(session, session.path) == (gr.skip(),) * 4  # same image: a failed open
    png = tmp_path / "frame.png"
    Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(png)
    other = H.load_image(session, png)
    assert panels_after_open(other, session.path) == (other.path, "", None, "")
    assert panels_after_open(session, "")[1] == "[100, 250, 500, 750]"  # a reopened session's own region


def test_info_names_a_custom_crs_instead_of_its_whole_text(shared_data: Path) -> None:
    """Review of 2026-12-04: GOES's whole WKT filled the sidebar."""
    session = H.load_image(Session(), shared_data / "geotiff" / "optical" / "goes.tif")
    assert len(session.info.crs) > 200
    assert "- CRS: Geostationary Satellite (Sweep X) (custom)" in H.info_markdown(session).splitlines()
