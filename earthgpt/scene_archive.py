"""``earthgpt detect`` over an archive: a folder, a glob, ``@list.txt`` or several paths.

What ``--out FOLDER`` holds:

- ``NAME.gpkg``: one GeoPackage per scene, named after the scene's file (a name that two scenes
  share, or ``merged``, gets a hash of the scene's path). Written as ``.NAME.<pid>.part.gpkg`` and
  renamed when complete, so a file with the final name is a finished scene: a re-run skips it.
- ``.status/NAME.json``: the outcome of each scene tried (done with its feature count, or failed
  with a one-line error). A failed scene is tried again on the next run.
- ``manifest.json``: every scene of the run, ``done`` / ``failed`` (with its error) / ``pending``.
- ``merged.gpkg``: every feature of every done scene with a ``scene`` column (``NAME``), in the
  scenes' CRS when they share one, else EPSG:4326; scenes without georeferencing go to a second
  layer, ``pixel_space``.

Processes: scene ``i`` of the sorted list belongs to shard ``i % N``. ``--shard I/N``, or ``RANK``
and ``WORLD_SIZE`` as ``accelerate launch`` and ``torchrun`` set them, make this process take its
shard (``LOCAL_RANK`` picks its GPU); ``--processes N`` starts N plain worker processes (spawn)
here and merges when they are all done. After its shard, each process takes the folder's lock
and rewrites ``manifest.json``, and ``merged.gpkg`` too once no scene is pending: the last one
to get there writes the full merge. ``--merge-only`` does that step alone (no model).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXIT_SOME_FAILED = 1
EXIT_BAD_INPUT = 2
RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".png", ".jpg", ".jpeg", ".img", ".vrt")
"""What a folder given as a scene list contributes (a glob or a list takes any file)."""
MERGED = "merged"

DetectOne = Callable[[Path, Path], None]
"""Detect over one scene and write its GeoPackage: ``(scene, out_gpkg)``."""
Loader = Callable[[], DetectOne]
"""Run once per process (loads the model); picklable, as ``--processes`` workers receive it."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The archive-mode options of ``earthgpt detect``."""
    parser.add_argument("--shard", type=parse_shard, default=None, metavar="I/N",
                        help="archive mode: take the scenes i with i %% N == I (default: RANK/WORLD_SIZE "
                             "from the environment, else all)")
    parser.add_argument("--processes", type=int, default=1,
                        help="archive mode: worker processes to start here (default: 1)")
    parser.add_argument("--merge-only", action="store_true",
                        help="archive mode: only rewrite manifest.json and merged.gpkg from what --out holds")


