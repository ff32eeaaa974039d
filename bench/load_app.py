"""Load: N simulated analysts use the analyst app at once through its API, with the real client.

Each analyst is one ``gradio_client.Client`` (one session) in a thread of its own and repeats until
``--seconds`` have passed: open its own tile (a crop of the bundled Landsat demo, named after the
analyst), ask three questions, detect (the HBB quick task), export GeoJSON. Every file name and
prompt of analyst i carries its marker ``analyst-<i>-<random hex>``, so anything of another session
in a response (a file name, a prompt, an answer, an exported feature) is caught as **cross-talk**;
each response is also checked to be this session's (its tile named in the info, exactly the
prompts it sent in the conversation, the export's features from its tile and as many as it
detected). A call that raises or answers with a ``⚠`` status line is an **error**.

The server is ``python app.py --model MODEL`` on a free loopback port, as deployed (one worker,
``default_concurrency_limit=1``: analysts queue). The script samples the server's RSS
(``VmRSS`` in ``/proc/PID/status``), polls each call's ``job.status()`` for the queue position the
client is shown, and reports p50/p95 latency per action against a baseline measured in the same
run: one analyst alone (one cycle after a warm-up cycle, before the others start).

    python bench/load_app.py [--analysts 8] [--seconds 120] [--model nano] [--out bench/results/load_app.json]

Memory: the server's RSS over the baseline (one analyst alone) is expected to grow with the number
of sessions (each holds its tile, display images and conversation cache) and then level off. The
run checks both: growth of the peak of at most ``--rss-per-analyst-mb`` per analyst, and a second
half of the run whose floor (the 10th percentile of the RSS samples, the level RSS falls back to
between calls) is at most ``--rss-drift-mb`` above the first half's: a floor that keeps climbing is
a leak, whatever its size, while a transient peak is not (the growth bound limits those). The
report also says when the RSS peaked and which calls were in flight then (``rss_mb.at_peak``),
and lists every call's submit and answer times (``calls``).

Exit status 0 when there was no error, no cross-talk, and RSS stayed within both bounds; 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEMO_TILE = ROOT / "assets" / "demo" / "RGB.byte.tif"
MARKER = re.compile(r"analyst-\d{2}-[0-9a-f]{8}")
ACTIONS = ("open_image", "ask", "detect", "export_geojson")
QUESTIONS = ("What is in this image?", "How many ships can you see?", "Describe the largest building.")
POLL_S = 0.02
"""How often a waiting call asks its job for its status (latencies are this coarse)."""
TIMEOUT_S = 120
"""A request to the server (connect, upload, download) that takes longer is an error (httpx's own
default, 5 s, is shorter than a busy server's upload)."""


class LoadError(Exception):
    """A call that failed (``kind`` ``error``) or showed another session's content (``cross-talk``)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Analyst:
    """One simulated analyst: its marker and its own tile (named after the marker)."""

    index: int
    marker: str
    tile: Path


@dataclass
class Record:
    """What the analysts' calls measured and found; threads add to it under ``lock``."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {a: [] for a in ACTIONS})
    positions: list[int] = field(default_factory=list)
    """Per call, the highest queue position its client was shown (1 = next to run; 0 = never queued)."""
    calls: list[tuple[str, float, float]] = field(default_factory=list)
    """Per call, (action, submitted, answered) in ``time.monotonic()`` seconds: which calls were in
    flight when the server's RSS peaked."""
    errors: list[str] = field(default_factory=list)
    cross_talk: list[str] = field(default_factory=list)
    cycles: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def failed(self, analyst: Analyst, failure: LoadError) -> None:
        with self.lock:
            found = self.cross_talk if failure.kind == "cross-talk" else self.errors
            found.append(f"analyst {analyst.index}: {failure}")


def make_analysts(folder: Path, count: int, size: int = 384) -> list[Analyst]:
    """``count`` analysts, each with a crop of the Landsat demo tile at its own offset (so its
    own pixels), georeferenced, written as ``<marker>.tif`` into ``folder``."""
    import rasterio

    analysts = []
    with rasterio.open(DEMO_TILE) as src:
        for i in range(count):
            marker = f"analyst-{i:02d}-{secrets.token_hex(4)}"
            window = rasterio.windows.Window((i * 53) % (src.width - size), (i * 41) % (src.height - size),
                                             size, size)
            profile = {"driver": "GTiff", "dtype": src.dtypes[0], "count": src.count, "crs": src.crs,
                       "nodata": src.nodata, "width": size, "height": size,
                       "transform": src.window_transform(window)}
            path = folder / f"{marker}.tif"
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(src.read(window=window))
            analysts.append(Analyst(i, marker, path))
    return analysts


# ----------------------------------------------------------------------------- checks of a response

def strings(value: Any) -> Iterator[str]:
    """Every string inside ``value`` (nested lists, tuples and dicts)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings(item)


def check_own(analyst: Analyst, action: str, outputs: Any) -> None:
    """Raise :class:`LoadError` when ``outputs`` carry another analyst's marker (cross-talk) or a
    ``⚠`` status line (an error)."""
    foreign = {m for text in strings(outputs) for m in MARKER.findall(text)} - {analyst.marker}
    if foreign:
        raise LoadError("cross-talk", f"{action} showed {', '.join(sorted(foreign))}")
    status = outputs[-1] if isinstance(outputs, list | tuple) and outputs else outputs
    if isinstance(status, str) and status.startswith("⚠"):
        raise LoadError("error", f"{action}: {status}")


def check_info(analyst: Analyst, action: str, info: str) -> int:
    """The number of detections the session's info shows; :class:`LoadError` unless it names this
    analyst's tile."""
    if f"**{analyst.tile.name}**" not in info:
        raise LoadError("cross-talk", f"{action}: the info names another image: {info.splitlines()[0]!r}")
    found = re.search(r"Detections: (\d+)", info)
    return int(found.group(1)) if found else 0


def message_text(content: Any) -> str:
    """A chat message's text: its content, or the text parts of a list of parts."""
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def check_conversation(analyst: Analyst, chat: list[dict[str, Any]], sent: Sequence[str]) -> None:
    """:class:`LoadError` unless the conversation's questions are exactly those this analyst sent since
    it opened its tile, in order, the last one answered."""
    asked = [message_text(m.get("content")) for m in chat if m.get("role") == "user"]
    if asked != list(sent):
        raise LoadError("cross-talk", f"the conversation holds {asked!r}, the analyst sent {list(sent)!r}")
    if chat[-1].get("role") != "assistant":
        raise LoadError("error", "the last question has no answer")


def check_export(analyst: Analyst, path: str, detections: int) -> None:
    """:class:`LoadError` unless the exported GeoJSON is of this analyst's tile and holds (written or
    listed as left out) as many detections as its session found."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    check_own(analyst, "export_geojson (file)", data)
    sources = {f["properties"].get("source") for f in data["features"]} - {analyst.tile.name}
    written = len(data["features"]) + len(data.get("skipped", []))
    if sources or not Path(path).name.startswith(analyst.tile.stem):
        raise LoadError("cross-talk", f"{Path(path).name} holds features of {sorted(map(str, sources))}")
    if written != detections:
        raise LoadError("cross-talk", f"export holds {written} detections, the session found {detections}")


# ----------------------------------------------------------------------------- the analysts

def call(client: Any, record: Record, action: str, *args: Any, api_name: str) -> Any:
    """One API call, timed, watching the queue position the client is shown while it waits."""
    from gradio_client.utils import Status

    started = time.monotonic()
    job = client.submit(*args, api_name=api_name)
    position = 0
    while not job.done():
        status = job.status()
        if status.code == Status.IN_QUEUE and status.rank is not None:
            position = max(position, status.rank + 1)
        time.sleep(POLL_S)
    try:
        outputs = job.result()
    except Exception as err:  # the client raises whatever went wrong on the way: an error
        raise LoadError("error", f"{action}: {type(err).__name__}: {' '.join(str(err).split())}") from err
    ended = time.monotonic()
    with record.lock:
        record.latencies[action].append(ended - started)
        record.positions.append(position)
        record.calls.append((action, started, ended))
    return outputs


def cycle(client: Any, analyst: Analyst, record: Record) -> None:
    """Open the tile, ask three questions, detect, export; every response checked."""
    from gradio_client import handle_file

    outputs = call(client, record, "open_image", handle_file(str(analyst.tile)), "auto", "",
                   api_name="/open_image")
    check_own(analyst, "open_image", outputs)
    check_info(analyst, "open_image", outputs[4])
    sent: list[str] = []
    for turn, question in enumerate(QUESTIONS, 1):
        sent.append(f"[{analyst.marker} turn {turn}] {question}")
        outputs = call(client, record, "ask", sent[-1], api_name="/ask")
        check_own(analyst, "ask", outputs)
        check_conversation(analyst, outputs[2], sent)
    outputs = call(client, record, "detect", "", "", api_name="/task_detection_hbb")
    check_own(analyst, "detect", outputs)
    detections = check_info(analyst, "detect", outputs[4])
    path, _, status = call(client, record, "export_geojson", api_name="/export_geojson")
    if detections == 0 and status.startswith("⚠ nothing to export"):
        return  # the model found nothing: the export rightly says so
    check_own(analyst, "export_geojson", [path, status])
    check_export(analyst, path, detections)


def run_analyst(url: str, analyst: Analyst, record: Record, deadline: float, downloads: Path) -> None:
    """One analyst's session: cycles until ``deadline`` (one at least); a failed cycle is recorded and
    the next starts."""
    from gradio_client import Client

    try:
        client = Client(url, verbose=False, download_files=str(downloads),
                        httpx_kwargs={"timeout": TIMEOUT_S})
    except Exception as err:  # cannot even connect: one error, nothing else to do
        record.failed(analyst, LoadError("error", f"connect: {type(err).__name__}: {err}"))
        return
    try:
        while True:
            try:
                cycle(client, analyst, record)
            except LoadError as failure:
                record.failed(analyst, failure)
            except Exception as err:  # a response of an unexpected shape (a broken file, no info): an error
                record.failed(analyst, LoadError("error", f"{type(err).__name__}: {err}"))
            else:
                with record.lock:
                    record.cycles += 1
            if time.monotonic() >= deadline:
                break
    finally:
        client.close()


def sample_rss(pid: int, samples: list[tuple[float, float]], stop: threading.Event,
               interval: float = 0.5) -> None:
    """Append (monotonic time, RSS of process ``pid`` in MB) to ``samples`` every ``interval`` seconds
    until ``stop``."""
    while not stop.wait(interval):
        samples.append((time.monotonic(), rss_mb(pid)))


def status_kb(pid: int, field: str) -> int:
    """One ``/proc/PID/status`` field in kB (``VmRSS``, ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise ValueError(f"process {pid} has no {field}")


def rss_mb(pid: int) -> float:
    """``VmRSS`` of process ``pid`` in MB."""
    return status_kb(pid, "VmRSS") / 1024


# ----------------------------------------------------------------------------- the run and its report

def run_load(url: str, analysts: int, seconds: float, server_pid: int, workdir: Path) -> dict[str, Any]:
    """One analyst alone: a warm-up cycle, then one cycle (the baseline); then ``analysts`` at once
    for ``seconds``, against the app at ``url``. Returns the report (:func:`summary`)."""
    team = make_analysts(workdir, analysts + 1)
    rss, stop = [(time.monotonic(), rss_mb(server_pid))], threading.Event()
    sampler = threading.Thread(target=sample_rss, args=(server_pid, rss, stop), daemon=True)
    sampler.start()
    warm_up, alone = Record(), Record()
    for solo in (warm_up, alone):  # a deadline passed: one cycle each
        run_analyst(url, team[-1], solo, time.monotonic(), _downloads(workdir, team[-1]))
    baseline = rss_mb(server_pid)
    record, started = Record(), time.monotonic()
    threads = [threading.Thread(target=run_analyst, daemon=True,
                                args=(url, a, record, started + seconds, _downloads(workdir, a)))
               for a in team[:-1]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    stop.set()
    sampler.join()
    rss.append((time.monotonic(), rss_mb(server_pid)))
    report = summary(record, [warm_up, alone], [mb for _, mb in rss], baseline, analysts, wall)
    report["rss_mb"] |= _halves(rss, started, wall)
    report["rss_mb"]["at_peak"] = in_flight(record.calls, rss, started)
    report["calls"] = [[action, round(submitted - started, 2), round(answered - started, 2)]
                       for action, submitted, answered in sorted(record.calls, key=lambda c: c[1])]
    return report


def in_flight(calls: Sequence[tuple[str, float, float]], rss: Sequence[tuple[float, float]],
              started: float) -> dict[str, Any]:
    """When (seconds after ``started``) the sampled RSS peaked during the load, and how many calls of
    each action were in flight then (submitted, not yet answered: queued or running)."""
    during = [(t, mb) for t, mb in rss if t >= started]
    if not during:
        return {}
    when, mb = max(during, key=lambda sample: sample[1])
    actions: dict[str, int] = {}
    for action, submitted, answered in calls:
        if submitted <= when <= answered:
            actions[action] = actions.get(action, 0) + 1
    return {"t_s": round(when - started, 1), "mb": round(mb, 1), "calls": actions}


def _halves(rss: Sequence[tuple[float, float]], started: float, wall: float) -> dict[str, float]:
    """Peak, floor (:func:`_floor`) and median RSS of the first and the second half of the load (from
    ``started``, ``wall`` seconds); ``drift`` is the floors' difference, the leak check's measure."""
    middle = started + wall / 2
    first = [mb for t, mb in rss if started <= t < middle]
    second = [mb for t, mb in rss if t >= middle]
    before = [mb for t, mb in rss if t < started]
    peak_first = max(first, default=before[-1] if before else 0.0)
    peak_second = max(second, default=peak_first)
    def median(values: list[float]) -> float:
        return round(float(statistics.median(values)), 1) if values else 0.0

    floor_first = _floor(first or [peak_first])
    floor_second = _floor(second or first or [peak_first])
    return {"peak_first_half": round(peak_first, 1), "peak_second_half": round(peak_second, 1),
            "peak_drift": round(peak_second - peak_first, 1),
            # a transient spike moves a peak; a leak raises the level the RSS falls back to
            "floor_first_half": floor_first, "floor_second_half": floor_second,
            "drift": round(floor_second - floor_first, 1),
            "median_first_half": median(first), "median_second_half": median(second),
            "series": [[round(t - started, 1), round(mb, 1)] for t, mb in rss]}


def _floor(values: Sequence[float]) -> float:
    """The level RSS falls back to between calls: the 10th percentile of the samples (the lowest one
    alone would be one sample's luck)."""
    ordered = sorted(values)
    return round(ordered[int(0.1 * (len(ordered) - 1))], 1)


def _downloads(workdir: Path, analyst: Analyst) -> Path:
    folder = workdir / f"downloads-{analyst.index:02d}"
    folder.mkdir(exist_ok=True)
    return folder


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))], 3)


