"""The teacher backend fails for a while (errors, hangs, garbage), and the checkpoint disk
fills up. Goal: 0 prompts lost, nothing good dead-lettered, the loop recovers by itself."""

from __future__ import annotations

import errno
import os
import subprocess
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from harness import Fault, run_scenario  # noqa: E402
from teacher_server import NAME, FaultyTeacherServer  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def test_teacher_errors_hangs_and_garbage_lose_nothing(tmp_path: Path) -> None:
    server = FaultyTeacherServer(hang_s=4.0)
    try:
        faults = [Fault(at, f"teacher {mode} for 6s",
                        lambda sup, m=mode: server.set_for(m, 6.0), ("teacher-0", "labeled"))
                  for at, mode in ((8, "error"), (22, "hang"), (36, "garbage"))]
        out = run_scenario("teacher-backend-faults", tmp_path, faults, extra=[
            "teacher.backend=openai", f"teacher.model={NAME}", f"teacher.base_url={server.url}",
            "teacher.timeout_s=2", "teacher.max_retries=1", "teacher.retry_backoff_s=0.2",
            "teacher.batch_size=16", "teacher.max_concurrency=2"], prompts=2000, rate=40)
    finally:
        server.close()
    assert server.counts.get("error", 0) > 0 and server.counts.get("hang", 0) > 0
    assert server.counts.get("garbage", 0) > 0
    assert out.lost == 0 and out.trained == out.prompts_in == 2000, out
    assert out.dead_letters == 0, out.extra  # an outage is not the prompts' fault
    assert out.duplicates == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_checkpoint_disk_loses_nothing(tmp_path: Path) -> None:
    disk = tmp_path / "run" / "ckpt"
    disk.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)], check=True)
    filler = disk / "filler"

    def fill(sup) -> None:  # leave almost no room: the next checkpoint cannot be written
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        try:
            with open(filler, "wb") as f:
                f.write(b"\0" * max(0, free - 64 * 1024))
        except OSError as exc:  # a checkpoint took space since statvfs: full all the same
            if exc.errno != errno.ENOSPC:
                raise
        # Free the space after 15 s and once a checkpoint failed: the fault is met however
        # slowly the learner reaches its next checkpoint (bounded: 180 s).
        threading.Thread(target=free_after_a_failure, args=(sup, filler), daemon=True).start()

    try:
        out = run_scenario("checkpoint-disk-full", tmp_path, [
            Fault(12, "checkpoint disk full for 15s and a failed checkpoint", fill,
                  ("learner", "checkpoints"))],
            prompts=2000, rate=40, recover_s=240,
            check=lambda sup, o: o.extra.update(asdict(sup.snapshot().learner)))
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    assert out.extra["checkpoint_failures"] > 0  # the disk was full for a while
    assert out.lost == 0 and out.trained == out.prompts_in == 2000, out
    assert out.recovery_s[0] >= 15  # checkpoints resumed once the space came back


def free_after_a_failure(sup, filler: Path, at_least_s: float = 15.0,
                         at_most_s: float = 180.0) -> None:
    start = time.monotonic()
    while time.monotonic() - start < at_most_s:
        time.sleep(1.0)
        if time.monotonic() - start < at_least_s:
            continue
        learner = sup.snapshot().learner
        if getattr(learner, "checkpoint_failures", 0) > 0:
            break
    filler.unlink()
