"""Every Prometheus metric of online-distill, defined in one place.

Conventions (Prometheus's): the ``online_distill_`` prefix, base units in the name
(``_seconds``, ``_bytes``, ``_ratio``), ``_total`` on counters, histograms for latencies and
sizes, and labels only from small fixed sets: ``stage`` (producer, teacher, learner, gate,
ood), ``topic`` (the loop's five topics), ``source`` (traffic, feedback, student), ``kind``
(a loss kind), ``reason`` (a dead-letter, critic, drop or refusal reason), ``signal`` (a
drift signal), ``probe``/``metric`` (the gate's probes), ``code`` (an HTTP status).

Each process of the loop (a teacher, the learner, the gate, the OOD actor, a Serve replica,
the ``up`` driver) owns a :class:`prometheus_client.CollectorRegistry` holding only its
component's metrics. The stages stay free of Prometheus: they keep plain counters and
observation queues in their stats objects, and the component classes below turn those into
metrics in :meth:`update`, called just before each export. The exports of every process are
merged into one ``/metrics`` by :class:`online_distill.metrics.hub.MetricsHub`, which adds a
``process`` label (``teacher-0``, ``learner``, ``serve-<replica>``, ...).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from .base import (
    ENERGY_BUCKETS,
    LATENCY_BUCKETS,
    PREFIX,
    SIGNAL_BUCKETS,
    Totals,
    drain,
)
from .loop import DriftMetrics, LearnerMetrics, OODMetrics, StageMetrics, TeacherMetrics
from .serving import GateMetrics, HubMetrics, ServeMetrics

__all__ = [
    "COMPONENTS", "ENERGY_BUCKETS", "LATENCY_BUCKETS", "PREFIX", "SIGNAL_BUCKETS",
    "DriftMetrics", "GateMetrics", "HubMetrics", "LearnerMetrics", "OODMetrics",
    "ServeMetrics", "StageMetrics", "TeacherMetrics", "Totals", "drain", "metric_names",
]

COMPONENTS: tuple[type, ...] = (TeacherMetrics, LearnerMetrics, DriftMetrics, OODMetrics,
                                GateMetrics, ServeMetrics, HubMetrics)


def metric_names() -> set[str]:
    """Every metric family name the code exports (as a scrape shows it: counters with
    ``_total``; a histogram by its base name)."""
    registry = CollectorRegistry()
    StageMetrics(registry, "any")
    for component in COMPONENTS:
        component(registry)
    names = set()
    for family in registry.collect():
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names