def summary(record: Record, solo: Sequence[Record], rss: Sequence[float], baseline: float, analysts: int,
            wall: float) -> dict[str, Any]:
    """The report: latency per action (p50, p95, max; and alone: ``solo``'s last record, the
    baseline), queue positions shown, RSS of the server, cycles, errors and cross-talk."""
    actions = {
        action: {"calls": len(times), "p50_s": _percentile(times, 50), "p95_s": _percentile(times, 95),
                 "max_s": _percentile(times, 100),
                 "alone_s": _percentile(solo[-1].latencies[action], 50)}
        for action, times in record.latencies.items()
    }
    queued = [p for p in record.positions if p > 0]
    return {
        "analysts": analysts, "wall_s": round(wall, 1), "cycles": record.cycles, "actions": actions,
        "queue": {"calls": len(record.positions), "queued_calls": len(queued),
                  "max_position": max(queued, default=0), "p50_position_queued": _percentile(queued, 50)},
        "rss_mb": {"start": round(rss[0], 1), "baseline": round(baseline, 1), "peak": round(max(rss), 1),
                   "end": round(rss[-1], 1), "growth": round(max(rss) - baseline, 1)},
        "errors": [e for r in (*solo, record) for e in r.errors],
        "cross_talk": [c for r in (*solo, record) for c in r.cross_talk],
    }


