"""Opening a big scene: the first overview the app shows, against GDAL's decimated read.

A ``--size`` × ``--size`` (default 20,000) 3-band uint16 GeoTIFF, 256 × 256 tiles, deflate (a
smooth field per band plus random texture: deflate keeps about 92 % of the bytes, so every block
costs its real decoding time), is written block row by block row into a temporary folder, then
copied and given internal overviews (2 … 64, nearest). On each file, each variant runs
``--repeats`` times, each time in a fresh process (its own peak RSS, no block cache carried over),
in turns:

- **gdal** (baseline): ``rasterio.open`` and ``src.read(out_shape=…)`` at the app's overview size
  (768 px), GDAL's default settings, as the issue measured it (25.9 s, 1.29 GB without overviews);
- **quick**: the overview read the app makes, ``earthgpt.raster.quick_overview``;
- **app**: ``app.handlers.load_image``, the whole open (header, sensor, overview, first window):
  the time until the app shows the scene.

On the file without overviews the first view is a preview, so one more run (**full**, once)
times the open until the exact overview has been built in the background and swapped in.
Wall seconds, CPU seconds of the thread that opens the scene (less sensitive to other jobs on
the machine; the background build runs in a thread of its own) and the process's peak RSS, with
the RSS the imports alone take. Linux only (``/proc/self/status``).

    python bench/bench_scene_overview.py [--out bench/results/scene_overview.json] [--size 20000]
        [--repeats 5] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"gdal": "GDAL decimated read (baseline)", "quick": "quick_overview (library)",
            "app": "app open: load_image (first view)"}
TILE = 256
CELL = 512
"""Pixels between the random values the smooth field interpolates."""


def write_scene(path: Path, size: int) -> None:
    """The synthetic scene, one row of tiles at a time (memory: one row)."""
    import rasterio
    from rasterio.windows import Window

    rng = np.random.default_rng(0)
    cells = size // CELL + 2
    low = rng.uniform(2000, 40000, (3, cells + 1, cells)).astype(np.float32)
    across = np.arange(size) / CELL
    left = np.floor(across).astype(int)
    weights = np.zeros((cells, size), np.float32)  # linear interpolation along x as one matrix product
    weights[left, np.arange(size)] = 1 - (across - left)
    weights[left + 1, np.arange(size)] += across - left
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint16",
               "tiled": True, "blockxsize": TILE, "blockysize": TILE, "compress": "deflate", "zlevel": 1,
               "crs": "EPSG:32633", "transform": rasterio.Affine(0.5, 0, 500000, 0, -0.5, 4000000)}
    with rasterio.open(path, "w", **profile) as dst:
        for top in range(0, size, TILE):
            rows = np.arange(top, min(top + TILE, size)) / CELL
            up = np.floor(rows).astype(int)
            down = (rows - up)[None, :, None].astype(np.float32)
            field = (low[:, up] * (1 - down) + low[:, up + 1] * down) @ weights
            texture = rng.integers(0, 1024, field.shape, dtype=np.uint16)
            dst.write((field + texture).astype(np.uint16), window=Window(0, top, size, len(rows)))


def add_overviews(source: Path, path: Path) -> None:
    """A copy of ``source`` with internal overviews."""
    import rasterio
    from rasterio.enums import Resampling

    shutil.copyfile(source, path)
    with rasterio.open(path, "r+") as dst:
        dst.build_overviews([2, 4, 8, 16, 32, 64], Resampling.nearest)


def _status_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in MiB; unlike ``ru_maxrss`` the peak
    is not inherited from the parent across ``fork`` and ``exec``."""
    return int(Path("/proc/self/status").read_text().split(f"{field}:")[1].split()[0]) / 1024


