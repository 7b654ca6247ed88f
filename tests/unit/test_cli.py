"""The command line: exit codes and messages a user sees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from online_distill.cli import main


def test_config_prints_every_section_with_help(capsys) -> None:
    assert main(["config", "learner.lr=0.001"]) == 0
    out = capsys.readouterr().out
    for section in ("[kafka]", "[teacher]", "[learner]", "[ood]", "[critics]", "[serve]",
                    "[gate]", "[metrics]", "[demo]"):
        assert section in out
    assert "lr = 0.001" in out and "*" in out


def test_bad_value_exits_2_naming_the_field(capsys) -> None:
    assert main(["config", "learner.lr=-1"]) == 2
    err = capsys.readouterr().err
    assert "learner.lr" in err and "-1" in err and "must be > 0" in err


def test_unknown_field_suggests_the_right_one(capsys) -> None:
    assert main(["config", "learner.lrr=1"]) == 2
    assert "did you mean 'learner.lr'" in capsys.readouterr().err


def test_config_file_is_read(tmp_path, capsys) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("teacher:\n  n_pseudo_targets: 7\n")
    assert main(["config", "--file", str(f)]) == 0
    assert "n_pseudo_targets = 7" in capsys.readouterr().out


def test_missing_subcommand_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).parent / "online-distill"
    assert exe.exists(), "pip install -e . should install the online-distill script"
    proc = subprocess.run([str(exe), "config", "learner.lr=-1"], capture_output=True, text=True)
    assert proc.returncode == 2 and "learner.lr" in proc.stderr
