"""The command line: exit codes and messages a user sees."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from online_distill.cli.main import main


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


def test_versions_promote_and_rollback_work_on_a_store(tmp_path, capsys) -> None:
    from online_distill.weights.store import LocalWeightsStore
    from tests.unit.test_learner import TOKENIZER, tiny_model

    store = LocalWeightsStore(tmp_path / "w")
    for step in (10, 20, 30):
        store.publish(tiny_model(5), TOKENIZER, learner_step=step)
    store.record_verdict(2, {"decision": "refused", "scores": {"head": {"exact_match": 0.25}},
                             "reasons": ["head/exact_match 0.2500 < 0.5000 - 0.01"]})
    where = f"gate.weights_dir={tmp_path / 'w'}"
    assert main(["promote", "1", where]) == 0
    assert main(["promote", "v3", where]) == 0 and store.promoted() == 3
    assert main(["promote", "9", where]) == 2
    assert "version 9 is not in" in capsys.readouterr().err
    assert main(["rollback", where]) == 0 and store.promoted() == 1
    assert "rolled back from v3 to v1" in capsys.readouterr().out
    assert main(["versions", where]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["version", "step", "age", "head"]
    assert lines[1].split()[:2] == ["v1", "10"] and "*" in lines[1].split()
    assert "25.0%" in lines[2] and "refused" in lines[2] and "head/exact_match" in lines[2]
    assert main(["versions", "--json", where]) == 0
    assert [r["promoted"] for r in json.loads(capsys.readouterr().out)] == [True, False, False]


@pytest.mark.parametrize("verb", ["produce", "export"])
def test_no_broker_is_one_sentence_and_exit_1(verb: str, tmp_path, capsys) -> None:
    """A dead address: one line that names it and where `up` prints the right one; no
    traceback (kafka-python's own error is "Unable to bootstrap")."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"text": "12+34="}\n')
    args = [str(prompts)] if verb == "produce" else ["--out", str(tmp_path / "x.jsonl")]
    rc = main([verb, *args, "kafka.bootstrap_servers=127.0.0.1:1",
               "kafka.request_timeout_ms=1000"])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert err.startswith("online-distill: no Kafka broker answered at 127.0.0.1:1"), err
    assert "online-distill up: broker" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_stop_request_is_a_flag_the_status_loop_sees_within_a_poll() -> None:
    import os
    import signal

    from online_distill.cli.up import StopRequest

    stop = StopRequest()
    assert stop.wait(0.05) is False
    old = signal.signal(signal.SIGUSR2, stop.handler)
    try:
        os.kill(os.getpid(), signal.SIGUSR2)  # handled on this thread before kill returns
        assert stop.requested and stop.wait(30) is True
    finally:
        signal.signal(signal.SIGUSR2, old)