def parse_shard(text: str) -> tuple[int, int]:
    """``"1/4"`` → ``(1, 4)``; the argparse type of ``--shard``."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected I/N such as 0/4, got {text!r}") from err
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"expected 0 <= I < N in I/N, got {text!r}")
    return index, count


def env_shard(environ: Mapping[str, str]) -> tuple[int, int] | None:
    """This process's shard from a launcher's ``RANK`` / ``WORLD_SIZE``, or None when not launched."""
    if "RANK" not in environ or "WORLD_SIZE" not in environ:
        return None
    return parse_shard(f"{environ['RANK']}/{environ['WORLD_SIZE']}")


def is_archive(inputs: Sequence[str | Path]) -> bool:
    """True unless ``inputs`` is one plain file path: several paths, a folder, a glob or ``@list``."""
    if len(inputs) != 1:
        return True
    text = str(inputs[0])
    return text.startswith("@") or _is_glob(text) or Path(text).is_dir()


def wants_archive(args: argparse.Namespace) -> bool:
    """Archive mode: :func:`is_archive` scenes, or an archive option given."""
    options = args.shard is not None or args.processes != 1 or args.merge_only
    return options or is_archive([args.image, *args.more])


def _is_glob(text: str) -> bool:
    """Wildcards in a path that is not itself there (a file may have ``[`` in its name)."""
    return any(char in text for char in "*?[") and not Path(text).exists()


def expand_scenes(inputs: Sequence[str | Path]) -> list[Path]:
    """Every scene the inputs name, sorted by absolute path, each once. A folder gives its raster
    files (:data:`RASTER_SUFFIXES`), a glob its files, ``@list.txt`` one path (or folder or glob)
    per line, relative to the list's folder (``#`` starts a comment). A VH (HV) file whose VV (HH)
    sibling is a scene too is left out: it is read as that scene's second band."""
    from earthgpt.raster import find_sar_pair

    found: dict[str, Path] = {}
    for item in inputs:
        for path in _expand_one(str(item)):
            found.setdefault(os.path.abspath(path), path)
    pairs = {os.path.abspath(pair) for path in found.values() if (pair := find_sar_pair(path))}
    return [found[key] for key in sorted(found) if key not in pairs]


def _expand_one(text: str) -> list[Path]:
    if text.startswith("@"):
        listing = Path(text[1:])
        try:
            lines = listing.read_text(encoding="utf-8").splitlines()
        except OSError as err:
            raise ValueError(f"cannot read the scene list {listing}: {err.strerror or err}") from err
        entries = [line.split("#", 1)[0].strip() for line in lines]
        return [path for entry in entries if entry for path in _expand_one(str(listing.parent / entry))]
    if _is_glob(text):
        import glob

        return [Path(p) for p in sorted(glob.glob(text, recursive=True)) if Path(p).is_file()]
    path = Path(text)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)
    return [path]  # a missing file is a scene that fails, listed with the others


def scene_names(scenes: Sequence[Path]) -> list[str]:
    """One output name per scene: its file name without the suffix; a name two scenes share (any
    case) or ``merged`` gets ``-`` and 8 hex digits of the scene's absolute path."""
    counts = Counter(scene.stem.lower() for scene in scenes)
    names = []
    for scene in scenes:
        name = scene.stem
        if counts[name.lower()] > 1 or name.lower() == MERGED:
            name += "-" + hashlib.sha1(os.path.abspath(scene).encode()).hexdigest()[:8]
        names.append(name)
    return names


@dataclass(frozen=True)
class Archive:
    """The scenes of a run and the folder their outputs go to."""

    out: Path
    scenes: tuple[Path, ...]
    names: tuple[str, ...]

    @classmethod
    def plan(cls, inputs: Sequence[str | Path], out: Path) -> Archive:
        """Expand ``inputs`` and check ``out`` (a folder, made when missing); ValueError when the
        inputs name no scene or ``out`` cannot be the folder."""
        scenes = expand_scenes(inputs)
        if not scenes:
            raise ValueError(f"no scenes found in {' '.join(str(i) for i in inputs)}")
        if out.suffix.lower() in (".gpkg", ".geojson", ".json") or out.is_file():
            raise ValueError(f"in archive mode --out is a folder, got {out.name}")
        (out / ".status").mkdir(parents=True, exist_ok=True)
        return cls(out, tuple(scenes), tuple(scene_names(scenes)))

    def gpkg(self, name: str) -> Path:
        return self.out / f"{name}.gpkg"

    def record(self, name: str) -> Path:
        return self.out / ".status" / f"{name}.json"

    def shard(self, index: int, count: int) -> list[int]:
        """The positions in :attr:`scenes` that shard ``index`` of ``count`` takes."""
        return [i for i in range(len(self.scenes)) if i % count == index]


def one_line(err: BaseException) -> str:
    """An error as one line for the user."""
    return " ".join(str(err).split()) or type(err).__name__


def _write_json(path: Path, data: Any) -> None:
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    part.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(part, path)


