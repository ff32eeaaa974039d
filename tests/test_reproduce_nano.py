"""scripts/reproduce_nano.sh: its arguments, and the v3 delta that `--from-v3` takes from git history."""

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "reproduce_nano.sh"


def _script_value(name: str) -> str:
    match = re.search(rf"^{name}=(\S+)$", SCRIPT.read_text(), flags=re.MULTILINE)
    assert match, f"{name} not set in {SCRIPT.name}"
    return match.group(1)


def _git_show(commit: str, path: str) -> bytes:
    result = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"commit {commit} is not in this clone's history (a shallow clone?): {result.stderr!r}")
    return result.stdout


def test_an_unknown_argument_stops_before_any_work(tmp_path):
    result = subprocess.run(["bash", str(SCRIPT), "--from-v4"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2
    assert "usage: bash scripts/reproduce_nano.sh [--from-v3]" in result.stderr


def test_from_v3_without_the_commit_says_why(tmp_path):
    # A repository without v3's commit (as a shallow clone is): the script must stop with the
    # reason, before it builds anything.
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPT, tmp_path / "scripts" / SCRIPT.name)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    result = subprocess.run(
        ["bash", "scripts/reproduce_nano.sh", "--from-v3"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "--from-v3 needs commit" in result.stderr and "shallow clone" in result.stderr
    assert not (tmp_path / "mmrs").exists() and not (tmp_path / "runs").exists()


def test_the_v3_delta_in_history_is_the_one_the_last_phase_starts_from():
    commit, digest = _script_value("V3_COMMIT"), _script_value("V3_SHA256")
    weights = _git_show(commit, "assets/earthgpt-nano/model.safetensors")
    assert hashlib.sha256(weights).hexdigest() == digest
    v3 = json.loads(_git_show(commit, "assets/earthgpt-nano/config.json"))
    assert v3["weights_sha256"] == digest
    # Loading refuses a delta whose base differs from the converted base: v3's must be today's.
    shipped = json.loads((ROOT / "assets" / "earthgpt-nano" / "config.json").read_text())
    assert v3["base"] == shipped["base"]
    # Every run of the last phase starts from where --from-v3 puts the delta, and the export that
    # replaces the shipped weights reads the average of those runs' results.
    text = SCRIPT.read_text()
    last_phase = text[text.rindex("\nfi\n"):]
    runs = re.findall(r"-m train train/configs/(\S+\.yaml)(.*)", last_phase)
    assert len(runs) == 2
    finals = []
    for name, overrides in runs:
        config = yaml.safe_load((ROOT / "train" / "configs" / name).read_text())
        assert config["model"]["init_from"] == "runs/nano_v3_export"
        out = re.search(r"run\.output_dir=(\S+)", overrides)
        finals.append(f"{out.group(1) if out else config['run']['output_dir']}/final")
    assert "runs/nano_v3_export/model.safetensors" in text
    soup = re.search(r"-m train\.soup (\S+) (\S+)=0\.5 (\S+)=0\.5\n", last_phase)
    assert soup and [soup.group(2), soup.group(3)] == finals
    assert f"export_weights {soup.group(1)} assets/earthgpt-nano" in last_phase
