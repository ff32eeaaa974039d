"""``python app.py`` entry point: arguments, light imports, and a clear failure when the model cannot load."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _app_script():
    spec = importlib.util.spec_from_file_location("app_script", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_arguments_and_defaults() -> None:
    script = _app_script()
    args = script.parse_args([])
    assert (args.model, args.host, args.port, args.load_4bit, args.load_8bit) == ("nano", "127.0.0.1", 7860,
                                                                                  False, False)
    args = script.parse_args(["--model", "tiny", "--load-8bit", "--port", "7999"])
    assert args.model == "tiny" and args.load_8bit and args.port == 7999
    with pytest.raises(SystemExit):
        script.parse_args(["--load-4bit", "--load-8bit"])


def test_unloadable_model_exits_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert _app_script().main(["--model", str(ROOT / "no-such-checkpoint")]) == 2
    assert "cannot load model" in capsys.readouterr().err


def test_importing_the_app_is_light() -> None:
    code = ("import sys, app.handlers, app.ui, app.scene, app.maps, app.export; "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


class _FakeDemo:
    def __init__(self, engine: object) -> None:
        self.engine = engine
        self.launched = False

    def queue(self, **_: object) -> None:
        pass

    def launch(self, **_: object) -> None:
        self.launched = True


def _fake_loading(
    monkeypatch: pytest.MonkeyPatch, untrained: bool, error: BaseException | None = None
) -> list[_FakeDemo]:
    import app.ui
    import earthgpt.inference

    def load_model(name: str, **_: object) -> tuple[object, object]:
        if error is not None:
            raise error
        return object(), object()

    demos: list[_FakeDemo] = []
    monkeypatch.setattr(earthgpt.inference, "load_model", load_model)
    monkeypatch.setattr(earthgpt.inference, "is_untrained_start", lambda name: untrained)
    monkeypatch.setattr(app.ui, "build", lambda engine: demos.append(_FakeDemo(engine)) or demos[-1])
    monkeypatch.setattr(app.ui, "theme", lambda: None)
    return demos


def test_untrained_start_warns_in_the_log_and_the_ui(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from app.handlers import engine_banner
    from earthgpt.inference import UNTRAINED_WARNING

    demos = _fake_loading(monkeypatch, untrained=True)
    assert _app_script().main(["--model", "nano"]) == 0
    assert f"WARNING: {UNTRAINED_WARNING}" in capsys.readouterr().err
    engine = demos[0].engine
    assert demos[0].launched and engine.warning == UNTRAINED_WARNING
    assert UNTRAINED_WARNING in engine_banner(engine)
    demos = _fake_loading(monkeypatch, untrained=False)
    assert _app_script().main(["--model", "some-checkpoint"]) == 0
    assert "WARNING" not in capsys.readouterr().err and engine_banner(demos[0].engine) == ""


def test_missing_bitsandbytes_exits_2(monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    _fake_loading(monkeypatch, untrained=False, error=ImportError("bitsandbytes is not installed"))
    assert _app_script().main(["--model", "nano", "--load-4bit"]) == 2
    err = capsys.readouterr().err
    assert "cannot load model 'nano': bitsandbytes is not installed" in err and "Traceback" not in err
