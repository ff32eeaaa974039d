"""A deployment safe to share (app/security.py): login, uploads judged by content, one folder per
session removed when it ends, a reopened session that cannot make the server read anything but its
own uploads, the demos and the image store, and exports written only into the session's folder.
The last test serves the app with ``--auth`` on a free port and talks to it over HTTP."""

from __future__ import annotations

import http.cookiejar
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from browser_support import ScriptedChat, free_port
from PIL import Image

from app import handlers as H
from app import security as S
from app.demo_tiles import DEMO_DIR
from app.image_store import image_ref
from app.session_files import open_session_file, reopen, save_session_file
from app.session_io import Found, Session, session_from_json, session_to_json
from earthgpt.geometry import HBB, Detection

ROOT = Path(__file__).resolve().parents[1]
MAGIC = {"TIFF": b"II*\x00\x08\x00\x00\x00", "BigTIFF": b"II+\x00\x08\x00\x00\x00",
         "JPEG": b"\xff\xd8\xff\xe0", "PNG": b"\x89PNG\r\n\x1a\n",
         "JPEG 2000": b"\x00\x00\x00\x0cjP  \r\n\x87\n"}


def _picture(path: Path, value: int) -> Path:
    """A small PNG, a ramp starting at ``value``: each test its own, so none finds another's in the
    image store."""
    Image.fromarray(((np.arange(40 * 60 * 3).reshape(40, 60, 3) + value) % 256).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def png(tmp_path: Path) -> Path:
    return _picture(tmp_path / "frame.png", 90)


# ----------------------------------------------------------------------------- login

def test_credentials_from_arguments_and_a_private_file(tmp_path: Path) -> None:
    assert S.parse_credential("ana:pa:ss", "--auth") == ("ana", "pa:ss")  # the first colon splits
    for bad in ("ana", "ana:", ":secret", " :secret"):
        with pytest.raises(ValueError, match="expected USER:PASSWORD") as caught:
            S.parse_credential(bad, "--auth")
        assert "secret" not in str(caught.value)  # a password never shows in a message
    users = tmp_path / "users.txt"
    users.write_text("# the team\nbo:tide\n\n  cy:sand  \n")
    users.chmod(0o600)
    assert S.credentials(["ana:x"], users) == [("ana", "x"), ("bo", "tide"), ("cy", "sand")]
    with pytest.raises(ValueError, match="user ana is given more than once"):
        S.credentials(["ana:x", "ana:y"])
    users.chmod(0o644)
    with pytest.raises(ValueError, match=r"can be read by every user of this machine: run chmod 600"):
        S.credentials([], users)
    users.write_text("bo:tide\nnobody\n")
    users.chmod(0o600)
    with pytest.raises(ValueError, match=r"users\.txt line 2: expected USER:PASSWORD"):
        S.credentials([], users)
    with pytest.raises(ValueError, match="cannot read the credentials file"):
        S.credentials([], tmp_path / "missing.txt")


def test_password_check_and_launch_options() -> None:
    check = S.launch_options([("ana", "secret")], 5)["auth"]
    assert check("ana", "secret") and not check("ana", "Secret") and not check("bo", "secret")
    assert S.launch_options([("ana", "secret")], 5)["max_file_size"] == 5 * 2**20
    assert "auth" not in S.launch_options([], 2048)
    with pytest.raises(ValueError, match="--max-upload-mb must be a positive number"):
        S.launch_options([], 0)


@pytest.mark.parametrize(("host", "users", "warned"), [
    ("127.0.0.1", False, False), ("localhost", False, False), ("::1", False, False), ("[::1]", False, False),
    ("0.0.0.0", False, True), ("10.1.2.3", False, True), ("0.0.0.0", True, False),
])
def test_a_server_reachable_from_elsewhere_without_login_warns(host: str, users: bool, warned: bool) -> None:
    warning = S.exposure_warning(host, users)
    assert (warning is not None) == warned
    assert warning is None or ("--auth" in warning and host in warning)


def test_app_main_refuses_bad_credentials_before_loading(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    script = _app_script()
    assert script.main(["--auth", "ana", "--model", "tiny"]) == 2
    assert capsys.readouterr().err.startswith("error: --auth: expected USER:PASSWORD")
    assert script.main(["--max-upload-mb", "-1", "--model", "tiny"]) == 2
    assert "--max-upload-mb must be a positive number" in capsys.readouterr().err


# ----------------------------------------------------------------------------- uploads by content

@pytest.mark.parametrize("kind", list(MAGIC))
def test_images_are_judged_by_their_first_bytes(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "upload.bin"  # the name says nothing
    path.write_bytes(MAGIC[kind] + b"\0" * 32)
    assert S.check_image_content(path) == kind


@pytest.mark.parametrize("content", [b"hello, not an image\n", b"PK\x03\x04zip", b"", b"MZ\x90\x00exe"])
def test_anything_else_is_refused_in_one_line_whatever_its_name(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "scene.tif"
    path.write_bytes(content)
    with pytest.raises(H.UserError, match=r"^scene\.tif is not an image the app opens") as caught:
        S.check_image_content(path)
    assert "\n" not in str(caught.value) and str(tmp_path) not in str(caught.value)
    assert S.check_image_content(DEMO_DIR / "RGB.byte.tif") == "TIFF"


def test_session_files_are_judged_by_content(tmp_path: Path, png: Path) -> None:
    good = tmp_path / "a.session.json"
    good.write_bytes(b"\xef\xbb\xbf \n{\"format\": \"earthgpt-session\"}")
    S.check_session_content(good)
    with pytest.raises(H.UserError, match=r"^frame\.png is not an EarthGPT session file"):
        S.check_session_content(png)
    huge = tmp_path / "huge.json"
    with huge.open("wb") as file:  # sparse: no 64 MB written
        file.write(b"{")
        file.truncate(S.SESSION_FILE_MAX_BYTES + 1)
    with pytest.raises(H.UserError, match="at most 64 MB"):
        S.check_session_content(huge)


def test_an_upload_moves_into_its_sessions_folder(tmp_path: Path, png: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    kept = S.take_upload(png, "tab-1")
    assert S.is_within(kept, [S.session_folder("tab-1") / "uploads"]) and kept.name == "frame.png"
    assert png.is_file()  # a file outside Gradio's upload folder is left alone
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    cached = tmp_path / "gradio" / "3f2a" / "frame.png"
    cached.parent.mkdir(parents=True)
    shutil.copy(png, cached)
    again = S.take_upload(cached, "tab-1")
    assert again != kept and again.read_bytes() == png.read_bytes() and not cached.exists()
    junk = cached.with_name("notes.png")
    junk.write_text("not a picture")
    with pytest.raises(H.UserError, match="not an image"):
        S.take_upload(junk, "tab-1")
    assert not junk.exists()  # a refused upload is not kept either


# ----------------------------------------------------------------------------- session folders

def test_each_session_has_its_own_folder_removed_when_it_ends() -> None:
    one, two = S.session_folder("tab-a"), S.session_folder("tab-b")
    assert one != two and one.parent == two.parent == S.app_temp_root() / "sessions"
    assert S.session_folder("../../etc").parent == one.parent  # a hash names no path
    export = S.new_folder("tab-a", "exports")
    (export / "x.geojson").write_text("{}")
    S.end_session(SimpleNamespace(session_hash="tab-a"))  # what Gradio's unload event passes
    assert not one.exists() and two.is_dir()
    S.remove_session("tab-b")
    assert not two.exists()


def test_session_folders_that_never_end_go_once_idle() -> None:
    """A REST client is a new session at each call and Gradio never unloads it: its folder goes once
    unused for SESSION_IDLE_HOURS, swept when a new session starts; a session in use stays."""
    quiet, busy = S.session_folder("rest-call"), S.session_folder("busy-tab")
    (S.new_folder("rest-call", "exports") / "x.geojson").write_text("{}")
    day_ago = time.time() - (S.SESSION_IDLE_HOURS + 1) * 3600
    for folder in (quiet, busy):
        os.utime(folder, (day_ago, day_ago))
    S.new_folder("busy-tab", "uploads")  # used again: its clock starts over
    S.session_folder("new-tab")
    assert not quiet.exists() and busy.is_dir() and S.session_folder("new-tab").is_dir()
    for name in ("busy-tab", "new-tab"):
        S.remove_session(name)


def test_the_temporary_root_goes_when_the_server_is_stopped() -> None:
    """Stopped as systemd or docker stop a service (SIGTERM): the exit runs, and the root goes."""
    code = ("import time; from app import security as S; root = S.use_app_temp_root(); "
            "S.new_folder('t', 'uploads'); print(root, flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    root = Path(proc.stdout.readline().strip())
    assert root.name.startswith("earthgpt-app-") and (root / "sessions").is_dir()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0 and not root.exists()


# ----------------------------------------------------------------------------- what a session may read

def _session_file(folder: Path, image_path: str, with_reference: Path | None) -> Path:
    """A session file naming ``image_path``, with the size and sha256 of ``with_reference`` (or none)."""
    data = session_to_json(Session(path=image_path, name="frame.png", window=(380, 340, 20, 20)))
    if with_reference is not None:
        ref = image_ref(with_reference)
        data["image"].update(size=ref.size, sha256=ref.sha256)
    path = folder / "crafted.session.json"
    path.write_text(json.dumps(data))
    return path


def test_a_reopened_session_reads_its_own_upload_and_the_demos(tmp_path: Path, png: Path) -> None:
    own = S.take_upload(png, "tab-r")
    roots = S.readable_roots("tab-r")
    for reference in (own, None):
        assert open_session_file(_session_file(tmp_path, str(own), reference), roots).path == str(own)
    demo = str(DEMO_DIR / "RGB.byte.tif")
    assert open_session_file(_session_file(tmp_path, demo, None), roots).path == demo


def test_a_reopened_session_cannot_point_the_server_anywhere_else(tmp_path: Path) -> None:
    png = _picture(tmp_path / "frame.png", 77)
    own = S.take_upload(png, "tab-s")
    theirs = S.take_upload(png, "tab-other")  # another session's upload, the same picture
    outside = Path(shutil.copy(png, tmp_path / "outside.png"))
    (own.parent / "link.png").symlink_to(outside)
    (own.parent / "passwd").symlink_to("/etc/passwd")
    tries = ["/etc/passwd", str(theirs), str(outside), str(own.parent / "link.png"),
             str(own.parent / "passwd"),
             f"{own.parent}/../../../{theirs.relative_to(S.app_temp_root() / 'sessions')}",
             "../../../../etc/passwd", "frame.png"]
    roots = S.readable_roots("tab-s")
    messages = set()
    for path in tries:
        for reference in (png, None):  # the size and sha256 of the real picture, or none at all
            with pytest.raises(H.UserError, match=r"^the session's image frame\.png is no longer") as caught:
                open_session_file(_session_file(tmp_path, path, reference), roots)
            messages.add(str(caught.value))
    assert len(messages) == 1  # the same words whether the file exists or not: nothing to probe with
    assert reopen(session_from_json(json.loads(_session_file(tmp_path, str(own), png).read_text())), roots)


def test_a_sha256_in_a_session_file_names_no_folder() -> None:
    data = session_to_json(Session(path="x.tif", name="x.tif"))
    data["image"].update(size=10, sha256=("../" * 22)[:63] + "x")
    with pytest.raises(ValueError, match="'sha256' must be 64 hex digits"):
        session_from_json(data)


# ----------------------------------------------------------------------------- what a session may write

def test_exports_are_written_only_into_the_given_folder(tmp_path: Path, png: Path) -> None:
    for name in ("../x.geojson", "a/b.json", "..", ".", "", "/etc/passwd"):
        with pytest.raises(ValueError, match="expected a plain file name"):
            S.file_in(tmp_path, name)
    (tmp_path / "taken.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(ValueError, match="a link of that name is in the way"):
        S.file_in(tmp_path, "taken.json")
    folder = S.new_folder("tab-w", "exports")
    session = H.load_image(Session(), S.take_upload(png, "tab-w"), name="../../../evil.png")
    session.found.append(Found(Detection("car", HBB(1, 1, 9, 9)), "", source="analyst"))
    written = [save_session_file(session, folder, "scripted"),
               H.export_file(session, folder, "scripted", "geojson")[0],
               H.export_file(session, folder, "scripted", "gpkg")[0]]
    assert [p.parent for p in written] == [folder] * 3 and sorted(p.name for p in folder.iterdir()) == [
        "evil.session.json", "evil_detections.geojson", "evil_detections.gpkg"]


# ----------------------------------------------------------------------------- the app, served with --auth

def _app_script() -> object:
    spec = importlib.util.spec_from_file_location("app_script", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def guarded_app() -> Iterator[str]:
    """The app as ``python app.py --auth ana:secret --max-upload-mb 1`` serves it (scripted model)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_HEARTBEAT_INTERVAL", "0.2")  # a closed client is noticed at once
        script = _app_script()
        port = free_port()
        args = script.parse_args(["--auth", "ana:secret", "--port", str(port), "--max-upload-mb", "1"])
        demo = script.serve(H.Engine("scripted", lambda sensor: ScriptedChat()), args,
                            S.credentials(args.auth), block=False)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            demo.close()


def _status(opener: urllib.request.OpenerDirector, url: str, data: bytes | None = None,
            headers: dict[str, str] | None = None) -> int:
    try:
        return opener.open(urllib.request.Request(url, data=data, headers=headers or {})).status
    except urllib.error.HTTPError as err:
        return err.code


def _upload_body(size: int) -> tuple[bytes, dict[str, str]]:
    body = (b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.tif\"\r\n\r\n"
            + b"II*\x00" + b"\0" * size + b"\r\n--b--\r\n")
    return body, {"Content-Type": "multipart/form-data; boundary=b"}


def test_the_served_app_asks_for_a_login(guarded_app: str, tmp_path: Path) -> None:
    gradio_client = pytest.importorskip("gradio_client")
    plain = urllib.request.build_opener()
    assert {_status(plain, guarded_app + path) for path in ("/config", "/gradio_api/info")} == {401}
    assert _status(plain, guarded_app + "/gradio_api/upload", *_upload_body(10)) == 401
    with pytest.raises(gradio_client.exceptions.AuthenticationError):
        gradio_client.Client(guarded_app, verbose=False)
    assert _status(plain, guarded_app + "/login", b"username=ana&password=wrong") == 400
    signed = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    assert _status(signed, guarded_app + "/login", b"username=ana&password=secret") == 200
    for path in ("/etc/passwd", str(ROOT / "app.py"), "app.py"):  # the server's own files stay its own
        assert _status(signed, f"{guarded_app}/gradio_api/file={path}") == 403
    assert _status(signed, guarded_app + "/gradio_api/upload", *_upload_body(2**20)) == 413

    client = gradio_client.Client(guarded_app, verbose=False, auth=("ana", "secret"),
                                  download_files=str(tmp_path))
    notes = tmp_path / "notes.tif"
    notes.write_text("hello, not an image")
    status = client.predict(gradio_client.handle_file(str(notes)), "auto", "", api_name="/open_image")[-1]
    assert status.startswith("⚠ notes.tif is not an image the app opens")
    assert client.predict("optical-landsat", api_name="/open_demo")[-1].startswith("Opened RGB.byte.tif")
    client.predict("", "", api_name="/task_detection_hbb")
    exported, _, status = client.predict(api_name="/export_geojson")
    assert status.startswith("Exported") and json.loads(Path(exported).read_text())["features"]
    ours = S.session_folder(client.session_hash)
    assert [p.name for p in ours.glob("*/*/*")] == [Path(exported).name]  # notes.tif was refused: not kept
    client.close()
    deadline = time.monotonic() + 30
    while ours.exists() and time.monotonic() < deadline:  # Gradio's unload: the client is gone
        time.sleep(0.1)
    assert not ours.exists()


def _sar_pair_files(tmp_path: Path) -> dict[str, Path]:
    """A one-band float32 VV and VH GeoTIFF of one Sentinel-1-like scene, each in a folder of its own."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(4)
    files = {}
    for pol, scale in (("VV", 0.2), ("VH", 0.03)):
        path = tmp_path / pol / f"S1A_IW_20250102_{pol}.tif"
        path.parent.mkdir()
        with rasterio.open(path, "w", driver="GTiff", width=64, height=48, count=1, dtype="float32",
                           crs="EPSG:32611", transform=from_origin(500_000, 4_000_000, 30, 30)) as dst:
            dst.write(rng.gamma(2.0, scale, (1, 48, 64)).astype("float32"))
        files[pol] = path
    return files


def test_a_vv_upload_finds_the_vh_uploaded_before_it(tmp_path: Path) -> None:
    """Review of 2026-12-04: every upload has a folder of its own, so a VV file never had its VH
    beside it and always opened as one grey band, never the VV/VH composite."""
    files = _sar_pair_files(tmp_path)
    alone = H.load_image(Session(), S.take_upload(files["VV"], "tab-sar"), sensor="sar")
    assert np.array_equal(alone.model_image[..., 0], alone.model_image[..., 1])  # one band, grey
    assert "One polarisation: upload S1A_IW_20250102_VH.tif while this file is open" in H.info_markdown(alone)
    S.take_upload(files["VH"], "tab-sar")
    kept = S.take_upload(files["VV"], "tab-sar")
    assert (kept.parent / "S1A_IW_20250102_VH.tif").read_bytes() == files["VH"].read_bytes()
    paired = H.load_image(Session(), kept, sensor="sar")
    assert not np.array_equal(paired.model_image[..., 0], paired.model_image[..., 1])  # VV, VH, ratio
    assert "One polarisation" not in H.info_markdown(paired)
    other = S.take_upload(files["VV"], "tab-else")  # another session's VH is never taken
    assert not (other.parent / "S1A_IW_20250102_VH.tif").exists()


def test_a_vh_upload_while_its_vv_is_open_opens_the_composite(tmp_path: Path) -> None:
    """Review of 2026-12-04: uploading the VH *after* the VV opened the VH alone, and the VV stayed
    one grey band until it was uploaded again. Any other upload still opens as itself."""
    files = _sar_pair_files(tmp_path)
    vv = S.take_upload(files["VV"], "tab-vh")
    vh = S.take_upload(files["VH"], "tab-vh")
    assert S.pair_with_open_image(vh, str(vv), "tab-vh") == vv
    assert (vv.parent / vh.name).read_bytes() == files["VH"].read_bytes()
    paired = H.load_image(Session(), vv, sensor="sar")
    assert not np.array_equal(paired.model_image[..., 0], paired.model_image[..., 1])  # VV, VH, ratio
    assert S.pair_with_open_image(vh, None, "tab-vh") == vh  # nothing open
    assert S.pair_with_open_image(vv, str(vv), "tab-vh") == vv  # the VV itself again
    theirs = S.take_upload(files["VV"], "tab-theirs")
    mine = S.take_upload(files["VH"], "tab-mine")
    assert S.pair_with_open_image(mine, str(theirs), "tab-mine") == mine  # another session's VV: untouched
    assert not (theirs.parent / mine.name).exists()
