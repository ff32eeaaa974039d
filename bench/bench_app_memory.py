"""Memory: peak RSS of the analyst app with the default model, idle, in a chat turn and in whole-scene
detection of an 8,192 × 8,192 raster, driven through its API with the real client.

The server is ``python app.py --model MODEL`` as deployed, started by ``bench/load_app.py``'s
``served``; one ``gradio_client.Client`` then, in order: waits ``--settle-s`` (idle), opens the
generated scene (``/open_image``: quick overview, background overview build, centred window),
asks one question (``/ask``), and runs whole-scene detection (``/detect_scene``, 512 px windows,
64 px overlap) until ``--windows`` windows are done or ``--scene-s`` seconds have passed, then
cancels it (``/cancel_scene``). The RSS is recorded each time more windows are done, so the report
shows whether memory levels off (one batch of windows in flight, the detections so far) or keeps
growing with the windows; the whole 361-window run is not waited for.

The peak of each phase is the kernel's high-water mark of the server's resident set (``VmHWM``,
reset before the phase through ``/proc/PID/clear_refs``), so no short peak is missed between
samples. The scene is the bundled Landsat demo's interior mirrored into a tiled, deflate-compressed
3-band ``uint8`` GeoTIFF without overviews (generated here, in blocks). MB are 2**20 bytes.

    python bench/bench_app_memory.py [--model nano] [--windows 48] [--scene-s 300]
        [--out bench/results/app_memory.json]

Exit status 0 when the idle RSS is under ``--idle-mb`` (1,500) and every busy peak under
``--busy-mb`` (2,500); 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load_app  # the neighbour script: the server, the client calls, RSS

SCENE_SIZE = 8192
BLOCK = 512
QUESTION = "What is in this image?"


def make_scene(path: Path, size: int = SCENE_SIZE, crop: int = 384) -> Path:
    """A ``size`` × ``size`` 3-band GeoTIFF: the Landsat demo's central ``crop`` pixels mirrored
    over the whole canvas (seamless, real texture), tiled in 512 px deflate blocks, written block
    by block (never the whole raster in memory)."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(load_app.DEMO_TILE) as src:
        window = Window((src.width - crop) // 2, (src.height - crop) // 2, crop, crop)
        texture = src.read(window=window)
        profile = {"driver": "GTiff", "dtype": "uint8", "count": src.count, "crs": src.crs,
                   "transform": src.window_transform(window), "width": size, "height": size,
                   "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "deflate"}
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, BLOCK):
            for col in range(0, size, BLOCK):
                rows, cols = _mirrored(row, BLOCK, crop), _mirrored(col, BLOCK, crop)
                dst.write(texture[:, rows][:, :, cols], window=Window(col, row, BLOCK, BLOCK))
    return path


def _mirrored(start: int, length: int, period: int) -> np.ndarray:
    """Source indices of ``length`` positions from ``start`` on a texture mirrored every ``period``."""
    positions = np.arange(start, start + length) % (2 * period)
    return np.where(positions < period, positions, 2 * period - 1 - positions)


# ----------------------------------------------------------------------------- peak RSS of a phase

def reset_peak(pid: int) -> None:
    """Start the process's high-water mark afresh from its current RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def phase(pid: int, action: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``action`` with the peak reset first: its result plus RSS before, peak and after (MB)."""
    before = load_app.rss_mb(pid)
    reset_peak(pid)
    started = time.monotonic()
    result = action()
    return {**result, "seconds": round(time.monotonic() - started, 1), "rss_before_mb": round(before, 1),
            "peak_mb": round(load_app.status_kb(pid, "VmHWM") / 1024, 1),
            "rss_after_mb": round(load_app.rss_mb(pid), 1)}


# ----------------------------------------------------------------------------- the phases

def open_scene(client: Any, scene: Path) -> dict[str, Any]:
    """Open the scene as an analyst does; the status line it answered."""
    from gradio_client import handle_file

    outputs = load_app.call(client, load_app.Record(), "open_image", handle_file(str(scene)), "auto", "",
                            api_name="/open_image")
    return {"status": _checked(outputs[-1], "open_image")}


def chat_turn(client: Any) -> dict[str, Any]:
    """One question about the window the scene opened on; the answer's length."""
    outputs = load_app.call(client, load_app.Record(), "ask", QUESTION, api_name="/ask")
    _checked(outputs[-1], "ask")
    answer = load_app.message_text(outputs[2][-1].get("content")) if outputs[2] else ""
    return {"answer_chars": len(answer)}


def scene_run(client: Any, pid: int, windows: int, seconds: float) -> dict[str, Any]:
    """Whole-scene detection until ``windows`` windows are done or ``seconds`` have passed, then
    cancelled; the windows done, the final status line, and the server's RSS (MB) each time the
    count of windows done grew (does memory level off or keep growing with the windows?)."""
    job = client.submit("", False, BLOCK, 64, api_name="/detect_scene")
    deadline, cancelled, trace = time.monotonic() + seconds, False, [(0, round(load_app.rss_mb(pid), 1))]
    while not job.done():
        done, _ = progress(_last_status(job))
        if done > trace[-1][0]:
            trace.append((done, round(load_app.rss_mb(pid), 1)))
        if not cancelled and (done >= windows or time.monotonic() > deadline):
            _checked(client.predict(api_name="/cancel_scene"), "cancel_scene")
            cancelled = True
        time.sleep(load_app.POLL_S * 10)
    status = _checked(_last_status(job), "detect_scene")
    done, total = progress(status)
    return {"status": status, "windows_done": done, "windows_total": total, "cancelled": cancelled,
            "rss_by_windows_done": trace}


def _last_status(job: Any) -> str:
    outputs = job.outputs()
    return str(outputs[-1][-1]) if outputs else ""


def progress(status: str) -> tuple[int, int]:
    """(windows done, windows in all) from a whole-scene status line; (0, 0) before the first."""
    running = re.search(r"window (\d+) of (\d+)", status)
    if running:
        return int(running[1]) - 1, int(running[2])
    stopped = re.search(r"after (\d+) of (\d+) windows", status)
    if stopped:
        return int(stopped[1]), int(stopped[2])
    finished = re.search(r"in (\d+) windows", status)
    return (int(finished[1]),) * 2 if finished else (0, 0)


def _checked(status: Any, action: str) -> str:
    if isinstance(status, str) and status.startswith("⚠"):
        raise SystemExit(f"error: {action}: {status}")
    return str(status)


def measure_app(url: str, pid: int, scene: Path, *, settle_s: float, windows: int, scene_s: float,
                downloads: Path) -> dict[str, Any]:
    """The phases against the app at ``url`` (server process ``pid``)."""
    from gradio_client import Client

    report: dict[str, Any] = {"start": {"rss_mb": round(load_app.rss_mb(pid), 1),
                                        "peak_mb": round(load_app.status_kb(pid, "VmHWM") / 1024, 1)}}
    client = Client(url, verbose=False, download_files=str(downloads),
                    httpx_kwargs={"timeout": load_app.TIMEOUT_S})
    try:
        report["idle"] = phase(pid, lambda: time.sleep(settle_s) or {})
        report["open_scene"] = phase(pid, lambda: open_scene(client, scene))
        report["chat_turn"] = phase(pid, lambda: chat_turn(client))
        report["scene_detection"] = phase(pid, lambda: scene_run(client, pid, windows, scene_s))
    finally:
        client.close()
    return report


def verdict(report: dict[str, Any], idle_mb: float, busy_mb: float) -> dict[str, Any]:
    """The targets: RSS idle (after start, settled) and the peak of each busy phase."""
    busy = {name: report[name]["peak_mb"] for name in ("open_scene", "chat_turn", "scene_detection")}
    idle = report["idle"]["rss_after_mb"]
    return {"idle_mb": idle, "idle_target_mb": idle_mb, "idle_ok": idle < idle_mb,
            "busy_peak_mb": max(busy.values()), "busy_target_mb": busy_mb,
            "busy_ok": max(busy.values()) < busy_mb}


def table(report: dict[str, Any]) -> str:
    """The report as a Markdown table and a verdict line."""
    start = report["start"]
    rows = ["| phase | RSS before | peak | RSS after | seconds |", "|---|---:|---:|---:|---:|",
            f"| start (model loaded) | | {start['peak_mb']:,.0f} | {start['rss_mb']:,.0f} | |"]
    for name in ("idle", "open_scene", "chat_turn", "scene_detection"):
        row = report[name]
        rows.append(f"| {name.replace('_', ' ')} | {row['rss_before_mb']:,.0f} | {row['peak_mb']:,.0f} | "
                    f"{row['rss_after_mb']:,.0f} | {row['seconds']} |")
    scene, ok = report["scene_detection"], report["verdict"]
    trace = ", ".join(f"{done}: {rss:,.0f}" for done, rss in scene["rss_by_windows_done"])
    rows += ["", f"scene: {scene['windows_done']} of {scene['windows_total']} windows "
                 f"({'cancelled' if scene['cancelled'] else 'ran to the end'}): {scene['status']}",
             f"RSS (MB) as windows were done: {trace}",
             f"idle {ok['idle_mb']:,.0f} MB (target < {ok['idle_target_mb']:,.0f}): "
             f"{'OK' if ok['idle_ok'] else 'MISSED'}; busy peak {ok['busy_peak_mb']:,.0f} MB "
             f"(target < {ok['busy_target_mb']:,.0f}): {'OK' if ok['busy_ok'] else 'MISSED'}"]
    return "\n".join(rows)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/bench_app_memory.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="nano", help="the app's --model (default: %(default)s)")
    parser.add_argument("--windows", type=int, default=48,
                        help="whole-scene windows before cancelling (default: %(default)s)")
    parser.add_argument("--scene-s", type=float, default=300,
                        help="longest whole-scene run (s) before cancelling")
    parser.add_argument("--settle-s", type=float, default=10,
                        help="idle seconds after start (default: %(default)s)")
    parser.add_argument("--idle-mb", type=float, default=1500, help="target: idle RSS under this")
    parser.add_argument("--busy-mb", type=float, default=2500, help="target: every busy peak under this")
    parser.add_argument("--startup-s", type=float, default=900, help="how long the app may take to start")
    parser.add_argument("--out", type=Path, default=load_app.ROOT / "bench" / "results" / "app_memory.json")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the scene, start the app, run the phases, write the JSON report and print the table."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="earthgpt-memory-") as tmp:
        work = Path(tmp)
        scene = make_scene(work / "scene-8192.tif")
        (work / "downloads").mkdir()
        with load_app.served(args.model, args.startup_s, work / "app.log") as (url, pid):
            report = measure_app(url, pid, scene, settle_s=args.settle_s, windows=args.windows,
                                 scene_s=args.scene_s, downloads=work / "downloads")
    report |= {"model": args.model, "scene_px": SCENE_SIZE, "cpus": os.cpu_count(),
               "python": sys.version.split()[0]}
    report["verdict"] = verdict(report, args.idle_mb, args.busy_mb)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(table(report))
    print(f"report in {args.out}")
    return 0 if report["verdict"]["idle_ok"] and report["verdict"]["busy_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