def run_scenes(archive: Archive, positions: Sequence[int], detect_one: DetectOne) -> dict[str, int]:
    """Detect over the scenes at ``positions`` not done yet; each is written under a temporary name
    and renamed once complete, and its outcome recorded. A scene that fails is recorded with its
    error and the rest go on. Returns counts of ``done``, ``skipped`` and ``failed``."""
    counts = {"done": 0, "skipped": 0, "failed": 0}
    for step, i in enumerate(positions, 1):
        name = archive.names[i]
        head = f"[{step}/{len(positions)}] {name}:"
        if archive.gpkg(name).is_file():
            counts["skipped"] += 1
            print(f"{head} skipped, already done", flush=True)
            continue
        try:
            features, seconds = _run_one(archive, i, detect_one)
        except Exception as err:  # any scene may fail; the archive goes on (Ctrl-C still stops it)
            counts["failed"] += 1
            _write_json(archive.record(name), {"status": "failed", "error": one_line(err)})
            print(f"{head} failed: {one_line(err)}", file=sys.stderr, flush=True)
            continue
        counts["done"] += 1
        _write_json(archive.record(name), {"status": "done", "features": features, "seconds": seconds})
        print(f"{head} {features} features in {seconds:.0f} s", flush=True)
    return counts


def _run_one(archive: Archive, i: int, detect_one: DetectOne) -> tuple[int, float]:
    """Scene ``i`` into a temporary GeoPackage, checked and renamed: (features, seconds)."""
    import pyogrio

    name, started = archive.names[i], time.monotonic()
    part = archive.out / f".{name}.{os.getpid()}.part.gpkg"
    try:
        detect_one(archive.scenes[i], part)
        features = int(pyogrio.read_info(part)["features"])  # a readable, complete GeoPackage
        os.replace(part, archive.gpkg(name))
    finally:
        part.unlink(missing_ok=True)
    return features, round(time.monotonic() - started, 1)


