"""The raster fuzz corpus (tests/fuzz/corpus, written by tests/fuzz/make_corpus.py) through every
entry point that reads an image: the library reader, ``earthgpt chat``, ``earthgpt detect``,
``earthgpt mmrs build`` and the app's image loading.

Each case ends in a correct result or one clean one-line error (the exception types each entry point
turns into a message), never another exception, never past a time limit (:mod:`fuzz.limits`), and
the files whose headers claim huge images stay under :data:`MEMORY_BOUND_MB` (measured in a fresh
process). A case the manifest marks ``ok`` must succeed everywhere; an ``error`` case may also give a
correct empty result where the entry point reads only what is usable (a header, the windows with data).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely.geometry
from fuzz.limits import one_line, time_limit

from earthgpt.raster import RasterError, inspect, model_image, model_source, tile_grid, window_reader

FUZZ = Path(__file__).resolve().parent / "fuzz"
CORPUS = FUZZ / "corpus"
CASES = json.loads((CORPUS / "cases.json").read_text(encoding="utf-8"))
IDS = [case["file"] for case in CASES]
MEMORY_BOUND_MB = 256
"""Peak resident memory of a whole Python process reading one huge-header case (about 65–80 MB
measured, most of it the interpreter, numpy and GDAL themselves)."""
HUGE_HEADERS = ("header_1e6x1e6.tif", "header_1e6x1e6_tiled.tif", "header_2e5x2e5.tif",
                "header_60000_bands.tif", "header_1e5x1e5.png", "header_65500x65500.jpg")
ANSWER = "ship [250, 250, 750, 750]"


def test_the_script_writes_the_committed_corpus(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_corpus", FUZZ / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(tmp_path)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(p.name for p in CORPUS.iterdir())
    changed = [name for name in written if (tmp_path / name).read_bytes() != (CORPUS / name).read_bytes()]
    assert not changed, f"run python tests/fuzz/make_corpus.py: the committed corpus is stale: {changed}"
    assert sum((CORPUS / name).stat().st_size for name in written) < 2 * 2**20


def _outcome(case: dict[str, str], run: Any) -> Any:
    """``run()`` under the time limit: its result, or the clean error it raised (RasterError and
    ValueError are what the CLI and the app turn into a message); any other exception fails."""
    with time_limit():
        try:
            return run()
        except ValueError as err:  # RasterError is a ValueError
            assert one_line(str(err)), f"{case['file']}: not a one-line message: {err!r}"
            return err


def _check_rgb(rgb: np.ndarray, max_side: int) -> None:
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert 1 <= max(rgb.shape[:2]) <= max_side


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_library_reader(case: dict[str, str]) -> None:
    path = CORPUS / case["file"]
    whole = _outcome(case, lambda: model_image(path))
    assert isinstance(whole, Exception) == (case["expect"] == "error"), f"{case['file']}: {whole}"
    if not isinstance(whole, Exception):
        rgb, meta = whole
        _check_rgb(rgb, 1024)
        assert meta["size"] == (inspect(path).width, inspect(path).height)

    def windows() -> list[np.ndarray | None]:
        source = model_source(path)
        read = window_reader(source, 16)
        return [read(tile) for tile in tile_grid(source.info.width, source.info.height, 16, 0)]

    tiles = _outcome(case, windows)
    if case["expect"] == "ok":
        assert isinstance(tiles, list) and any(t is not None for t in tiles)
    if isinstance(tiles, list):
        for tile in filter(lambda t: t is not None, tiles):
            _check_rgb(tile, 16)


@pytest.mark.parametrize("name", ["palette.tif", "palette_gif.gif"])
def test_a_palette_image_is_shown_in_its_colours(name: str) -> None:
    rgb, _ = model_image(CORPUS / name)
    colours = {tuple(pixel) for pixel in rgb.reshape(-1, 3).tolist()}
    assert colours == {(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)}


@pytest.mark.parametrize("name", ["exif_rotated_jpeg.jpg", "exif_rotated_png.png"])
def test_exif_orientation_is_not_applied(name: str) -> None:
    """Pictures are read as stored, as GDAL stores them and as every training image was read: the
    model's boxes are in the stored pixels whatever a photo viewer shows."""
    rgb, meta = model_image(CORPUS / name)
    assert rgb.shape == (24, 32, 3) and meta["size"] == (32, 24)


class FakeChat:
    """Stands in for ``earthgpt.inference.ChatSession``: checks the image it is shown and answers
    one ship in the middle."""

    images: list[np.ndarray] = []  # noqa: RUF012  (shared on purpose: what every chat was shown)
    finish_reason = "stop"

    def __init__(self, model: Any = None, processor: Any = None, sensor: Any = None) -> None:
        self.sensor = sensor

    def set_image(self, rgb: np.ndarray) -> None:
        _check_rgb(rgb, 1024)
        FakeChat.images.append(rgb)

    def ask(self, text: str, max_new_tokens: int = 256, stream: bool = False, **options: Any) -> Any:
        return iter([ANSWER]) if stream else ANSWER


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> type[FakeChat]:
    """``earthgpt chat`` and ``earthgpt detect`` with :class:`FakeChat` instead of a loaded model."""
    import earthgpt.commands.chat
    import earthgpt.commands.detect  # imported now, not inside the time limit
    import earthgpt.inference

    FakeChat.images = []
    monkeypatch.setattr(earthgpt.inference, "load_model", lambda *args, **kwargs: (None, None))
    monkeypatch.setattr(earthgpt.inference, "ChatSession", FakeChat)
    return FakeChat