def table(report: dict[str, Any]) -> str:
    """The report as a text table and a few lines."""
    rows = [f"{'action':<15}{'calls':>7}{'p50 s':>9}{'p95 s':>9}{'max s':>9}{'alone s':>9}"]
    for action, row in report["actions"].items():
        cells = [row[k] if row[k] is not None else "-" for k in ("p50_s", "p95_s", "max_s", "alone_s")]
        rows.append(f"{action:<15}{row['calls']:>7}" + "".join(f"{c:>9}" for c in cells))
    queue, rss = report["queue"], report["rss_mb"]
    rows += [
        f"{report['analysts']} analysts, {report['wall_s']} s, {report['cycles']} cycles done "
        f"(open, 3 questions, detect, export)",
        f"queue: {queue['queued_calls']} of {queue['calls']} calls waited; highest position shown "
        f"{queue['max_position']}, median {queue['p50_position_queued']}",
        f"server RSS: {rss['baseline']} MB after one analyst alone, peak {rss['peak']} MB "
        f"(+{rss['growth']}), end {rss['end']} MB; peak in the first half of the load "
        f"{rss.get('peak_first_half', '-')} MB, second half {rss.get('peak_second_half', '-')} MB "
        f"(medians {rss.get('median_first_half', '-')} and {rss.get('median_second_half', '-')} MB, "
        f"floors {rss.get('floor_first_half', '-')} and {rss.get('floor_second_half', '-')} MB); "
        f"highest sample at {rss.get('at_peak', {}).get('t_s', '-')} s with calls in flight: "
        f"{rss.get('at_peak', {}).get('calls', '-')}",
        f"errors: {len(report['errors'])}, cross-talk: {len(report['cross_talk'])}",
        *(f"  {line}" for line in (report["errors"] + report["cross_talk"])[:10]),
    ]
    return "\n".join(rows)


