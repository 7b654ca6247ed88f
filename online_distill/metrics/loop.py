"""Metrics of the streaming loop's stages: every stage's messages and lag, the teacher,
the learner (with its live-drift signals) and the OOD feedback actor.

Each update reads a stage's mutable stats object by attribute, in the stage's process (it
drains the stats' queues of recent observations); the frozen snapshots that cross Ray are
for the status line and the timeline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from .base import (
    ENERGY_BUCKETS,
    LATENCY_BUCKETS,
    SIGNAL_BUCKETS,
    Totals,
    counter,
    drain,
    gauge,
    histogram,
)

if TYPE_CHECKING:  # for types only: the stations import the metrics, not the other way
    from online_distill.learner.stats import LearnerStageStats
    from online_distill.ood.stats import OODStats
    from online_distill.teachers.stats import TeacherStats


class StageMetrics:
    """What every stage reads, writes and dead-letters, and how far behind it is."""

    def __init__(self, registry: CollectorRegistry, stage: str) -> None:
        self.stage = stage
        self.totals = Totals()
        self.messages_in = counter(registry, "messages_in_total",
                                   "Records polled from a topic, by stage and topic.",
                                   ["stage", "topic"])
        self.messages_out = counter(registry, "messages_out_total",
                                    "Messages produced to a topic, by stage and topic.",
                                    ["stage", "topic"])
        self.dead_letters = counter(
            registry, "dead_letters_total",
            "Input records dead-lettered, by stage, the topic they came from, and reason.",
            ["stage", "topic", "reason"])
        self.lag = gauge(registry, "consumer_lag_messages",
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
        self.batch_seconds = histogram(registry, "teacher_batch_duration_seconds",
                                       "Wall time to label one batch of prompts.",
                                       LATENCY_BUCKETS)
        self.queue_seconds = histogram(
            registry, "teacher_queue_duration_seconds",
            "Time from a prompt entering the stream to the teacher starting on it.",
            LATENCY_BUCKETS)
        self.prompts = counter(registry, "teacher_prompts_labeled_total",
                               "Prompts labeled, by source (traffic or feedback).", ["source"])
        self.tokens = counter(registry, "teacher_tokens_total",
                              "Pseudo-target tokens the teacher wrote.")
        self.pseudo_targets = counter(registry, "teacher_pseudo_targets_total",
                                      "Pseudo-targets the teacher wrote.")
        self.retries = counter(registry, "teacher_retries_total",
                               "Backend calls retried after an error.")

    def update(self, stats: TeacherStats) -> None:
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

    SKIP_REASONS = ("duplicate", "held_out", "critic", "stale", "overrun")

    def __init__(self, registry: CollectorRegistry) -> None:
        self.totals = Totals()
        self.steps = counter(registry, "learner_steps_total", "Optimizer steps taken.")
        self.skipped = counter(registry, "learner_skipped_steps_total",
                               "Steps skipped because the loss or gradient was not finite.")
        self.tokens = counter(registry, "learner_tokens_total",
                              "Continuation tokens trained on.")
        self.examples = counter(registry, "learner_examples_total",
                                "Fresh examples trained on, by source of the prompt.",
                                ["source"])
        self.examples_skipped = counter(
            registry, "learner_examples_skipped_total",
            "Labeled examples not trained on, by reason (duplicate delivery, held out for the "
            "gate, every pseudo-target dropped by the critics).", ["reason"])
        self.loss = gauge(registry, "learner_loss", "Loss of the last step, by kind.", ["kind"])
        self.grad_norm = gauge(registry, "learner_grad_norm",
                               "Gradient norm of the last step, before clipping.")
        self.step_seconds = histogram(registry, "learner_step_duration_seconds",
                                      "Wall time of one training step.", LATENCY_BUCKETS)
        self.feedback_share = gauge(registry, "learner_feedback_share_ratio",
                                    "Share of the fresh examples trained on whose prompt was "
                                    "written by the OOD-feedback loop (bounded by "
                                    "ood.feedback_share_cap).")
        self.kl = gauge(registry, "student_teacher_kl",
                        "Mean KL(teacher || student) per token on the live traffic of the "
                        "last steps, measured before training on it.")
        self.jsd = gauge(registry, "student_teacher_jsd",
                         "Mean generalized JSD (beta 0.5) per token on live traffic.")
        self.agreement = gauge(registry, "student_teacher_agreement_ratio",
                               "Share of live-traffic tokens where the student's argmax is "
                               "the teacher's most likely token.")
        self.kl_hist = histogram(registry, "student_teacher_kl_per_prompt",
                                 "Per-prompt KL(teacher || student) on live traffic.",
                                 SIGNAL_BUCKETS)
        self.energy = histogram(registry, "prompt_energy",
                                "Energy of live prompts under the student "
                                "(-logsumexp of its logits, mean over the prompt).",
                                ENERGY_BUCKETS)
        self.critic_drops = counter(registry, "critic_dropped_total",
                                    "Pseudo-targets dropped by the critics, by reason.",
                                    ["reason"])
        self.published = counter(registry, "versions_published_total",
                                 "Student versions published to the weights store.")
        self.self_distilled = counter(registry, "learner_self_distilled_examples_total",
                                      "Student-labeled examples trained on.")

    def update(self, stats: LearnerStageStats, skipped_steps: int,
               critics: Mapping[str, Any] | None) -> None:
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
        trained = sum(stats.by_origin.values())
        self.feedback_share.set(stats.by_origin.get("feedback", 0) / trained if trained else 0.0)
        self.totals.set(self.examples_skipped, stats.duplicates, "duplicate")
        self.totals.set(self.examples_skipped, stats.held_out, "held_out")
        self.totals.set(self.examples_skipped, stats.critic_dropped, "critic")
        self.totals.set(self.examples_skipped, stats.stale, "stale")
        self.totals.set(self.examples_skipped, stats.overrun, "overrun")
        for reason, n in ((critics or {}).get("dropped") or {}).items():
            self.totals.set(self.critic_drops, n, reason)
        self.totals.set(self.published, stats.published)
        self.totals.set(self.self_distilled, stats.self_distilled)


class DriftMetrics:
    """The drift monitor's scores and alert state (:mod:`online_distill.learner.drift`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.score = gauge(registry, "drift_score",
                           "Drift of the current window against the reference, by signal "
                           "(PSI or KS, see drift.method).", ["signal"])
        self.detected = gauge(registry, "drift_detected",
                              "1 while a signal's drift score is above drift.threshold.",
                              ["signal"])
        self.threshold = gauge(registry, "drift_threshold", "drift.threshold.")
        self.events = counter(registry, "drift_events_total",
                              "Drift detections started, by signal (a detection shorter than "
                              "the scrape interval still counts).", ["signal"])
        self.totals = Totals()
        self.tail_share = gauge(registry, "energy_tail_share_ratio",
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
        for signal, n in snapshot.get("started", {}).items():
            self.totals.set(self.events, n, signal)


class OODMetrics:
    """GOLD's feedback loop: what was scored, asked for, kept and dropped."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.totals = Totals()
        self.scored = counter(registry, "ood_prompts_scored_total",
                              "Traffic prompts scored under the served student.")
        self.tail_hits = counter(registry, "ood_tail_prompts_total",
                                 "Scored prompts above the tail threshold.")
        self.rounds = counter(registry, "feedback_rounds_total",
                              "Feedback rounds (one teacher call each).")
        self.generated = counter(registry, "feedback_prompts_generated_total",
                                 "Prompts the teacher wrote in feedback rounds.")
        self.kept = counter(registry, "feedback_prompts_kept_total",
                            "Feedback prompts kept and produced to the feedback topic.")
        self.dropped = counter(registry, "feedback_prompts_dropped_total",
                               "Feedback prompts dropped, by reason.", ["reason"])
        self.threshold = gauge(registry, "ood_tail_threshold",
                               "The score above which a prompt is in the tail.")
        self.tail_size = gauge(registry, "ood_tail_set_prompts", "Prompts in the tail set.")
        self.kept_by_kind = counter(registry, "feedback_prompts_by_kind_total",
                                    "Feedback prompts kept, by task kind (\"\" unknown).",
                                    ["kind"])
        self.tail_by_kind = gauge(registry, "ood_tail_set_by_kind_prompts",
                                  "Prompts in the tail set, by task kind.", ["kind"])
        self._tail_kinds: set[str] = set()

    def update(self, stats: OODStats) -> None:
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
        for kind, n in stats.kept_by_kind.items():
            self.totals.set(self.kept_by_kind, n, kind)
        self._tail_kinds |= set(stats.tail_by_kind)  # a kind that left the set shows 0
        for kind in self._tail_kinds:
            self.tail_by_kind.labels(kind).set(stats.tail_by_kind.get(kind, 0))
