"""The rules of a deployment shared by a team: who may log in, what may be uploaded, where a
session's files live, and which files a session can make the server read or write.

- **Login**: ``--auth user:password`` (repeatable) and ``--auth-file`` → :func:`credentials` →
  :func:`launch_options` (Gradio's ``launch(auth=…)``, compared in constant time);
  :func:`exposure_warning` when the app is bound beyond this machine without them.
- **Uploads**: at most ``--max-upload-mb`` (Gradio's ``max_file_size``, refused before the
  handlers run) and judged by their content, never their name (:func:`check_image_content`,
  :func:`check_session_content`): TIFF/BigTIFF, JPEG, PNG or JPEG 2000 images, JSON session files.
- **Session folders**: every temporary file of the process lives under one root
  (:func:`use_app_temp_root`: Gradio's cache, the display images, the sessions), removed at exit;
  each browser tab or API client has its own folder there (:func:`session_folder`, named by a
  digest of Gradio's session hash) for its uploads and exports, removed when the session ends
  (:func:`remove_on_unload`), or once unused for :data:`SESSION_IDLE_HOURS` when Gradio never
  says it ended (:func:`remove_idle_sessions`).
- **Reading**: a reopened session's image is read only from that session's uploads or the bundled
  demos (:func:`readable_roots`, :func:`is_within`: ``..`` and symlinks resolved), else from the
  image store by its sha256 (:mod:`app.image_store`).
- **Writing**: exports go into the session's folder under a plain file name (:func:`file_in`).
"""

from __future__ import annotations

import atexit
import functools
import glob
import hashlib
import hmac
import os
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder

from app.demo_tiles import DEMO_DIR
from app.handlers import UserError
from app.image_store import place_file

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
"""Addresses only this machine can reach."""
DEFAULT_MAX_UPLOAD_MB = 2048
SESSION_FILE_MAX_BYTES = 64 * 2**20
"""A session file is JSON text of a few kilobytes; anything this large is not one."""
IMAGE_MAGIC = (
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"II+\x00", "BigTIFF"), (b"MM\x00+", "BigTIFF"),
    (b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"), (b"\xffO\xffQ", "JPEG 2000"),
)
"""The first bytes of each image format the app opens, and its name."""
IMAGE_FORMATS = "GeoTIFF/TIFF, BigTIFF, JPEG, PNG or JPEG 2000"
SESSION_IDLE_HOURS = 24
"""A session folder not used (an upload, an export, a reopen) for this long is removed even though
Gradio never said the session ended: a REST client (``/gradio_api/call/…``) is a new session at
each call and never unloads, and a client may vanish without a word."""


# ----------------------------------------------------------------------------- login

def parse_credential(text: str, where: str) -> tuple[str, str]:
    """``user:password`` (split at the first colon) as a pair; ValueError naming ``where`` (never
    the password) when either part is empty."""
    user, colon, password = text.partition(":")
    if not colon or not user.strip() or not password:
        raise ValueError(f"{where}: expected USER:PASSWORD with neither part empty")
    return user.strip(), password


