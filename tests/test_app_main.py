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
