"""The entry point: help everywhere, clear errors before any work."""
import os
import subprocess
import sys

import pytest

from common.config import get_default_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(ROOT, "tools", "main.py")
COMMANDS = ["train", "search", "test", "infer", "convert", "parity", "bench", "info"]


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, MAIN, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_top_level_help_lists_every_command():
    out = cli("--help")
    assert out.returncode == 0
    for command in COMMANDS:
        assert command in out.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help(command):
    out = cli(command, "--help")
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout


def test_missing_config_file_is_named():
    out = cli("info", "configs/does_not_exist.yaml")
    assert out.returncode == 2
    assert "configs/does_not_exist.yaml" in out.stderr and "Traceback" not in out.stderr


def test_bad_override_is_named_before_work():
    out = cli("train", "configs/cream14.yaml", "--backend", "torch", "OPTIM.NAME", "lion")
    assert out.returncode == 2
    assert "OPTIM.NAME" in out.stderr and "lion" in out.stderr and "Traceback" not in out.stderr


def test_family_not_built_yet_says_so(monkeypatch):
    """A registered family whose spec module does not exist yet is named as not built, not a traceback."""
    from common import families
    from tools import commands

    future = families.Family("future_nas", "A family still to come", "common.specs.future_nas")
    monkeypatch.setattr(families, "FAMILIES", {**families.FAMILIES, future.name: future})
    with pytest.raises(families.FamilyNotAvailable, match="'future_nas'.*not built yet"):
        families.spec_module("future_nas")
    cfg = get_default_config()
    cfg.defrost()
    cfg.MODEL.FAMILY = "future_nas"
    with pytest.raises(commands.UserError, match="not built yet"):
        commands.spec_for(cfg)


def test_dataset_with_more_classes_than_the_head_is_named_before_work(tmp_path):
    run_dir = tmp_path / "run"
    out = cli("train", "configs/cream14_digits.yaml", "--backend", "torch", "MODEL.NUM_CLASSES", "5",
              "--output", str(run_dir))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "has 10 classes" in out.stderr and "MODEL.NUM_CLASSES = 5" in out.stderr
    assert not run_dir.exists()