def _process_cpu_s() -> float:
    """CPU seconds of every thread of this process (the background build's too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _with_app() -> None:
    """Make the app package importable (it is not installed; a script's path is ``bench/``)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def child(variant: str, path: Path, view: int) -> dict[str, Any]:
    """One run of ``variant`` in this (fresh) process."""
    import rasterio

    _with_app()

    from app.handlers import load_image, refine_overview
    from app.session_io import Session
    from earthgpt.raster import overview_shape, quick_overview

    imports, every = _status_mb("VmRSS"), _process_cpu_s()
    start, cpu = time.perf_counter(), time.thread_time()
    preview = False
    if variant == "gdal":
        with rasterio.open(path) as src:
            out_w, out_h = overview_shape(src.width, src.height, view)
            src.read(out_shape=(src.count, out_h, out_w))
    elif variant == "quick":
        preview = not quick_overview(path, view).exact
    else:
        session = load_image(Session(), path)
        preview = bool(session.overview_builds)
        if variant == "full":
            for build in session.overview_builds:
                build.result()
            session, _ = refine_overview(session) or (session, "")
            assert not session.overview_builds
    seconds, cpu = time.perf_counter() - start, time.thread_time() - cpu
    return {"seconds": seconds, "cpu_s": cpu, "process_cpu_s": _process_cpu_s() - every,
            "peak_mb": _status_mb("VmHWM"), "imports_mb": imports,
            "preview": preview}


def _run(variant: str, path: Path, view: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", variant, "--path", str(path), "--view", str(view)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{variant} on {path.name} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(path: Path, repeats: int, view: int) -> dict[str, Any]:
    """Every variant ``repeats`` times, in turns; medians and peaks."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for _ in range(repeats):
        for name in VARIANTS:
            runs[name].append(_run(name, path, view))
    result = {}
    for name, found in runs.items():
        result[name] = {
            "label": VARIANTS[name], "median_s": statistics.median(r["seconds"] for r in found),
            "median_cpu_s": statistics.median(r["cpu_s"] for r in found),
            "peak_mb": max(r["peak_mb"] for r in found),
            "above_imports_mb": max(r["peak_mb"] - r["imports_mb"] for r in found),
            "preview": found[0]["preview"], "runs": found,
        }
    gdal = result["gdal"]
    for name in ("quick", "app"):
        result[name]["speedup"] = gdal["median_s"] / result[name]["median_s"]
        result[name]["cpu_speedup"] = gdal["median_cpu_s"] / result[name]["median_cpu_s"]
    return result


def main(argv: list[str] | None = None) -> int:
    """Write the scenes, run the variants, write the JSON results and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/scene_overview.json"))
    parser.add_argument("--size", type=int, default=20000, help="side of the square scene, pixels")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None, help="the scenes go here (default: temp)")
    parser.add_argument("--child", choices=[*VARIANTS, "full"], help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--view", type=int, default=768, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.path, args.view)))
        return 0
    _with_app()
    from app.handlers import OVERVIEW_SIZE

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        plain, pyramid = Path(tmp) / "scene.tif", Path(tmp) / "scene_overviews.tif"
        start = time.perf_counter()
        write_scene(plain, args.size)
        add_overviews(plain, pyramid)
        written = time.perf_counter() - start
        files = {"no_overviews": measure(plain, args.repeats, OVERVIEW_SIZE),
                 "overviews": measure(pyramid, args.repeats, OVERVIEW_SIZE)}
        full = _run("full", plain, OVERVIEW_SIZE)
        sizes = {"no_overviews_mb": plain.stat().st_size / 2**20,
                 "overviews_mb": pyramid.stat().st_size / 2**20}
    _report(args, files, full, sizes, written, OVERVIEW_SIZE)
    return 0


def targets(files: dict[str, Any]) -> dict[str, bool]:
    """The issue's targets: < 2 s and < 1 GB without overviews; with them no slower than GDAL."""
    plain, pyramid = files["no_overviews"]["app"], files["overviews"]
    return {"no_overviews_under_2_s": plain["median_s"] < 2.0,
            "no_overviews_under_1_gb": plain["peak_mb"] < 1024,
            "overviews_quick_not_slower_than_gdal":
                pyramid["quick"]["median_s"] <= pyramid["gdal"]["median_s"]}


def _report(args: argparse.Namespace, files: dict[str, Any], full: dict[str, Any], sizes: dict[str, float],
            written: float, view: int) -> None:
    result = {
        "benchmark": "scene_overview", "baseline": VARIANTS["gdal"], "size": args.size, "tile": TILE,
        "overview_size": view, "repeats": args.repeats, "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(), "write_s": written, "file_mb": sizes,
        "files": files, "full_overview": full, "targets": targets(files),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.size} × {args.size} × 3 uint16, {TILE} px tiles, deflate; overview {view} px; "
          f"median of {args.repeats} fresh processes\n")
    print("| file | variant | wall s | CPU s | peak RSS | above imports | vs GDAL (wall / CPU) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, rows in files.items():
        for row in rows.values():
            ratio = f"{row['speedup']:.1f}× / {row['cpu_speedup']:.1f}×" if "speedup" in row else "1.0×"
            shown = row["label"] + (" (preview)" if row["preview"] else "")
            print(f"| {name} | {shown} | {row['median_s']:.2f} | {row['median_cpu_s']:.2f} | "
                  f"{row['peak_mb']:,.0f} MiB | {row['above_imports_mb']:,.0f} MiB | {ratio} |")
    print(f"\nfull overview built and swapped in: {full['seconds']:.1f} s wall, "
          f"{full['process_cpu_s']:.1f} s CPU, peak {full['peak_mb']:,.0f} MiB (one run)")
    print(f"targets: {result['targets']}\nwrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
