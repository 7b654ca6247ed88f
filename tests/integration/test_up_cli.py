"""`online-distill up` as a user runs it: live status, then a clean stop on SIGTERM."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_up_trains_then_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "online-distill"
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [str(exe), "up", "--file", "deploy/demo.yaml", "--duration", "0", f"run_dir={run}",
         f"learner.checkpoint_dir={run}/ckpt", f"gate.weights_dir={run}/w",
         "learner.checkpoint_every_steps=1000", "serve.enabled=false",
         "demo.traffic_rate_per_s=40"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:  # until the learner has taken a few steps
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            seen.append(line)
            if " step " in line and " step 0 " not in line and " step - " not in line:
                break
        else:
            pytest.fail("no training step within 180 s:\n" + "".join(seen[-20:]))
        proc.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        try:
            rc = proc.wait(timeout=150)  # flush, final checkpoint, commit, broker stop
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)  # up dumps every thread's stack: where it hangs
            time.sleep(2)
            while not lines.empty():
                seen.append(lines.get())
            pytest.fail("up did not stop within 150 s of SIGTERM; its last output:\n"
                        + "".join(seen[-200:]))
        print(f"up stopped {time.monotonic() - stopped_at:.1f} s after SIGTERM")
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.5)
    while not lines.empty():
        seen.append(lines.get())
    out = "".join(seen)
    assert rc == 0, out[-3000:]
    assert "stopping: flushing" in out and "== online-distill summary ==" in out
    # The stop wrote a final checkpoint even though checkpoint_every_steps was not reached.
    assert (run / "ckpt" / "LATEST").is_file()
    assert (run / "trained_ids.log").read_text().strip()
