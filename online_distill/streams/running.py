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

from online_distill.streams import MessageSource

log = logging.getLogger("online_distill.actors")


class LoopThread:
    """Calls ``step()`` until stopped; on an exception, logs it and exits the process."""

    def __init__(self, name: str, step: Callable[[], object], idle_sleep_s: float = 0.0,
                 after_step: Callable[[], object] | None = None):
        """``after_step`` runs in the loop thread after each step (for work that must not
        race the step, such as asking the stage's Kafka consumer for its lag)."""
        self.name, self.step, self.idle_sleep_s = name, step, idle_sleep_s
        self.after_step = after_step
        self.stop_event = threading.Event()
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.step()
                if self.after_step is not None:
                    self.after_step()
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


class LagProbe:
    """A source's lag per topic, measured at most every ``every_s`` by :meth:`poll`, which
    the loop thread calls (a Kafka consumer is not thread-safe, so the actor's stats and
    metrics read the cached values instead of asking the consumer themselves)."""

    def __init__(self, source: MessageSource, every_s: float = 5.0) -> None:
        self.source, self.every_s = source, every_s
        self.by_topic: dict[str, int] = {}
        self.total = -1
        """Records of the source's partitions not yet committed; -1: not known yet."""
        self.partitions = 0
        """Partitions assigned to the source at the last probe (0: none; a consumer-group
        member that stays at 0 while others hold none either is stuck outside its group)."""
        self._last = -float("inf")

    def poll(self) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        try:
            self.partitions = len(self.source.assignment())
            lag = self.source.lag()
        except Exception:  # noqa: BLE001 - lag is informative only
            self.total = -1
            return
        by_topic: dict[str, int] = {}
        for part, n in lag.items():
            by_topic[part.topic] = by_topic.get(part.topic, 0) + n
        self.by_topic, self.total = by_topic, sum(by_topic.values())