# ----------------------------------------------------------------------------- the server

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def served(model: str, startup_s: float, log: Path) -> Iterator[tuple[str, int]]:
    """``python app.py --model MODEL`` on a free loopback port, its output in ``log``: yields its
    URL and process id once it answers, and stops it (SIGTERM) afterwards."""
    port = free_port()
    env = os.environ | {"GRADIO_ANALYTICS_ENABLED": "False"}
    with log.open("w") as out:
        command = [sys.executable, str(ROOT / "app.py"), "--model", model, "--port", str(port)]
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while not _answers(url):
            if server.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                raise SystemExit(f"error: the app did not start: {' | '.join(tail) or 'no output'}")
            time.sleep(0.5)
        yield url, server.pid
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/config", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python bench/load_app.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--analysts", type=int, default=8, help="analysts at once (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=120, help="for how long (default: %(default)s)")
    parser.add_argument("--model", default="nano", help="the app's --model (default: %(default)s)")
    parser.add_argument("--rss-per-analyst-mb", type=float, default=96,
                        help="RSS growth of the server over one analyst alone allowed per analyst "
                             "(default: %(default)s)")
    parser.add_argument("--rss-drift-mb", type=float, default=64,
                        help="how far the second half's RSS floor may rise over the first half's "
                             "(default: %(default)s)")
    parser.add_argument("--startup-s", type=float, default=600, help="how long the app may take to start")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load_app.json")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Start the app, run the analysts, write the JSON report and print the table."""
    args = parse_args(argv)
    if args.analysts < 1 or args.seconds <= 0:
        print("error: expected --analysts >= 1 and --seconds > 0", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="earthgpt-load-") as tmp:
        work = Path(tmp)
        with served(args.model, args.startup_s, work / "app.log") as (url, pid):
            report = run_load(url, args.analysts, args.seconds, pid, work)
    growth_bound = args.rss_per_analyst_mb * args.analysts
    report |= {"model": args.model, "seconds": args.seconds, "rss_growth_bound_mb": growth_bound,
               "rss_drift_bound_mb": args.rss_drift_mb, "python": sys.version.split()[0],
               "cpus": os.cpu_count()}
    rss = report["rss_mb"]
    bounded = rss["growth"] <= growth_bound and rss["drift"] <= args.rss_drift_mb
    report["ok"] = bounded and not report["errors"] and not report["cross_talk"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(table(report))
    print(f"{'OK' if report['ok'] else 'FAILED'}: report in {args.out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
