"""Metrics of what decides and serves versions: the gate and weights store, a Serve
replica, and the metrics hub itself."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from .base import LATENCY_BUCKETS, Totals, counter, drain, gauge, histogram


class GateMetrics:
    """The evaluation gate and the weights store: verdicts, scores, freshness."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.totals = Totals()
        self.judged = counter(registry, "versions_judged_total",
                              "Versions the gate decided on, by decision (promoted, refused, "
                              "superseded: skipped for a newer one).", ["decision"])
        for decision in ("promoted", "refused", "superseded"):
            self.judged.labels(decision)  # present at 0 before the first verdict
        self.refused = counter(registry, "versions_refused_total",
                               "Versions the gate refused, by reason (probe/metric that "
                               "regressed, or weights for non-finite weights).", ["reason"])
        self.judge_seconds = histogram(registry, "gate_duration_seconds",
                                       "Wall time of one verdict.", LATENCY_BUCKETS)
        self.candidate = gauge(registry, "candidate_score",
                               "The last judged candidate's score, by probe and metric.",
                               ["probe", "metric"])
        self.served = gauge(registry, "served_score",
                            "The promoted version's score, by probe and metric.",
                            ["probe", "metric"])
        self.promoted_version = gauge(registry, "promoted_version",
                                      "The version the weights store says to serve.")
        self.latest_version = gauge(registry, "latest_version", "The newest published version.")
        self.freshness = gauge(registry, "freshness_seconds",
                               "Seconds since the newest prompt the promoted version trained "
                               "on entered the stream.")
        self.holdout = gauge(registry, "gate_holdout_examples",
                             "Held-out live examples in the gate's rolling probe.")

    def update(self, counts: Mapping[str, int], verdicts: Iterable[Mapping[str, Any]],
               promoted: int | None, latest: int | None, newest_prompt_at: float | None,
               served_scores: Mapping[str, Mapping[str, float]], holdout: int,
               now: float | None = None) -> None:
        for decision in ("promoted", "refused", "superseded"):
            self.totals.set(self.judged, counts.get(decision, 0), decision)
        for key, n in counts.items():
            if key.startswith("refused/"):
                self.totals.set(self.refused, n, key.split("/", 1)[1])
        for v in verdicts:
            if v["decision"] != "superseded":
                self.judge_seconds.observe(v["seconds"])
            for probe, metrics in v.get("scores", {}).items():
                for metric, value in metrics.items():
                    self.candidate.labels(probe, metric).set(value)
        for probe, metrics in served_scores.items():
            for metric, value in metrics.items():
                self.served.labels(probe, metric).set(value)
        if promoted is not None:
            self.promoted_version.set(promoted)
        if latest is not None:
            self.latest_version.set(latest)
        if newest_prompt_at is not None:
            self.freshness.set(max(0.0, (now or time.time()) - newest_prompt_at))
        self.holdout.set(holdout)


class ServeMetrics:
    """One Serve replica: requests by status code, latency, tokens, swaps."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = counter(registry, "serve_requests_total",
                                "HTTP requests answered by the replica, by status code.",
                                ["code"])
        self.latency = histogram(registry, "serve_request_duration_seconds",
                                 "Time to answer one HTTP request, in the replica.",
                                 LATENCY_BUCKETS)
        self.tokens = counter(registry, "serve_generated_tokens_total",
                              "Completion tokens generated.")
        self.version = gauge(registry, "served_version", "The version this replica serves.")
        self.swaps = counter(registry, "serve_swaps_total", "Hot swaps to a new version.")
        self.swap_seconds = histogram(registry, "swap_duration_seconds",
                                      "Time to load a promoted version beside the served "
                                      "one (the switch itself is a pointer swap at the "
                                      "promotion's effective time).", LATENCY_BUCKETS)
        self.failed_loads = counter(registry, "serve_failed_loads_total",
                                    "Promoted versions the replica failed to load.")
        self.captured = counter(registry, "serve_captured_prompts_total",
                                "Answered prompts produced back to the prompts topic "
                                "(serve.capture, origin=served).")
        self.capture_dropped = counter(registry, "serve_capture_dropped_total",
                                       "Answered prompts sampled for capture but not produced, "
                                       "by reason (queue_full, broker, stopped).", ["reason"])

        self.totals = Totals()

    def observe_request(self, code: int, seconds: float) -> None:
        self.requests.labels(str(code)).inc()
        self.latency.observe(seconds)

    def update(self, version: int | None, stats: Any, capture: Any = None) -> None:
        """From the replica's model slot (:class:`online_distill.serving.swap.SwapStats`)
        and its capture of served prompts (:class:`online_distill.serving.capture.
        PromptCapture`, None when off)."""
        if capture is not None:
            self.totals.set(self.captured, capture.captured)
            for reason, n in capture.dropped.items():
                self.totals.set(self.capture_dropped, n, reason)
        if version is not None:
            self.version.set(version)
        self.totals.set(self.swaps, stats.swaps)
        self.totals.set(self.failed_loads, stats.failed_loads)
        for seconds in drain(stats.load_seconds):
            self.swap_seconds.observe(seconds)


class HubMetrics:
    """The metrics hub itself: which processes pushed recently."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.up = gauge(registry, "process_up",
                        "1 for each loop process whose metrics arrived recently.", ["process"])
