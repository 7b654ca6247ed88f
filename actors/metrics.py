"""The metrics hub actor and the per-process pusher (see :mod:`online_distill.metrics.hub`).

The hub is a named actor (``metrics-hub``) serving the merged ``/metrics`` on
``metrics.host:metrics.port``. Every loop process runs a :class:`MetricsPusher` thread that
refreshes its component metrics from the stage's stats and pushes its registry's text to
the hub every ``metrics.push_interval_s`` (fire and forget: a slow or restarting hub never
slows a stage).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import ray
from prometheus_client import CollectorRegistry, generate_latest, start_http_server

from online_distill.config import Config, MetricsConfig
from online_distill.metrics.hub import MetricsHub

log = logging.getLogger("online_distill.metrics")

HUB_NAME = "metrics-hub"


@ray.remote(num_cpus=0)
class MetricsHubActor:
    def __init__(self, cfg: dict[str, Any]) -> None:
        m = MetricsConfig(**cfg)
        self.hub = MetricsHub(stale_after_s=max(15.0, 5 * m.push_interval_s))
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.hub)  # type: ignore[arg-type]
        self.server, self.thread = start_http_server(m.port, addr=m.host, registry=registry)
        self.address = f"{m.host}:{self.server.server_address[1]}"

    def push(self, process: str, text: str) -> None:
        self.hub.push(process, text)

    def endpoint(self) -> str:
        """host:port of /metrics (the real port when metrics.port is 0)."""
        return self.address

    def processes(self) -> list[str]:
        return self.hub.processes()


def start_hub(cfg: Config) -> Any:
    """The hub actor, started once per loop (restarted by Ray if it dies)."""
    from dataclasses import asdict

    return MetricsHubActor.options(name=HUB_NAME, max_restarts=-1, lifetime=None).remote(
        asdict(cfg.metrics))


class MetricsPusher:
    """Every ``interval_s``: ``update()`` the registry's metrics, push its text to the hub."""

    def __init__(self, process: str, registry: CollectorRegistry, update: Callable[[], None],
                 interval_s: float, namespace: str) -> None:
        self.process, self.registry, self.update = process, registry, update
        self.interval_s, self.namespace = interval_s, namespace
        self._hub: Any = None
        self._stop = threading.Event()
        self._warned = False
        self.thread = threading.Thread(target=self._run, name=f"metrics-{process}", daemon=True)
        self.thread.start()

    def push_once(self) -> None:
        self.update()
        if self._hub is None:
            self._hub = ray.get_actor(HUB_NAME, namespace=self.namespace)
        self._hub.push.remote(self.process, generate_latest(self.registry).decode())

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.push_once()
            except Exception as exc:  # noqa: BLE001 - metrics never stop the loop
                self._hub = None  # look the hub up again (it may be restarting)
                if not self._warned:
                    log.warning("%s: cannot push metrics (%s: %s); retrying every %.1fs",
                                self.process, type(exc).__name__, exc, self.interval_s)
                    self._warned = True

    def stop(self) -> None:
        """Push a last time (the final counts), then stop."""
        self._stop.set()
        try:
            self.push_once()
        except Exception:  # noqa: BLE001 - the hub may be gone already at shutdown
            pass


def start_pusher(cfg: Config, process: str, registry: CollectorRegistry,
                 update: Callable[[], None]) -> MetricsPusher | None:
    """A pusher for this process, or None when metrics are disabled."""
    if not cfg.metrics.enabled:
        return None
    return MetricsPusher(process, registry, update, cfg.metrics.push_interval_s,
                         cfg.ray.namespace)
