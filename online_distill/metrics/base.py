"""What every metric component shares: the name prefix, bucket sets, the constructors
that apply them, and the helpers that turn stage stats into metric updates."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()  # no *_created series: they double the series count for nothing

PREFIX = "online_distill_"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0, 120.0)
"""Seconds: from a served token (ms) to a teacher batch or a gate verdict (tens of s)."""
ENERGY_BUCKETS = tuple(float(x) for x in range(-40, 1, 2)) + (10.0,)
"""Prompt energy -logsumexp(logits): about -5 (an untrained model) to -30 (a confident one)
for the demo's and typical LLMs' logit scales."""
SIGNAL_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
"""Per-token KL (nats)."""


def counter(registry: CollectorRegistry, name: str, doc: str,
            labels: Iterable[str] = ()) -> Counter:
    return Counter(PREFIX + name, doc, list(labels), registry=registry)


def gauge(registry: CollectorRegistry, name: str, doc: str,
          labels: Iterable[str] = ()) -> Gauge:
    return Gauge(PREFIX + name, doc, list(labels), registry=registry)


def histogram(registry: CollectorRegistry, name: str, doc: str, buckets: tuple[float, ...],
              labels: Iterable[str] = ()) -> Histogram:
    return Histogram(PREFIX + name, doc, list(labels), registry=registry, buckets=buckets)


class Totals:
    """Turns a stage's cumulative counts into Counter increments (a count never decreases
    within one process: a restarted actor is a new process with a new registry)."""

    def __init__(self) -> None:
        self._last: dict[tuple[int, tuple[str, ...]], float] = {}

    def set(self, counter: Counter, total: float, *labels: str) -> None:
        key = (id(counter), labels)
        delta = total - self._last.get(key, 0.0)
        if delta > 0:
            (counter.labels(*labels) if labels else counter).inc(delta)
            self._last[key] = total


def drain(queue: deque[Any]) -> list[Any]:
    """Every item queued by the loop thread so far (popleft is thread-safe)."""
    out = []
    while queue:
        out.append(queue.popleft())
    return out
