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
merged into one ``/metrics`` by :class:`online_distill.metrics_hub.MetricsHub`, which adds a
``process`` label (``teacher-0``, ``learner``, ``serve-<replica>``, ...).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping
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


def _counter(registry: CollectorRegistry, name: str, doc: str,
             labels: Iterable[str] = ()) -> Counter:
    return Counter(PREFIX + name, doc, list(labels), registry=registry)


def _gauge(registry: CollectorRegistry, name: str, doc: str,
           labels: Iterable[str] = ()) -> Gauge:
    return Gauge(PREFIX + name, doc, list(labels), registry=registry)


def _histogram(registry: CollectorRegistry, name: str, doc: str, buckets: tuple[float, ...],
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


class StageMetrics:
    """What every stage reads, writes and dead-letters, and how far behind it is."""

    def __init__(self, registry: CollectorRegistry, stage: str) -> None:
        self.stage = stage
        self.totals = Totals()
        self.messages_in = _counter(registry, "messages_in_total",
                                    "Records polled from a topic, by stage and topic.",
                                    ["stage", "topic"])
        self.messages_out = _counter(registry, "messages_out_total",
                                     "Messages produced to a topic, by stage and topic.",
                                     ["stage", "topic"])
        self.dead_letters = _counter(
            registry, "dead_letters_total",
            "Input records dead-lettered, by stage, the topic they came from, and reason.",
            ["stage", "topic", "reason"])
        self.lag = _gauge(registry, "consumer_lag_messages",
                          "Records in the stage's partitions of a topic not yet committed.",
                          ["stage", "topic"])

    def update(self, messages_in: Mapping[str, int], messages_out: Mapping[str, int],
               dead_letters: Mapping[tuple[str, str], int],
               lag: Mapping[str, int] | None) -> None:
        for topic, n in messages_in.items():
            self.totals.set(self.messages_in, n, self.stage, topic)
        for topic, n in messages_out.items():
            self.totals.set(self.messages_out, n, self.stage, topic)
        for (topic, reason), n in dead_letters.items():
            self.totals.set(self.dead_letters, n, self.stage, topic, reason)
        for topic, n in (lag or {}).items():
            self.lag.labels(self.stage, topic).set(n)


class TeacherMetrics:
    """The teacher: labeling latency, tokens, pseudo-targets, retries."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.totals = Totals()
        self.batch_seconds = _histogram(registry, "teacher_batch_duration_seconds",
                                        "Wall time to label one batch of prompts.",
                                        LATENCY_BUCKETS)
        self.queue_seconds = _histogram(
            registry, "teacher_queue_duration_seconds",
            "Time from a prompt entering the stream to the teacher starting on it.",
            LATENCY_BUCKETS)
        self.prompts = _counter(registry, "teacher_prompts_labeled_total",
                                "Prompts labeled, by source (traffic or feedback).", ["source"])
        self.tokens = _counter(registry, "teacher_tokens_total",
                               "Pseudo-target tokens the teacher wrote.")
        self.pseudo_targets = _counter(registry, "teacher_pseudo_targets_total",
                                       "Pseudo-targets the teacher wrote.")
        self.retries = _counter(registry, "teacher_retries_total",
                                "Backend calls retried after an error.")

    def update(self, stats: Any) -> None:
        for seconds in drain(stats.batch_seconds):
            self.batch_seconds.observe(seconds)
        for seconds in drain(stats.queue_seconds):
            self.queue_seconds.observe(seconds)
        for origin, n in stats.by_origin.items():
            self.totals.set(self.prompts, n, origin)
        self.totals.set(self.tokens, stats.labeled_tokens)
        self.totals.set(self.pseudo_targets, stats.pseudo_targets)
        self.totals.set(self.retries, stats.retries)


class LearnerMetrics:
    """The learner: steps, tokens, losses, gradient norm, what it skipped, live signals."""

    SKIP_REASONS = ("duplicate", "held_out", "critic")

    def __init__(self, registry: CollectorRegistry) -> None:
        self.totals = Totals()
        self.steps = _counter(registry, "learner_steps_total", "Optimizer steps taken.")
        self.skipped = _counter(registry, "learner_skipped_steps_total",
                                "Steps skipped because the loss or gradient was not finite.")
        self.tokens = _counter(registry, "learner_tokens_total",
                               "Continuation tokens trained on.")
        self.examples = _counter(registry, "learner_examples_total",
                                 "Fresh examples trained on, by source of the prompt.",
                                 ["source"])
        self.examples_skipped = _counter(
            registry, "learner_examples_skipped_total",
            "Labeled examples not trained on, by reason (duplicate delivery, held out for the "
            "gate, every pseudo-target dropped by the critics).", ["reason"])
        self.loss = _gauge(registry, "learner_loss", "Loss of the last step, by kind.", ["kind"])
        self.grad_norm = _gauge(registry, "learner_grad_norm",
                                "Gradient norm of the last step, before clipping.")
        self.step_seconds = _histogram(registry, "learner_step_duration_seconds",
                                       "Wall time of one training step.", LATENCY_BUCKETS)
        self.kl = _gauge(registry, "student_teacher_kl",
                         "Mean KL(teacher || student) per token on the live traffic of the "
                         "last steps, measured before training on it.")
        self.jsd = _gauge(registry, "student_teacher_jsd",
                          "Mean generalized JSD (beta 0.5) per token on live traffic.")
        self.agreement = _gauge(registry, "student_teacher_agreement_ratio",
                                "Share of live-traffic tokens where the student's argmax is "
                                "the teacher's most likely token.")
        self.kl_hist = _histogram(registry, "student_teacher_kl_per_prompt",
                                  "Per-prompt KL(teacher || student) on live traffic.",
                                  SIGNAL_BUCKETS)
        self.energy = _histogram(registry, "prompt_energy",
                                 "Energy of live prompts under the student "
                                 "(-logsumexp of its logits, mean over the prompt).",
                                 ENERGY_BUCKETS)
        self.critic_drops = _counter(registry, "critic_dropped_total",
                                     "Pseudo-targets dropped by the critics, by reason.",
                                     ["reason"])
        self.published = _counter(registry, "versions_published_total",
                                  "Student versions published to the weights store.")
        self.self_distilled = _counter(registry, "learner_self_distilled_examples_total",
                                       "Student-labeled examples trained on.")

    def update(self, stats: Any, skipped_steps: int, critics: Mapping[str, Any] | None) -> None:
        steps = drain(stats.recent_steps)
        for s in steps:
            self.step_seconds.observe(s.seconds)
        if steps:
            last = steps[-1]
            self.grad_norm.set(last.grad_norm)
            self.loss.labels("total").set(last.loss)
            for kind, value in last.losses.items():
                self.loss.labels(kind).set(value)
            self.totals.set(self.steps, last.step)
        live = drain(stats.recent_live)  # (kl, jsd, agreement, energy) per live example
        for kl, _, _, energy in live:
            self.kl_hist.observe(kl)
            self.energy.observe(energy)
        if live:
            n = len(live)
            self.kl.set(sum(x[0] for x in live) / n)
            self.jsd.set(sum(x[1] for x in live) / n)
            self.agreement.set(sum(x[2] for x in live) / n)
        self.totals.set(self.skipped, skipped_steps)
        self.totals.set(self.tokens, stats.trained_tokens)
        for origin, n in stats.by_origin.items():
            self.totals.set(self.examples, n, origin)
        self.totals.set(self.examples_skipped, stats.duplicates, "duplicate")
        self.totals.set(self.examples_skipped, stats.held_out, "held_out")
        self.totals.set(self.examples_skipped, stats.critic_dropped, "critic")
        for reason, n in ((critics or {}).get("dropped") or {}).items():
            self.totals.set(self.critic_drops, n, reason)
        self.totals.set(self.published, stats.published)
        self.totals.set(self.self_distilled, stats.self_distilled)


class DriftMetrics:
    """The drift monitor's scores and alert state (:mod:`online_distill.drift`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.score = _gauge(registry, "drift_score",
                            "Drift of the current window against the reference, by signal "
                            "(PSI or KS, see metrics.drift_method).", ["signal"])
        self.detected = _gauge(registry, "drift_detected",
                               "1 while a signal's drift score is above metrics.drift_threshold.",
                               ["signal"])
        self.threshold = _gauge(registry, "drift_threshold", "metrics.drift_threshold.")
        self.tail_share = _gauge(registry, "energy_tail_share_ratio",
                                 "Share of recent live prompts above the reference window's "
                                 "ood.tail_quantile energy quantile.")

    def update(self, snapshot: Mapping[str, Any]) -> None:
        self.threshold.set(snapshot["threshold"])
        for signal, score in snapshot["scores"].items():
            if score is not None:
                self.score.labels(signal).set(score)
            self.detected.labels(signal).set(1.0 if snapshot["detected"][signal] else 0.0)
        if snapshot.get("tail_share") is not None:
            self.tail_share.set(snapshot["tail_share"])


