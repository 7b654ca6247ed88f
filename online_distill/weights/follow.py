"""The one follower of the promoted version: the Serve replicas, the OOD stage's scorer, the
gate's exported facts and the status line all learn "what is served now" through it.

Each caller says what "load a version" means for it (a completion engine, a model to score
energies with, a verdict's scores) and calls :meth:`PromotedFollower.poll` when it likes; the
follower reads the store's PROMOTED pointer and, when it names another version, loads it.

The policy when a version does not load (one policy for every follower):

1. The old value stays: the caller keeps serving or scoring with what it had. A follower that
   never loaded anything keeps its ``initial`` value (None unless given).
2. The failure is counted once (:attr:`PromotedFollower.load_failures`) and logged once at
   WARNING, naming the version, the error and what is still in use; the retries of the same
   version log at DEBUG, so a broken version polled every second does not flood the log.
3. It is retried at every later poll, so a version whose folder was still being copied, or
   was repaired by hand, is picked up without a restart (logged at INFO when it loads).
4. Only :data:`LOAD_ERRORS` count as "the version does not load": what a missing, pruned,
   half-deleted or corrupt version folder raises. Anything else is a bug in the loader and
   propagates (the fatal error kind: the actor dies and Ray restarts it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from safetensors import SafetensorError

from online_distill.weights.protocol import WeightsStore

log = logging.getLogger("online_distill.weights.follow")

T = TypeVar("T")

LOAD_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, RuntimeError, SafetensorError)
"""What a version folder that cannot be loaded raises:

- ``OSError`` (``FileNotFoundError``, the loader's ``ModelLoadError``): a file or the whole
  folder is missing (pruned meanwhile, or a ``.bin``-only folder refused);
- ``ValueError`` (``json.JSONDecodeError`` too): a torn or foreign ``config.json``, manifest
  or verdict;
- ``SafetensorError``: a truncated or corrupt ``model.safetensors``;
- ``RuntimeError``: torch on weights of the wrong shape, a file removed while being read, or
  a device out of memory (worth retrying once memory is freed).
"""


class PromotedFollower(Generic[T]):
    """Holds the value loaded from the promoted version, reloading it when that changes.

    Not thread-safe: one thread polls (a watcher thread, a stage loop). Readers on other
    threads may read :attr:`value` and :attr:`version`; each is replaced in one assignment.
    """

    def __init__(self, store: WeightsStore, load: Callable[[int], T], *,
                 initial: T | None = None, min_interval_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic, name: str = "follower") -> None:
        self.store, self.load, self.name = store, load, name
        self.min_interval_s, self.clock = min_interval_s, clock
        self.version: int | None = None
        """The version :attr:`value` was loaded from (None: nothing loaded yet)."""
        self.value: T | None = initial
        self.promotion: tuple[int | None, float] = (None, 0.0)
        """The promotion last read from the store: (version, unix time it takes effect).
        During a load it is the one being loaded (a Serve replica stages on its moment)."""
        self.load_failures = 0
        """Versions that failed to load, each counted once however often it is retried."""
        self.failing: int | None = None
        """The promoted version that does not load (retried at every poll), or None."""
        self._checked_at: float | None = None

    def poll(self) -> bool:
        """Load the promoted version if it is not the one held; True when a new value was
        loaded. Checks the store at most every ``min_interval_s`` (by ``clock``)."""
        now = self.clock()
        if self._checked_at is not None and now - self._checked_at < self.min_interval_s:
            return False
        self._checked_at = now
        self.promotion = self.store.promotion()
        version = self.promotion[0]
        if version is None or version == self.version:
            self.failing = None  # e.g. rolled back from a broken version: nothing pending
            return False
        try:
            value = self.load(version)
        except LOAD_ERRORS as exc:
            self._failed(version, exc)
            return False
        if self.failing == version:
            log.info("%s: promoted v%d loads now", self.name, version)
        self.failing = None
        self.version, self.value = version, value
        return True

    def _failed(self, version: int, exc: Exception) -> None:
        """Steps 1-3 of the policy: keep the old value, count and warn once, retry later."""
        if self.failing == version:
            log.debug("%s: promoted v%d still does not load (%s: %s)", self.name, version,
                      type(exc).__name__, exc)
            return
        self.failing = version
        self.load_failures += 1
        held = (f"v{self.version}" if self.version is not None
                else "nothing" if self.value is None else "the initial value")
        log.warning("%s: could not load promoted v%d (%s: %s); still using %s, retrying at "
                    "every poll", self.name, version, type(exc).__name__, exc, held)