# ----------------------------------------------------------------------------- manifest and merge


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` across processes (the merge step, one process at a time)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def scene_states(archive: Archive) -> list[dict[str, Any]]:
    """Each scene's state: ``done`` (its GeoPackage is there), ``failed`` (with the error), else
    ``pending``."""
    import pyogrio

    rows = []
    for scene, name in zip(archive.scenes, archive.names, strict=True):
        row: dict[str, Any] = {"scene": name, "path": str(scene)}
        record = json.loads(archive.record(name).read_text()) if archive.record(name).is_file() else {}
        if archive.gpkg(name).is_file():
            row.update(status="done", output=archive.gpkg(name).name,
                       features=int(pyogrio.read_info(archive.gpkg(name))["features"]))
        elif record.get("status") == "failed":
            row.update(status="failed", error=record.get("error", ""))
        else:
            row.update(status="pending")
        rows.append(row)
    return rows


def merge(archive: Archive) -> dict[str, Any]:
    """Under the folder's lock: rewrite ``manifest.json``, and ``merged.gpkg`` when no scene is
    pending (removed while some are). Returns the manifest (``merged`` is None while scenes are
    pending)."""
    with _locked(archive.out / ".merge.lock"):
        rows = scene_states(archive)
        counts = Counter(row["status"] for row in rows)
        manifest: dict[str, Any] = {"done": counts["done"], "failed": counts["failed"],
                                    "pending": counts["pending"], "merged": None, "scenes": rows}
        if counts["pending"]:
            archive.gpkg(MERGED).unlink(missing_ok=True)  # an earlier run's merge is not this one's
        else:
            done = [row["scene"] for row in rows if row["status"] == "done"]
            manifest["merged"] = write_merged(archive, done)
        _write_json(archive.out / "manifest.json", manifest)
    return manifest


def write_merged(archive: Archive, names: Sequence[str]) -> dict[str, Any]:
    """``merged.gpkg`` from the scenes ``names``, written under a temporary name and renamed
    (:func:`earthgpt.gpkg_merge.merge_gpkgs`); returns what the manifest says of it."""
    from earthgpt.gpkg_merge import merge_gpkgs

    part = archive.out / f".{MERGED}.{os.getpid()}.part.gpkg"
    part.unlink(missing_ok=True)
    try:
        merged = merge_gpkgs(part, [(name, archive.gpkg(name)) for name in names])
        os.replace(part, archive.gpkg(MERGED))
    finally:
        part.unlink(missing_ok=True)
    return {"file": archive.gpkg(MERGED).name, **merged}


# ----------------------------------------------------------------------------- processes and the command


def _bind_local_device() -> None:
    """Under a launcher, make the GPU of this process's ``LOCAL_RANK`` its default CUDA device."""
    local = os.environ.get("LOCAL_RANK")
    if local is None:
        return
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_device(int(local) % torch.cuda.device_count())


def work(archive: Archive, loader: Loader, shard: tuple[int, int]) -> dict[str, int]:
    """One process's part: load the model once (``loader``), then run its shard of the scenes."""
    _bind_local_device()
    return run_scenes(archive, archive.shard(*shard), loader())


def _worker(archive: Archive, loader: Loader, shard: tuple[int, int], threads: int) -> None:
    """A ``--processes`` worker: exit status 0, 1 (some scenes failed) or 2 (no model)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # torch is not imported yet in this process
    try:
        counts = work(archive, loader, shard)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except (ValueError, OSError, ImportError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    raise SystemExit(EXIT_SOME_FAILED if counts["failed"] else 0)


def run_processes(archive: Archive, loader: Loader, processes: int) -> list[int]:
    """Run every shard of ``processes`` in a spawned worker process each (CPU threads split among
    them); returns their exit statuses. Merging is left to the caller."""
    context = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // processes)
    workers = [context.Process(target=_worker, args=(archive, loader, (k, processes), threads))
               for k in range(processes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return [worker.exitcode or 0 for worker in workers]


def _check_options(args: argparse.Namespace, shard: tuple[int, int] | None) -> None:
    if args.processes < 1:
        raise ValueError(f"--processes must be at least 1, got {args.processes}")
    if args.processes > 1 and (shard or args.merge_only):
        raise ValueError("--processes runs every shard itself: not with --shard, --merge-only or "
                         "under a launcher (RANK and WORLD_SIZE are set)")


def main(args: argparse.Namespace, loader: Loader,
         check: Callable[[argparse.Namespace], None] | None = None) -> int:
    """Archive mode of ``earthgpt detect``: 0 when every scene is done, 1 when a scene failed (a
    shard: one of its own) or, run whole, is still pending, 2 on bad input (``check(args)`` raises
    ValueError first) or when no model loads."""
    try:
        if check is not None:
            check(args)
        archive = Archive.plan([args.image, *args.more], args.out)
        shard = args.shard or env_shard(os.environ)
        _check_options(args, shard)
        print(f"{len(archive.scenes)} scenes" + (f", shard {shard[0]}/{shard[1]}" if shard else ""))
        own_failed = None
        if args.processes > 1:
            codes = run_processes(archive, loader, args.processes)
            if all(code == EXIT_BAD_INPUT for code in codes):  # the workers said why
                return EXIT_BAD_INPUT
        elif not args.merge_only:
            own_failed = work(archive, loader, shard or (0, 1))["failed"]
        manifest = merge(archive)
    except (ValueError, OSError, ImportError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted: run the same command again to go on where it stopped", file=sys.stderr)
        return 130
    whole = manifest["failed"] + manifest["pending"]
    failed = own_failed if shard and own_failed is not None else whole  # a shard answers for its own
    _report(archive, manifest)
    return EXIT_SOME_FAILED if failed else 0


def _report(archive: Archive, manifest: dict[str, Any]) -> None:
    for row in manifest["scenes"]:
        if row["status"] == "failed":
            print(f"failed: {row['path']}: {row['error']}", file=sys.stderr)
    print(f"{manifest['done']} done, {manifest['failed']} failed, {manifest['pending']} pending: "
          f"{archive.out / 'manifest.json'}")
    from earthgpt.gpkg_merge import PIXEL_LAYER

    merged = manifest["merged"]
    if merged:
        extra = f", {merged[PIXEL_LAYER]} in layer {PIXEL_LAYER}" if merged[PIXEL_LAYER] else ""
        print(f"written: {archive.gpkg(MERGED)} ({merged['features']} features in {merged['crs']}{extra})")
    else:
        print(f"{MERGED}.gpkg waits for the pending scenes: the last process to finish writes it "
              "(or run again with --merge-only)")
