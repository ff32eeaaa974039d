"""Text fuzzing with hypothesis: random text, random bytes and mutated valid inputs through every text
reader a user or a model can feed: the box grammar and every other dialect's parser, the app's
session files, MMRS records, YAML training configs and overrides, ``--bands`` and ``--image-root``.

Each input ends in a result that keeps the reader's promises (boxes on the grid and usable, counts
that add up) or one clean one-line error of the type its callers catch (ValueError and its
subclasses; argparse's usage error), never another exception, never past the per-case time limit.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fuzz.limits import one_line, time_limit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from earthgpt.box_checks import box_problem
from earthgpt.box_dialects import DIALECTS, parse_dialect
from earthgpt.commands import detect as detect_cmd
from earthgpt.commands import eval as eval_cmd
from earthgpt.data.image_resolver import ImageResolver
from earthgpt.data.mmrs_reader import DataError, human_turn_count, read_records, record_turns
from earthgpt.geometry import GRID
from earthgpt.raster import parse_band_numbers
from earthgpt.textbox import ParseResult, format_detections, parse_box, parse_detections, read_box

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NUMBER_TEXT = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.floats().map(repr),
    st.sampled_from(["0", "1000", "999.5", "-0", "1" * 400, "٣٣", "1e3", "inf", "nan", ".5", "1."]),
)
TOKENS = st.sampled_from([
    "[", "]", "[[", "]]", ",", ", ", " ", "\n", "\r\n", "\t", "{", "}", "<", ">", "|", "<box>", "</box>",
    "<quad>", "</quad>", "<ref>", "</ref>", "<p>", "</p>", "<loc_", "```json\n", "```", '"bbox_2d"',
    '"bbox"', '"label"', ":", '"', "ship", "small vehicle", "θ", "\x00", "\u2028", "🚢",
])
GRAMMAR_TEXT = st.lists(st.one_of(TOKENS, NUMBER_TEXT), max_size=80).map("".join)
ANY_TEXT = st.one_of(
    st.text(max_size=400),
    st.binary(max_size=400).map(lambda raw: raw.decode("utf-8", "replace")),
    GRAMMAR_TEXT,
)


def _json(floats: st.SearchStrategy[float]) -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none() | st.booleans() | st.integers() | floats | st.text(max_size=12),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=12,
    )


JSON = _json(st.floats())
"""Any JSON value, ``Infinity`` and ``NaN`` included (Python's json reads and writes them)."""
FINITE_JSON = _json(st.floats(allow_nan=False, allow_infinity=False))


def _clean(call: Callable[[], Any], errors: tuple[type[BaseException], ...] = (ValueError,)) -> Any:
    """``call()`` under the time limit: its result, or the clean one-line error it raised."""
    with time_limit():
        try:
            return call()
        except errors as err:
            assert one_line(str(err)), f"not a one-line message: {err!r}"
            return err


def _check_parsed(result: ParseResult) -> None:
    """Every detection is a usable grid box; every candidate is counted once."""
    assert result.raw_lines >= len(result.detections) + len(result.invalid)
    for det in result.detections:
        assert all(0 <= v <= GRID and math.isfinite(v) for v in det.box.as_list())
        assert box_problem(det.box) is None
    for bad in result.invalid:
        assert bad.reason and "\n" not in bad.text


# --- boxes ---------------------------------------------------------------------------------------


@FUZZ
@given(ANY_TEXT)
def test_the_box_grammar_reads_any_text(text: str) -> None:
    with time_limit():
        result = parse_detections(text)
        first = read_box(text)
        box = parse_box(text)
    _check_parsed(result)
    assert result.raw_lines == result.skipped + len(result.detections) + len(result.invalid)
    assert (box is None) or (box == first and box_problem(box) is None)
    named = [det for det in result.detections if det.label]
    again = parse_detections(format_detections(named))  # the exact inverse of writing
    assert again.detections == named and again.skipped == 0 and not again.invalid


SIZES = st.one_of(st.none(), st.integers(-5, 10**6), st.floats())


@FUZZ
@given(st.sampled_from(sorted(DIALECTS)), ANY_TEXT, SIZES, SIZES)
def test_every_dialect_reads_any_text(dialect: str, text: str, width: Any, height: Any) -> None:
    result = _clean(lambda: parse_dialect(text, dialect, width=width, height=height))
    if isinstance(result, ValueError):
        assert dialect == "qwen"  # only the pixel dialect needs (and checks) the image size
    else:
        _check_parsed(result)


@pytest.mark.parametrize(("dialect", "text"), [
    ("geochat", "<p>" * 50_000 + "{<1><2><30><40>}"),
    ("geochat", "<ref>a" * 50_000 + "{<1><2><30><40>}"),
    ("falcon", "<box>" * 50_000),
    ("falcon", "<quad>1 " * 50_000),
    ("internvl", "[1" + ", 1" * 100_000),
    ("earthgpt", "[" * 200_000 + "\n" + "ship [" * 50_000),
    ("qwen", "{" * 100_000),
])
def test_long_answers_of_unclosed_tags_are_read_in_linear_time(dialect: str, text: str) -> None:
    """A lazy ``<p>(.*?)</p>`` rescanned the rest of the text from every unclosed tag: 50,000 of
    them took minutes (the time limit catches that); now well under a second."""
    _check_parsed(_clean(lambda: parse_dialect(text, dialect, width=640, height=480)))


@FUZZ
@given(JSON, st.booleans())
def test_the_qwen_dialect_reads_any_json(value: Any, fenced: bool) -> None:
    text = json.dumps(value)
    with time_limit():
        result = parse_dialect(f"```json\n{text}\n```" if fenced else text, "qwen", width=640, height=480)
    _check_parsed(result)
    assert result.raw_lines == result.skipped + len(result.detections) + len(result.invalid)


# --- the app's session files ------------------------------------------------------------------------


def _session_file() -> dict[str, Any]:
    """A valid session file's JSON with one turn and one detection of each kind."""
    from app.session_io import Found, Session, Turn, session_to_json
    from earthgpt.geometry import HBB, Detection, obb_from_corners

    session = Session(path="scene.tif", name="scene.tif", sensor="optical", bands=(3, 2, 1),
                      window=(0, 0, 64, 64), region=HBB(1, 2, 30, 40), image_size=10, image_sha256="a" * 64,
                      turns=[Turn("vqa", "how many?", "two", (0, 0, 64, 64), HBB(1, 2, 3, 4), 1)],
                      found=[Found(Detection("ship", HBB(1, 2, 30, 40), 0.5), "p", 1),
                             Found(Detection("car", obb_from_corners([(1, 1), (9, 2), (8, 9), (0, 8)])), "p",
                                   source="analyst", status="accepted", window=(0, 0, 64, 64))])
    return session_to_json(session, "nano")


def _mutated(data: Any, draw: st.DrawFn, values: st.SearchStrategy[Any] = JSON, depth: int = 0) -> Any:
    """``data`` with random parts replaced by random ``values``, deleted, or kept (recursively)."""
    choice = draw(st.sampled_from(["keep", "keep", "replace", "descend"]))
    if choice == "replace":
        return draw(values)
    if choice == "descend" and isinstance(data, dict):
        out = {k: _mutated(v, draw, values, depth + 1) for k, v in data.items()}
        return {k: v for k, v in out.items() if draw(st.integers(0, 9)) != 0}
    if choice == "descend" and isinstance(data, list):
        return [_mutated(v, draw, values, depth + 1) for v in data]
    return data


@st.composite
def session_files(draw: st.DrawFn) -> Any:
    return _mutated(_session_file(), draw, FINITE_JSON)


@FUZZ
@given(session_files())
def test_a_session_file_reads_or_says_what_is_malformed(data: Any) -> None:
    """Mutated session files (without ±inf: see the xfail below) give a session or one ValueError."""
    from app.session_io import session_from_json

    _clean(lambda: session_from_json(data))


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    """A folder for files the examples write (hypothesis runs many examples per test call)."""
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


@FUZZ
@given(st.one_of(st.binary(max_size=400), st.text(max_size=400).map(str.encode)))
def test_a_session_file_of_random_bytes_is_refused_in_one_line(folder: Path, raw: bytes) -> None:
    from app.session_io import read_session

    (folder / "session.json").write_bytes(raw)
    _clean(lambda: read_session(folder / "session.json"))


@pytest.mark.parametrize("text", [
    '{"format": "earthgpt-session", "version": 1, "image": {"window": [Infinity, 0, 1, 1]}}',
    '{"format": "earthgpt-session", "version": 1, '
    '"turns": [{"task": "t", "prompt": "p", "window": [1e999, 0, 0, 0]}]}',
    "[" * 100_000,
])
def test_session_files_with_infinity_or_deep_nesting_fail_cleanly(folder: Path, text: str) -> None:
    from app.session_io import read_session

    (folder / "bad.json").write_text(text, encoding="utf-8")
    _clean(lambda: read_session(folder / "bad.json"))


# --- MMRS records ------------------------------------------------------------------------------------

MESSAGES = st.lists(st.one_of(
    st.fixed_dictionaries({"from": st.sampled_from(["human", "gpt", "user", "assistant", "x", 3]),
                           "value": st.one_of(st.text(max_size=40), JSON)},
                          optional={"task": JSON, "generated": JSON, "question_type": JSON}),
    JSON,
), max_size=6)
RECORDS = st.fixed_dictionaries({"id": JSON, "conversations": st.one_of(MESSAGES, JSON)},
                                optional={"split": st.sampled_from(["train", "val"]), "image": JSON})


@FUZZ
@given(st.one_of(
    st.binary(max_size=400),
    st.lists(RECORDS, max_size=4).map(lambda rows: "\n".join(json.dumps(r) for r in rows).encode()),
    st.lists(JSON, max_size=4).map(lambda rows: "\n".join(json.dumps(r) for r in rows).encode()),
))
def test_mmrs_records_read_or_fail_with_a_data_error(folder: Path, raw: bytes) -> None:
    (folder / "train.jsonl").write_bytes(raw)
    records = _clean(lambda: read_records(folder / "train.jsonl", split=None), (DataError,))
    for index, record in enumerate([] if isinstance(records, DataError) else records):
        turns = record_turns(record, index)
        assert len(turns) <= human_turn_count(record)
        assert all(isinstance(t.question, str) and isinstance(t.answer, str) for t in turns)


@FUZZ
@given(RECORDS)
def test_the_turns_of_any_record(record: dict[str, Any]) -> None:
    with time_limit():
        turns = record_turns(record)
    assert [t.turn for t in turns] == sorted({t.turn for t in turns})
    assert len(turns) <= human_turn_count(record)


ANNOTATIONS = {
    "class": "harbour", "captions": ["A harbour."], "dialogue_task": "caption",
    "qa": [{"question": "Is there a ship?", "answer": "yes", "type": "presence"}],
    "objects_hbb": [{"label": "ship", "xyxy_px": [1, 2, 30, 40], "difficult": False}],
    "objects_obb": [{"label": "ship", "corners_px": [1, 2, 30, 2, 30, 40, 1, 40]}],
    "referring": [{"expression": "The ship.", "label": "ship", "xyxy_px": [1, 2, 30, 40]}],
    "dialogue": [{"human": "What is this?", "assistant": "A harbour."}],
}
"""One of each annotation ``earthgpt mmrs build`` writes turns from (``docs/MMRS.md``)."""
WRONG_SHAPES = st.sampled_from([
    [1, 2, 3], [1, 2, 3, 4, 5], "1, 2, 3, 4", [[1], 2, 3, 4], [30, 2, 1, 40], [1, 2, "3", 4], [True, 2, 3, 4],
    [1, 2, 10**400, 4], {"x": 1}, [], [{}], "", ".", "a\nb", "ship [1]", 5, None,
])


@st.composite
def mmrs_sources(draw: st.DrawFn) -> Any:
    """A record whose fields, and each annotation at any depth, are kept, dropped or replaced by
    any JSON value or a wrong shape."""
    values = st.one_of(JSON, WRONG_SHAPES)
    record = {"id": "set/1", "image": "a.png", "width": 64, "height": 48}
    record = {k: draw(values) if draw(st.integers(0, 9)) == 0 else v for k, v in record.items()}
    annotations = {k: _mutated(v, draw, values) for k, v in ANNOTATIONS.items() if draw(st.integers(0, 3))}
    return {**record, "annotations": draw(values) if draw(st.integers(0, 19)) == 0 else annotations}


@FUZZ
@given(mmrs_sources())
def test_mmrs_build_takes_a_record_or_skips_it_naming_the_field(folder: Path, record: Any) -> None:
    """What ``earthgpt mmrs build --source mmrs=FILE`` does before writing files: each record gives
    turns or a counted skip whose example names its line and field."""
    from earthgpt.data.builder import SourceSpec, collect, make_records
    from earthgpt.data.records import SkipLog

    (folder / "records.jsonl").write_text(json.dumps(record))
    log = SkipLog()
    source = SourceSpec("mmrs", folder / "records.jsonl").to_source()
    written = _clean(lambda: make_records(collect([source], log, progress=False), log))
    if isinstance(written, ValueError):  # not a JSON object: the one reader's DataError
        assert not isinstance(record, dict)
        return
    assert len(written) + log.total_skipped == 1
    for row in log.as_rows("skipped"):  # a record that does not fit, or one with nothing to say
        example = row["examples"][0]
        assert one_line(example)
        assert row["reason"] == "no labels to make a turn from" or example.startswith("records.jsonl:1")
    for turns in (record_turns(row) for row in written):
        assert turns and all(t.question.strip() and isinstance(t.answer, str) for t in turns)


# --- training configs ---------------------------------------------------------------------------------

CONFIG = {"stage": 1, "model": {"preset": "tiny", "config": {"image_token_id": 259}},
          "data": {"sources": ["mmrs=data/train.jsonl"], "image_roots": {"aid": "data/aid"},
                   "tasks": ["caption"]},
          "optim": {"lr": 1e-4, "betas": [0.9, 0.99], "max_steps": 10}, "run": {"output_dir": "runs/a"}}


YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**400), 10**400) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.one_of(st.text(max_size=8), st.integers(), st.none()), inner, max_size=4),
    max_leaves=12,
)
"""What YAML can hold beyond JSON: keys that are numbers or null, integers too large for a float."""


