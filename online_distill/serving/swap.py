"""Hot swap: a replica loads a newly promoted version beside the old one, then switches.

The store's PROMOTED pointer names a version and the moment it takes effect
(``serve.swap_delay_s`` after the promotion). :meth:`ModelSlot.refresh` (the watcher thread)
sees a new version and loads it completely (safetensors only) while the current engine
keeps serving; it is *staged*. :meth:`ModelSlot.current` (the request path) switches the
reference to the staged engine once its moment has come, in one assignment. All replicas
switch at that same moment, so a client routed between replicas never sees its version go
backwards. A request that arrives after the moment on a replica that has not finished
loading waits for the load (bounded by ``wait_s``) rather than answer with the old version.
A request keeps the engine it took until it finishes: no request fails during a swap.
Following the pointer, and a version that does not load (the old engine keeps serving; counted
and logged once; retried), is :class:`online_distill.weights.follow.PromotedFollower`'s job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from online_distill.serving.engine import CompletionEngine
from online_distill.weights import PromotedFollower, WeightsStore

log = logging.getLogger("online_distill.serving")


@dataclass
class SwapStats:
    swaps: int = 0
    failed_loads: int = 0
    """Promoted versions that did not load (each once, however often retried)."""
    last_load_seconds: float = 0.0
    last_swap_at: float = 0.0
    """Unix time of the last switch."""
    last_swap_lateness_s: float = 0.0
    """How long after its effective moment the last switch happened."""
    load_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=256))
    """Load time of each recent staged version (drained by the metrics exporter)."""


@dataclass(frozen=True)
class _Staged:
    engine: CompletionEngine
    effective_at: float


class ModelSlot:
    """The engine a replica serves from, swapped in place on promotion."""

    def __init__(self, store: WeightsStore, served_model_name: str, device: str = "cpu",
                 wait_s: float = 10.0, clock: Callable[[], float] = time.time) -> None:
        self.store, self.served_model_name, self.device = store, served_model_name, device
        self.wait_s, self.clock = wait_s, clock
        self.engine: CompletionEngine | None = None
        self.stats = SwapStats()
        # Its version is the one staged, or else the one serving: a promotion is loaded once.
        self.follower = PromotedFollower(store, self._load, name="serve replica")
        self._staged: _Staged | None = None
        self._target: tuple[int, float] | None = None  # promoted and not yet staged
        self._loaded = threading.Condition()

    @property
    def version(self) -> int | None:
        engine = self.engine
        return engine.version if engine is not None else None

    def refresh(self) -> bool:
        """Watcher side: stage the promoted version if it is new; True when one was staged.

        Which version, and what happens when it does not load (the old engine keeps
        serving, counted and logged once, retried at the next poll), is the follower's.
        """
        staged = self.follower.poll()
        self.stats.failed_loads = self.follower.load_failures
        if not staged:
            return False
        with self._loaded:
            self._staged = self.follower.value
            self._target = None
            self._loaded.notify_all()
        if self.engine is None:
            self.current()  # the first version serves at once: anything beats nothing
        return True

    def _load(self, version: int) -> _Staged:
        """Load ``version`` beside the serving engine. Requests past its moment wait for
        the load (``_target``) until it is staged, or until it fails."""
        effective_at = self.follower.promotion[1]
        with self._loaded:
            self._target = (version, effective_at)
        started = time.monotonic()
        try:
            model, tokenizer = self.store.load(version, self.device)
            engine = CompletionEngine(model, tokenizer, version, self.served_model_name)
        except BaseException:
            with self._loaded:  # nothing to wait for: the old engine answers
                self._target = None
                self._loaded.notify_all()
            raise
        self.stats.last_load_seconds = time.monotonic() - started
        self.stats.load_seconds.append(self.stats.last_load_seconds)
        return _Staged(engine, effective_at)

    def current(self) -> CompletionEngine | None:
        """Request side: the engine to answer with now (switching when its moment came)."""
        now = self.clock()
        target = self._target
        if target is not None and now >= target[1] and self.engine is not None:
            with self._loaded:  # promoted, due, still loading: wait rather than go back
                self._loaded.wait_for(lambda: self._target is None, timeout=self.wait_s)
        staged = self._staged
        if staged is not None and (self.engine is None or self.clock() >= staged.effective_at):
            with self._loaded:
                if self._staged is staged:
                    old = self.version
                    self.engine, self._staged = staged.engine, None
                    self.stats.swaps += 1
                    self.stats.last_swap_at = self.clock()
                    self.stats.last_swap_lateness_s = max(
                        0.0, self.stats.last_swap_at - staged.effective_at)
                    log.info("swapped v%s -> v%d", old, staged.engine.version)
        return self.engine


class Watcher:
    """Calls ``refresh`` every ``interval_s`` in a daemon thread until stopped."""

    def __init__(self, refresh: Callable[[], object], interval_s: float) -> None:
        self.refresh, self.interval_s = refresh, interval_s
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="promotion-watcher", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - a bad poll must not end the watcher
                log.exception("promotion watcher: refresh failed; retrying")

    def stop(self) -> None:
        self._stop.set()