def _cli(case: dict[str, str], argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``earthgpt ARGV`` in-process under the time limit; exit 0, or 2 with one ``error:`` line."""
    from earthgpt.cli import main

    with time_limit():
        code = main(argv)
    out, err = capsys.readouterr()
    assert code in (0, 2) and "Traceback" not in err, f"{case['file']}: exit {code}: {err}"
    if code == 2:
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and one_line(errors[0]), f"{case['file']}: {err}"
    return code, out, err


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_chat_cli(case: dict[str, str], fake_model: type[FakeChat],
                  capsys: pytest.CaptureFixture[str]) -> None:
    path = CORPUS / case["file"]
    code, out, _ = _cli(case, ["chat", str(path), "Detect all ships.", "--json"], capsys)
    assert code == (2 if case["expect"] == "error" else 0)
    if code == 0:
        (ship,) = json.loads(out)["detections"]
        x1, y1, x2, y2 = ship["box_pixels"]
        assert 0 <= x1 < x2 <= inspect(path).width and 0 <= y1 < y2 <= inspect(path).height
        assert len(fake_model.images) == 1


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_detect_cli(case: dict[str, str], fake_model: type[FakeChat], tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "found.geojson"
    argv = ["detect", str(CORPUS / case["file"]), "--out", str(out), "--tile", "16", "--overlap", "0"]
    code, _, _ = _cli(case, argv, capsys)
    if case["expect"] == "ok":
        assert code == 0
    if code != 0:
        assert not out.exists()
        return
    collection = json.loads(out.read_text(encoding="utf-8"))
    assert collection["type"] == "FeatureCollection"
    if fake_model.images:  # each window shown answers a ship: written, or listed as not placeable
        assert collection["features"] or collection["skipped"]
    for feature in collection["features"] if "note" not in collection else []:  # lon/lat: RFC 7946
        west, south, east, north = shapely.geometry.shape(feature["geometry"]).bounds
        assert -180 <= west <= east <= 180 and -90 <= south <= north <= 90, f"{case['file']}: {feature}"


def test_mmrs_build_reads_every_header_or_skips_the_file(tmp_path: Path) -> None:
    """``earthgpt mmrs build`` reads image headers only: each one the library reader accepts gives a
    record of its size; every other file is skipped and counted."""
    from earthgpt.cli import main
    from earthgpt.data.records import IMAGE_EXTENSIONS

    scenes = tmp_path / "scenes"
    (scenes / "empty").mkdir(parents=True)  # two class folders: the converter does not step into one
    (scenes / "fuzz").mkdir()
    images = [case["file"] for case in CASES if Path(case["file"]).suffix in IMAGE_EXTENSIONS]
    for name in images:
        (scenes / "fuzz" / name).symlink_to(CORPUS / name)
    out = tmp_path / "out"
    with time_limit():
        code = main(["mmrs", "build", "--source", f"folder-per-class={scenes}", "--out", str(out),
                     "--no-progress"])
    assert code == 0
    records = [json.loads(line) for split in ("train", "val")
               for line in (out / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
    usable = {}
    for name in images:
        try:
            info = inspect(CORPUS / name)
        except RasterError:
            continue
        usable[name] = (info.width, info.height)
    assert {Path(r["image"]).name: (r["width"], r["height"]) for r in records} == usable
    assert {case["file"] for case in CASES if case["expect"] == "ok"} & set(images) <= set(usable)
    assert json.loads((out / "card.json").read_text())["totals"]["skipped"] == len(images) - len(usable)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_app_load_image(case: dict[str, str]) -> None:
    """The app's image loading (the ``/open_image`` handler's work, and the map drawn after it for a
    georeferenced image): the session, or an error of :data:`app.ui_guard.EXPECTED`, which the app
    shows as a one-line warning."""
    from app import handlers as H
    from app.maps import session_map
    from app.session_io import Session
    from app.ui_guard import EXPECTED

    with time_limit():
        try:
            session = H.load_image(Session(), CORPUS / case["file"])
        except EXPECTED as err:
            assert case["expect"] == "error" and one_line(str(err)), f"{case['file']}: {err!r}"
            return
        assert case["expect"] == "ok" and session.loaded
        _check_rgb(session.model_image, H.VIEW_SIZE)
        if session.info.georeferenced:  # the map drawn after loading places the image on the globe
            assert session_map(session).startswith("<iframe")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="peak RSS is read from /proc (Linux)")
@pytest.mark.parametrize("name", HUGE_HEADERS)
def test_huge_headers_stay_within_the_memory_bound(name: str) -> None:
    """Peak RSS of a fresh process that reads the case as chat does (the whole image) and as
    whole-scene detection starts (header, sensor probe). It is the process's own high-water mark
    (VmHWM): ``resource.getrusage`` would report the test runner's, which a child inherits on Linux."""
    script = (
        "import re, sys\n"
        "from pathlib import Path\n"
        "from earthgpt.raster import RasterError, model_image, model_source\n"
        "for read in (model_image, model_source):\n"
        "    try:\n"
        "        read(sys.argv[1])\n"
        "    except RasterError:\n"
        "        pass\n"
        "status = Path('/proc/self/status').read_text()\n"
        "print(int(re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1)) // 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(CORPUS / name)], capture_output=True, text=True,
                          timeout=60, check=True)
    assert int(done.stdout.split()[-1]) < MEMORY_BOUND_MB, done.stdout
