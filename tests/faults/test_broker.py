"""SIGKILL the broker mid-stream and start it again on the same port and store.

The broker is Tansu on S3 storage (moto's S3 server, tests/integration/s3_store.py): what it
acknowledged survives the kill (as in tests/integration/test_durable_broker.py). The traffic
producer holds while the broker is down and goes on with a new producer after; the daemon's
own clients must find their way back by themselves. Goal: 0 acknowledged prompts lost, and
the loop labels and trains again after every restart.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from harness import Fault, run_scenario, seeded_times  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from s3_store import running_s3_store  # noqa: E402

from online_distill.streams import EmbeddedBroker  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.faults]
DOWN_S = 3.0  # how long the broker stays dead before it is started again


def restart(broker: EmbeddedBroker):
    def action(sup) -> None:
        traffic = sup.fault_traffic
        traffic.hold()
        pid = broker.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        time.sleep(DOWN_S)
        broker.restart()
        traffic.go(new_producer=True)
    return action


def test_broker_killed_and_restarted_loses_nothing(tmp_path: Path) -> None:
    with running_s3_store(tmp_path / "s3.log") as s3:
        broker = EmbeddedBroker(storage=s3.storage, log_dir=tmp_path / "tansu", env=s3.env)
        broker.start()
        try:
            steps = ("learner", "step")
            faults = [Fault(t, "broker restart", restart(broker), steps)
                      for t in seeded_times(21, 2, 15, 45)]
            out = run_scenario("broker-restart", tmp_path, faults, broker=broker,
                               prompts=1600, rate=30, recover_s=180, settle_s=300)
        finally:
            broker.stop()
    assert out.lost == 0, out
    assert out.trained == out.prompts_in == 1600, out
    assert len(out.recovery_s) == 2
