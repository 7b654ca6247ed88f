"""Builds one learner process's parts (student, stage, critics, drift, stores) from the
config: shared by the single learner actor and every Ray Train worker of a multi-worker
learner (:mod:`online_distill.actors.learner_train`). No Ray here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from transformers import PreTrainedTokenizerBase

from online_distill.config import Config
from online_distill.critics import CriticChain, build_critics
from online_distill.learner.drift import DriftMonitor
from online_distill.learner.drift_reference import ReferenceEnergy
from online_distill.learner.lockstep import SingleSync, StepSync
from online_distill.learner.self_distill import SelfDistiller
from online_distill.learner.stage import LearnerStage
from online_distill.learner.stats import prompt_time_metrics
from online_distill.learner.trainer import Learner
from online_distill.metrics import DriftMetrics, LearnerMetrics, StageMetrics
from online_distill.models.loader import load_causal_lm, load_tokenizer
from online_distill.models.paths import ensure_dir, student_path, teacher_path
from online_distill.streams import DeadLetterWriter, KafkaSink, KafkaSource
from online_distill.streams.offsets import offsets_to_json
from online_distill.teachers.factory import build_teacher
from online_distill.weights.store import LocalWeightsStore, store_for


def holdout_share(cfg: Config) -> float:
    """Share of prompts kept out of training for the gate's rolling probe (0: none)."""
    g = cfg.gate
    return g.rolling_holdout_share if g.enabled and g.rolling_probe_size > 0 else 0.0


@dataclass
class LearnerParts:
    """What one learner process runs; rank 0 of N (or the only one) publishes versions."""

    cfg: Config
    tokenizer: PreTrainedTokenizerBase
    learner: Learner
    stage: LearnerStage
    source: KafkaSource
    sink: KafkaSink
    dead_letters: DeadLetterWriter
    critics: CriticChain | None
    drift: DriftMonitor
    store: LocalWeightsStore
    published: list[int] = field(default_factory=list)

    def publish(self, learner: Learner) -> None:
        last = self.stage.stats.last_step
        metrics = {"loss": last.loss} if last else {}
        metrics.update(prompt_time_metrics(self.stage.prompt_times))
        offsets = offsets_to_json(self.stage.tracker.committable())
        manifest = self.store.publish(learner.model, self.tokenizer, learner.step, offsets,
                                      metrics)
        self.published.append(manifest.version)

    def stats(self) -> dict[str, Any]:
        s, last = self.stage.stats, self.stage.stats.last_step
        return {"step": self.learner.step, "skipped_steps": self.learner.skipped_steps,
                "held_out": s.held_out, "critic_dropped": s.critic_dropped,
                "critics": self.critics.snapshot() if self.critics else None,
                "self_distilled": s.self_distilled, "by_origin": dict(s.by_origin),
                "loss": last.loss if last else None, "fresh_trained": s.fresh_trained,
                "duplicates": s.duplicates, "checkpoints": s.checkpoints,
                "checkpoint_failures": s.checkpoint_failures,
                "non_finite_steps": s.non_finite_steps,
                "non_finite_dropped": s.non_finite_dropped,
                "published": list(self.published), "pending": len(self.stage.pending),
                "tokens": last.tokens if last else 0,
                "train_seconds": s.train_seconds, "trained_tokens": s.trained_tokens,
                "live": s.last_live, "drift": self.drift.snapshot()}


class LearnerExporter:
    """The learner's Prometheus families on their own registry, updated before each push."""

    def __init__(self, parts: LearnerParts) -> None:
        self.parts = parts
        self.registry = CollectorRegistry()
        self.stage_metrics = StageMetrics(self.registry, "learner")
        self.learner_metrics = LearnerMetrics(self.registry)
        self.drift_metrics = DriftMetrics(self.registry)

    def update(self, lag_by_topic: Any) -> None:
        p = self.parts
        s = p.stage.stats
        self.stage_metrics.update(s.by_topic, {}, p.dead_letters.by_topic, lag_by_topic)
        self.learner_metrics.update(s, p.learner.skipped_steps,
                                    p.critics.snapshot() if p.critics else None)
        self.drift_metrics.update(p.drift.snapshot())


def build_learner(cfg: Config, bootstrap: str, sync: StepSync | None = None) -> LearnerParts:
    """Every part of one learner process; worker ``sync.rank`` of ``sync.world_size`` reads
    its share of the labels partitions, and only rank 0 publishes versions."""
    sync = sync or SingleSync()
    k, lc, t = cfg.kafka, cfg.learner, cfg.teacher
    path = student_path(lc.student_model)
    tokenizer = load_tokenizer(path)
    model = load_causal_lm(path)
    scorer = None
    if lc.onpolicy_lambda > 0 or lc.joint_teaching:  # the teacher scores student samples
        scorer = build_teacher(t, teacher_path(t.model), path)
    learner = Learner(model, lc, pad_id=int(tokenizer.pad_token_id or 0), scorer=scorer,
                      top_k=t.top_k_logprobs, max_new_tokens=t.max_new_tokens, sync=sync)
    # Critics on the teacher's labels, and a separate chain (separate counts) on the
    # student's own candidates in self-distillation rounds.
    critics = build_critics(cfg)
    distiller = None
    if lc.self_distill_every_steps:
        # Same critics, own counts; one similarity model (an embedding model loads once).
        own = (CriticChain(critics.cfg, critics.checker, similarity=critics.similarity)
               if critics else None)
        distiller = SelfDistiller(learner, tokenizer, lc.self_distill_samples,
                                  t.max_new_tokens, critic=own.filter if own else None,
                                  top_k=t.top_k_logprobs)
    # The learner restores its offsets from its own checkpoint, so each worker takes its
    # partitions directly (no group membership, no rebalances).
    source = KafkaSource(k, bootstrap, "learner", [k.labels_topic], manual_assign=True,
                         shard=(sync.rank, sync.world_size))
    sink = KafkaSink(k, bootstrap, "learner")
    d = cfg.drift
    drift = DriftMonitor(d.window, d.threshold, d.method,
                         tail_quantile=cfg.ood.tail_quantile)
    dead_letters = DeadLetterWriter(sink, k.dead_letter_topic, "learner",
                                    max_message_bytes=k.max_message_bytes)
    parts: LearnerParts
    stage = LearnerStage(
        source, learner, lc, dead_letters, sink,
        publisher=(lambda lr: parts.publish(lr)) if sync.rank == 0 else None,
        max_message_bytes=k.max_message_bytes,
        audit_path=ensure_dir(cfg.run_dir) / "trained_ids.log",
        holdout_share=holdout_share(cfg), critic=critics.filter if critics else None,
        self_distiller=distiller, drift=drift,
        reference_energy=ReferenceEnergy(int(tokenizer.pad_token_id or 0),
                                         renew_after=4 * d.window))
    parts = LearnerParts(cfg, tokenizer, learner, stage, source, sink, dead_letters, critics,
                         drift, store_for(cfg))
    return parts