class OODMetrics:
    """GOLD's feedback loop: what was scored, asked for, kept and dropped."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.totals = Totals()
        self.scored = _counter(registry, "ood_prompts_scored_total",
                               "Traffic prompts scored under the served student.")
        self.tail_hits = _counter(registry, "ood_tail_prompts_total",
                                  "Scored prompts above the tail threshold.")
        self.rounds = _counter(registry, "feedback_rounds_total",
                               "Feedback rounds (one teacher call each).")
        self.generated = _counter(registry, "feedback_prompts_generated_total",
                                  "Prompts the teacher wrote in feedback rounds.")
        self.kept = _counter(registry, "feedback_prompts_kept_total",
                             "Feedback prompts kept and produced to the feedback topic.")
        self.dropped = _counter(registry, "feedback_prompts_dropped_total",
                                "Feedback prompts dropped, by reason.", ["reason"])
        self.threshold = _gauge(registry, "ood_tail_threshold",
                                "The score above which a prompt is in the tail.")
        self.tail_size = _gauge(registry, "ood_tail_set_prompts", "Prompts in the tail set.")

    def update(self, stats: Any) -> None:
        self.totals.set(self.scored, stats.scored)
        self.totals.set(self.tail_hits, stats.tail_hits)
        self.totals.set(self.rounds, stats.rounds)
        self.totals.set(self.generated, stats.generated)
        self.totals.set(self.kept, stats.kept)
        for reason, n in stats.dropped.items():
            self.totals.set(self.dropped, n, reason)
        if stats.threshold is not None:
            self.threshold.set(stats.threshold)
        self.tail_size.set(stats.tail_size)


class GateMetrics:
    """The evaluation gate and the weights store: verdicts, scores, freshness."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.totals = Totals()
        self.judged = _counter(registry, "versions_judged_total",
                               "Versions the gate decided on, by decision (promoted, refused, "
                               "superseded: skipped for a newer one).", ["decision"])
        for decision in ("promoted", "refused", "superseded"):
            self.judged.labels(decision)  # present at 0 before the first verdict
        self.refused = _counter(registry, "versions_refused_total",
                                "Versions the gate refused, by reason (probe/metric that "
                                "regressed, or weights for non-finite weights).", ["reason"])
        self.judge_seconds = _histogram(registry, "gate_duration_seconds",
                                        "Wall time of one verdict.", LATENCY_BUCKETS)
        self.candidate = _gauge(registry, "candidate_score",
                                "The last judged candidate's score, by probe and metric.",
                                ["probe", "metric"])
        self.served = _gauge(registry, "served_score",
                             "The promoted version's score, by probe and metric.",
                             ["probe", "metric"])
        self.promoted_version = _gauge(registry, "promoted_version",
                                       "The version the weights store says to serve.")
        self.latest_version = _gauge(registry, "latest_version", "The newest published version.")
        self.freshness = _gauge(registry, "freshness_seconds",
                                "Seconds since the newest prompt the promoted version trained "
                                "on entered the stream.")
        self.holdout = _gauge(registry, "gate_holdout_examples",
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
        self.requests = _counter(registry, "serve_requests_total",
                                 "HTTP requests answered by the replica, by status code.",
                                 ["code"])
        self.latency = _histogram(registry, "serve_request_duration_seconds",
                                  "Time to answer one HTTP request, in the replica.",
                                  LATENCY_BUCKETS)
        self.tokens = _counter(registry, "serve_generated_tokens_total",
                               "Completion tokens generated.")
        self.version = _gauge(registry, "served_version", "The version this replica serves.")
        self.swaps = _counter(registry, "serve_swaps_total", "Hot swaps to a new version.")
        self.swap_seconds = _histogram(registry, "swap_duration_seconds",
                                       "Time to load a promoted version beside the served "
                                       "one (the switch itself is a pointer swap at the "
                                       "promotion's effective time).", LATENCY_BUCKETS)
        self.failed_loads = _counter(registry, "serve_failed_loads_total",
                                     "Promoted versions the replica failed to load.")

        self.totals = Totals()

    def observe_request(self, code: int, seconds: float) -> None:
        self.requests.labels(str(code)).inc()
        self.latency.observe(seconds)

    def update(self, version: int | None, stats: Any) -> None:
        """From the replica's model slot (:class:`online_distill.serving.swap.SwapStats`)."""
        if version is not None:
            self.version.set(version)
        self.totals.set(self.swaps, stats.swaps)
        self.totals.set(self.failed_loads, stats.failed_loads)
        for seconds in drain(stats.load_seconds):
            self.swap_seconds.observe(seconds)


class HubMetrics:
    """The metrics hub itself: which processes pushed recently."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.up = _gauge(registry, "process_up",
                         "1 for each loop process whose metrics arrived recently.", ["process"])


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
