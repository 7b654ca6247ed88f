"""What the loop shows: the Prometheus /metrics endpoint, and the input-drift monitor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .base import check_range
from .coerce import normalize_fields


@dataclass(frozen=True, kw_only=True)
class MetricsConfig:
    """The Prometheus /metrics endpoint."""

    enabled: bool = True
    """Export Prometheus metrics (online_distill_* names) on /metrics."""

    host: str = "127.0.0.1"
    """Interface the /metrics endpoint binds; 0.0.0.0 lets a remote Prometheus scrape it."""

    port: int = 9100
    """Port of the /metrics endpoint; 0 picks a free port (logged at start)."""

    push_interval_s: float = 1.0
    """How often each loop process sends its metrics to the /metrics endpoint (the metrics
    hub merges every process's metrics into that one endpoint)."""

    def __post_init__(self) -> None:
        normalize_fields(self)
        check_range(self, "port", ge=0, le=65535, fix="0 picks a free port; default 9100")
        check_range(self, "push_interval_s", gt=0, le=60, fix="a typical value is 1")


@dataclass(frozen=True, kw_only=True)
class DriftConfig:
    """The input-drift monitor: live prompts compared window by window (in the learner)."""

    method: Literal["psi", "ks"] = "psi"
    """Drift statistic between the reference window and the current window of live prompts,
    on each signal (the prompts' energy under the student, their length, their tokens, and
    the student-teacher KL): the population stability index over the reference's decile
    bins, or the Kolmogorov-Smirnov distance (total variation for the token distribution)."""

    threshold: float = 0.2
    """Drift score above which the drift alert metric is raised (0.2 is the usual PSI bar
    for a significant shift)."""

    window: int = 500
    """Live prompts in each of the two adjacent windows the drift statistic compares (the
    current one and the one just before it)."""


    def __post_init__(self) -> None:
        normalize_fields(self)
        check_range(self, "threshold", gt=0, fix="a typical value is 0.2 for psi, 0.1 for ks")
        if self.method == "ks":
            check_range(
                self,
                "threshold",
                gt=0,
                le=1,
                fix="the KS distance lies in [0, 1]; a typical value is 0.1",
            )
        check_range(self, "window", ge=10, fix="a typical value is 500")
