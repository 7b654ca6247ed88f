"""One ``/metrics`` for a loop that runs in many processes.

Every process of the loop (teacher actors, the learner, the gate, the OOD actor, each Serve
replica, the ``up`` driver) renders its own registry in the Prometheus text format and
pushes it here every ``metrics.push_interval_s``. :class:`MetricsHub` keeps the latest text
of each process and, when scraped, merges them: each family appears once, each sample gains
a ``process`` label naming where it came from. A process that stopped pushing (a dead actor,
a removed replica) drops out after ``stale_after_s``; its restart pushes fresh counters,
which Prometheus's ``rate`` treats as a counter reset.

Why a hub and not one exporter per process: Prometheus then scrapes one fixed endpoint
(``metrics.host:metrics.port``), the same on one machine and on a Ray cluster (KubeRay: one
scrape annotation on the head pod), with no port per actor to discover. Ray's own metrics
export would add a ``ray_`` prefix and Ray's high-cardinality worker labels.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from online_distill.metrics import HubMetrics

PROCESS_LABEL = "process"


@dataclass
class _Push:
    text: str
    at: float


class MetricsHub:
    """Latest exposition per process, merged on demand (thread-safe)."""

    def __init__(self, stale_after_s: float = 15.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stale_after_s, self.clock = stale_after_s, clock
        self._pushes: dict[str, _Push] = {}
        self._lock = threading.Lock()
        self.own = CollectorRegistry()
        self.hub_metrics = HubMetrics(self.own)

    def push(self, process: str, text: str) -> None:
        """Replace ``process``'s exposition (Prometheus text format)."""
        with self._lock:
            self._pushes[process] = _Push(text, self.clock())

    def processes(self) -> list[str]:
        """Processes whose last push is fresh, sorted."""
        now = self.clock()
        with self._lock:
            return sorted(p for p, push in self._pushes.items()
                          if now - push.at <= self.stale_after_s)

    def collect(self) -> Iterator[Metric]:
        """Every fresh process's families merged, with a ``process`` label on each sample
        (the prometheus_client collector protocol)."""
        now = self.clock()
        with self._lock:
            for p in [p for p, push in self._pushes.items() if now - push.at > self.stale_after_s]:
                del self._pushes[p]  # forget it; a later push brings it back
                self.hub_metrics.up.remove(p)
            pushes = dict(self._pushes)
        merged: dict[str, Metric] = {}
        for process in sorted(pushes):
            self.hub_metrics.up.labels(process).set(1)
            for family in text_string_to_metric_families(pushes[process].text):
                out = merged.get(family.name)
                if out is None:
                    out = merged[family.name] = Metric(family.name, family.documentation,
                                                       family.type, family.unit)
                elif out.type != family.type:
                    continue  # two processes disagree on a type: keep the first
                out.samples.extend(_labelled(s, process) for s in family.samples)
        yield from self.own.collect()
        yield from merged.values()


def _labelled(sample: Sample, process: str) -> Sample:
    return sample._replace(labels={**sample.labels, PROCESS_LABEL: process})