@st.composite
def config_texts(draw: st.DrawFn) -> str:
    return yaml.safe_dump(_mutated(CONFIG, draw, YAML_VALUES), allow_unicode=True, sort_keys=False)


@FUZZ
@given(st.one_of(config_texts(), st.text(max_size=300), st.binary(max_size=300).map(
    lambda raw: raw.decode("latin-1"))), st.lists(st.text(max_size=30), max_size=3))
def test_a_training_config_loads_or_fails_in_one_line(folder: Path, text: str, overrides: list[str]) -> None:
    from train.config import TrainConfig, load_config

    (folder / "run.yaml").write_text(text, encoding="utf-8")
    config = _clean(lambda: load_config(folder / "run.yaml", overrides))
    assert isinstance(config, TrainConfig | ValueError)


@FUZZ
@given(st.binary(max_size=300))
def test_a_training_config_of_random_bytes_fails_in_one_line(folder: Path, raw: bytes) -> None:
    from train.config import load_config

    (folder / "run.yaml").write_bytes(raw)
    _clean(lambda: load_config(folder / "run.yaml"))


# --- command-line values ---------------------------------------------------------------------------------


@FUZZ
@given(st.one_of(ANY_TEXT, st.lists(NUMBER_TEXT, max_size=5).map(",".join)))
def test_band_numbers(text: str) -> None:
    bands = _clean(lambda: parse_band_numbers(text))
    assert bands is None or isinstance(bands, ValueError) or (
        len(bands) in (1, 3) and all(isinstance(b, int) for b in bands))
    parser = argparse.ArgumentParser(exit_on_error=False)
    detect_cmd.add_arguments(parser)
    parsed = _clean(lambda: parser.parse_args(["scene.tif", "--out", "o.geojson", f"--bands={text}"]),
                    (argparse.ArgumentError,))
    if not isinstance(parsed, argparse.ArgumentError):
        assert parsed.bands == bands


PRINTABLE = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=20)
"""Folder names without line breaks: the resolver's error lists the paths it tried as they are."""


@FUZZ
@given(ANY_TEXT, PRINTABLE)
def test_image_roots(text: str, root: str) -> None:
    parser = argparse.ArgumentParser(exit_on_error=False)
    eval_cmd.add_arguments(parser)
    argv = ["--data", "d.jsonl", "--model", "tiny", "--out", "r.json", f"--image-root={text}"]
    parsed = _clean(lambda: parser.parse_args(argv), (argparse.ArgumentError,))
    if isinstance(parsed, argparse.ArgumentError):
        return
    resolver = ImageResolver(["."], dict(parsed.image_root))
    record = {"id": "r", "image": "no/such/image.png", "image_root": root}
    found = _clean(lambda: resolver(record), (FileNotFoundError, DataError))
    assert isinstance(found, FileNotFoundError | DataError)
