"""What every loop actor shares: a background loop thread, fatal-error exit, model paths.

A loop actor runs its stage in a daemon thread started by ``__init__``, so Ray's restart of
a dead actor (``max_restarts``) re-runs ``__init__`` and the loop resumes by itself. A fatal
error in the loop (a flush that failed, a broker gone for good) ends the actor's process:
Ray restarts it, and the stage re-reads its uncommitted input (nothing is lost).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from online_distill.tasks.models import DEMO_STUDENT_DIR, DEMO_TEACHER_DIR

log = logging.getLogger("online_distill.actors")


def teacher_path(model: str) -> str:
    """The teacher to load: the config's path or hub name, or the shipped demo teacher."""
    return model or str(DEMO_TEACHER_DIR)


def student_path(model: str) -> str:
    """The student's starting point: the config's, or the demo student's initialisation."""
    return model or str(DEMO_STUDENT_DIR)


class LoopThread:
    """Calls ``step()`` until stopped; on an exception, logs it and exits the process."""

    def __init__(self, name: str, step: Callable[[], object], idle_sleep_s: float = 0.0):
        self.name, self.step, self.idle_sleep_s = name, step, idle_sleep_s
        self.stop_event = threading.Event()
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - fatal: let Ray restart the actor
                self.error = f"{type(exc).__name__}: {exc}"
                log.exception("%s: fatal error in the loop; exiting so Ray restarts the actor",
                              self.name)
                os._exit(1)
            if self.idle_sleep_s:
                time.sleep(self.idle_sleep_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the loop to finish its current step and wait for it (bounded)."""
        self.stop_event.set()
        self.thread.join(timeout_s)


def total_lag(source: object) -> int:
    """Records of the source's partitions not yet committed; -1 when the broker won't say."""
    try:
        return sum(source.lag().values())  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - lag is informative only
        return -1


def ensure_dir(path: str) -> Path:
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p