def read_auth_file(path: str | Path) -> list[tuple[str, str]]:
    """The ``user:password`` lines of a credentials file (blank lines and ``#`` comments skipped).
    Refused when every user of the machine may read it, when a line is malformed or when it
    names nobody."""
    path = Path(path)
    try:
        if path.stat().st_mode & stat.S_IROTH:
            raise ValueError(f"the credentials file {path} can be read by every user of this machine: "
                             f"run chmod 600 {path} and start again")
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        why = getattr(err, "strerror", None) or err
        raise ValueError(f"cannot read the credentials file {path}: {why}") from err
    pairs = [parse_credential(line.strip(), f"{path} line {n}") for n, line in enumerate(lines, 1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not pairs:
        raise ValueError(f"the credentials file {path} names no user (one USER:PASSWORD a line)")
    return pairs


def credentials(auth: Sequence[str] = (), auth_file: str | Path | None = None) -> list[tuple[str, str]]:
    """Every user and password of ``--auth`` and ``--auth-file``; ValueError when a user is named twice."""
    pairs = [parse_credential(text, "--auth") for text in auth]
    pairs += read_auth_file(auth_file) if auth_file else []
    users = [user for user, _ in pairs]
    twice = sorted({user for user in users if users.count(user) > 1})
    if twice:
        raise ValueError(f"user {', '.join(twice)} is given more than once in --auth / --auth-file")
    return pairs


def password_check(pairs: Sequence[tuple[str, str]]) -> Callable[[str, str], bool]:
    """Gradio's ``auth`` callable: True for a known user with the right password, compared in
    constant time (an unknown user costs the same comparison)."""
    table = {user: password.encode() for user, password in pairs}

    def check(user: str, password: str) -> bool:
        expected = table.get(user)
        same = hmac.compare_digest(expected or b"\0" * 32, password.encode())
        return expected is not None and same

    return check


def exposure_warning(host: str, has_auth: bool) -> str | None:
    """The warning for a server other machines can reach with no login; None when it is local or
    has users."""
    if has_auth or host.strip("[]").lower() in LOCAL_HOSTS:
        return None
    return (f"the app listens on {host} without --auth: anyone who can reach this port can use the model "
            "and open the images uploaded to it. Add --auth USER:PASSWORD or --auth-file FILE "
            "(and put it behind HTTPS), or bind to 127.0.0.1.")


def launch_options(pairs: Sequence[tuple[str, str]], max_upload_mb: int) -> dict[str, Any]:
    """The security arguments of Gradio's ``launch``: login (when there are users) and the upload
    size limit in bytes."""
    if max_upload_mb <= 0:
        raise ValueError(f"--max-upload-mb must be a positive number of megabytes, got {max_upload_mb}")
    options: dict[str, Any] = {"max_file_size": max_upload_mb * 2**20}
    if pairs:
        options |= {"auth": password_check(pairs), "auth_message": "EarthGPT analyst: sign in to continue."}
    return options


# ----------------------------------------------------------------------------- what an upload is

def image_format(path: str | Path) -> str | None:
    """The image format the file's first bytes announce (:data:`IMAGE_MAGIC`), or None."""
    with open(path, "rb") as file:
        head = file.read(16)
    return next((name for magic, name in IMAGE_MAGIC if head.startswith(magic)), None)


def check_image_content(path: str | Path, name: str | None = None) -> str:
    """The format of the uploaded image at ``path``; UserError unless its content is one the app
    opens, whatever its name says."""
    name = name or Path(path).name
    try:
        found = image_format(path)
    except OSError as err:
        raise UserError(f"cannot read the uploaded file {name}: {err.strerror or err}") from err
    if found is None:
        raise UserError(f"{name} is not an image the app opens: its content is not {IMAGE_FORMATS} "
                        "(the file's content decides, not its name)")
    return found


def check_session_content(path: str | Path, name: str | None = None) -> None:
    """UserError unless the file at ``path`` can be a session file: JSON text of an object, not
    larger than :data:`SESSION_FILE_MAX_BYTES`."""
    name = name or Path(path).name
    try:
        size = Path(path).stat().st_size
        with open(path, "rb") as file:
            head = file.read(1024).removeprefix(b"\xef\xbb\xbf").lstrip()
    except OSError as err:
        raise UserError(f"cannot read the uploaded file {name}: {err.strerror or err}") from err
    if size > SESSION_FILE_MAX_BYTES or not head.startswith(b"{"):
        raise UserError(f"{name} is not an EarthGPT session file (JSON text of at most "
                        f"{SESSION_FILE_MAX_BYTES // 2**20} MB, as written by Save session)")


# ----------------------------------------------------------------------------- where files live

@functools.cache
def app_temp_root() -> Path:
    """The process's one temporary folder (made on first use, private to this user), removed at exit."""
    root = Path(tempfile.mkdtemp(prefix="earthgpt-app-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


def use_app_temp_root() -> Path:
    """Put every temporary file of the process under :func:`app_temp_root`: Python's ``tempfile``
    and Gradio's cache (unless ``$GRADIO_TEMP_DIR`` names one); a SIGTERM exits cleanly so the
    root is removed then too. Call before the app is launched."""
    root = app_temp_root()
    os.environ.setdefault("GRADIO_TEMP_DIR", str(root / "gradio"))
    tempfile.tempdir = str(root)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    return root


def _sessions() -> Path:
    return app_temp_root() / "sessions"


def _folder_name(session_hash: str) -> str:
    """A session's folder name: a digest of its hash, so no hash (chosen by the client) names a path."""
    return hashlib.sha256(session_hash.encode()).hexdigest()[:32]


def session_folder(session_hash: str | None) -> Path:
    """The folder of one session (Gradio's session hash; None: a folder of its own) under
    :func:`app_temp_root`, made on first use."""
    _sessions().mkdir(mode=0o700, exist_ok=True)
    if session_hash is None:
        return Path(tempfile.mkdtemp(dir=_sessions()))
    folder = _sessions() / _folder_name(session_hash)
    if not folder.is_dir():  # a new session: the time to sweep the ones gone quietly
        remove_idle_sessions()
    folder.mkdir(mode=0o700, exist_ok=True)
    os.utime(folder)  # used now (remove_idle_sessions)
    return folder


def remove_idle_sessions(idle_hours: float = SESSION_IDLE_HOURS) -> list[Path]:
    """Remove the session folders not used for ``idle_hours`` (see :data:`SESSION_IDLE_HOURS`);
    returns them."""
    oldest = time.time() - idle_hours * 3600
    removed = []
    for folder in _sessions().iterdir():
        try:
            idle = folder.stat().st_mtime < oldest
        except OSError:  # removed meanwhile by its own session's end
            continue
        if idle:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def remove_session(session_hash: str | None) -> None:
    """Remove the session's folder: its uploads and exports."""
    if session_hash is not None:
        shutil.rmtree(_sessions() / _folder_name(session_hash), ignore_errors=True)


def end_session(request: gr.Request) -> None:
    """Gradio's ``unload`` event (a tab closed or reloaded, a client gone): the session's folder goes."""
    remove_session(request.session_hash)


def remove_on_unload(demo: gr.Blocks) -> None:
    """Remove each session's folder when its session ends."""
    demo.unload(end_session)


def new_folder(session_hash: str | None, kind: str) -> Path:
    """A fresh folder for one upload or one export (``kind``: ``uploads`` or ``exports``) in the
    session's folder, so two files of one name never overwrite each other."""
    parent = session_folder(session_hash) / kind
    parent.mkdir(mode=0o700, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=parent))


def file_in(folder: str | Path, name: str) -> Path:
    """``folder / name`` when ``name`` is a plain file name (no folder part, not ``.`` or ``..``) and
    that path is not a link; ValueError otherwise. Exports are written only through this."""
    if not name or name in {".", ".."} or Path(name).name != name or "\\" in name or "\0" in name:
        raise ValueError(f"cannot write a file named {name!r}: expected a plain file name")
    path = Path(folder) / name
    if path.is_symlink():
        raise ValueError(f"cannot write {name}: a link of that name is in the way")
    return path


def take_upload(path: str | Path, session_hash: str | None) -> Path:
    """Check an uploaded image by content, then give it a home in the session's folder (a hard
    link where possible, else a copy); Gradio's cached copy is dropped, so the upload's disk space
    goes when the session ends (a refused file's goes at once). Returns the session's copy."""
    path = Path(path)
    try:
        check_image_content(path)
        kept = file_in(new_folder(session_hash, "uploads"), path.name)
        place_file(path, kept)
        _join_sar_partner(kept, session_hash)
    finally:  # kept or refused, Gradio's copy of an upload is not needed any more
        if is_within(path, [get_upload_folder()]):
            path.unlink(missing_ok=True)
    return kept


def _join_sar_partner(kept: Path, session_hash: str | None) -> None:
    """A co-polarised SAR upload (``…_VV.tif``) gets the cross-polarised file of its name
    (``…_VH.tif``) beside it when this session uploaded that before, so that it opens as the VV/VH
    composite (each upload has a folder of its own: review of 2026-12-04, uploads were always one
    band). The latest such upload is taken."""
    from earthgpt.raster import cross_pol_name

    partner = cross_pol_name(kept.name)
    if partner is None:
        return
    earlier = [p for p in (session_folder(session_hash) / "uploads").glob(f"*/{glob.escape(partner)}")
               if p.is_file() and not p.is_symlink() and p.parent != kept.parent]
    if earlier:
        place_file(max(earlier, key=lambda p: p.stat().st_mtime), kept.parent / partner)


def pair_with_open_image(kept: Path, open_path: str | None, session_hash: str | None) -> Path:
    """The file to open after the upload ``kept``: a cross-polarised file (``…_VH.tif``) uploaded
    while its co-polarised partner (``…_VV.tif``, this session's upload) is open goes beside that
    file, which opens again, now as the VV/VH composite; any other upload opens as itself (review
    of 2026-12-04: uploading the VH after the VV did not rebuild the composite)."""
    from earthgpt.raster import cross_pol_name

    if not open_path:
        return kept
    opened = Path(open_path)
    if (cross_pol_name(opened.name) != kept.name or not opened.is_file()
            or not is_within(opened, [session_folder(session_hash) / "uploads"])):
        return kept
    place_file(kept, opened.parent / kept.name)
    return opened


def readable_roots(session_hash: str | None) -> tuple[Path, ...]:
    """The folders a session's image may be read from: its own uploads and the bundled demos."""
    return session_folder(session_hash) / "uploads", DEMO_DIR


def is_within(path: str | Path, roots: Iterable[str | Path]) -> bool:
    """True when ``path`` lies inside one of ``roots``, both with ``..`` and symlinks resolved. The
    path as written is checked first, so one outside is refused without being looked at."""
    roots = list(roots)
    try:
        written = Path(os.path.abspath(path))
        if not any(written.is_relative_to(os.path.abspath(root)) for root in roots):
            return False
        real = Path(os.path.realpath(path))
    except (OSError, ValueError):  # a name with a NUL byte, a path too long
        return False
    return any(real.is_relative_to(os.path.realpath(root)) for root in roots)
