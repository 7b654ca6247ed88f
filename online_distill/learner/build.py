"""Builds one learner process's parts (student, stage, critics, drift, stores) from the
config: shared by the single learner actor and every Ray Train worker of a multi-worker
learner (:mod:`online_distill.actors.learner_train`). No Ray here."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry
from transformers import PreTrainedTokenizerBase

from online_distill.config import Config, LearnerConfig
from online_distill.critics import CriticChain, build_critics
from online_distill.learner.drift import DriftMonitor
from online_distill.learner.drift_reference import ReferenceEnergy
from online_distill.learner.intake import Critic, ExampleFilter, Intake
from online_distill.learner.lockstep import SingleSync, StepSync
from online_distill.learner.observers import (
    AuditLog,
    DriftObserver,
    LiveSignalsObserver,
    StepObserver,
)
from online_distill.learner.self_distill import SelfDistiller
from online_distill.learner.stage import LearnerStage, Publication, Publisher
from online_distill.learner.stats import LearnerSnapshot
from online_distill.learner.trainer import Learner
from online_distill.messages.holdout import held_out
from online_distill.metrics import DriftMetrics, LearnerMetrics, StageMetrics
from online_distill.models.loader import load_causal_lm, load_tokenizer
from online_distill.models.paths import ensure_dir, student_path, teacher_path
from online_distill.streams import DeadLetterWriter, MessageSink, MessageSource
from online_distill.teachers.factory import build_teacher
from online_distill.weights import WeightsStore, store_for


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
    source: MessageSource
    sink: MessageSink
    dead_letters: DeadLetterWriter
    critics: CriticChain | None
    drift: DriftMonitor
    store: WeightsStore
    published: list[int] = field(default_factory=list)

    def publish(self, learner: Learner, what: Publication) -> None:
        manifest = self.store.publish(learner.model, self.tokenizer, learner.step,
                                      what.offsets, what.metrics)
        self.published.append(manifest.version)

    def snapshot(self, lag: int = -1) -> LearnerSnapshot:
        """This process's state now, with its consumer's ``lag`` (the lag probe's)."""
        return self.stage.stats.snapshot(
            step=self.learner.step, skipped_steps=self.learner.skipped_steps,
            pending=len(self.stage.pending), published=tuple(self.published),
            critics=dict(self.critics.snapshot()) if self.critics else None,
            drift=self.drift.snapshot(), lag=lag)


class LearnerExporter:
    """The learner's Prometheus families on their own registry, updated before each push."""

    def __init__(self, parts: LearnerParts) -> None:
        self.parts = parts
        self.registry = CollectorRegistry()
        self.stage_metrics = StageMetrics(self.registry, "learner")
        self.learner_metrics = LearnerMetrics(self.registry)
        self.drift_metrics = DriftMetrics(self.registry)

    def update(self, lag_by_topic: Mapping[str, int] | None) -> None:
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
    from online_distill.streams import KafkaSink, KafkaSource  # Kafka: only when the loop runs

    source = KafkaSource(k, bootstrap, "learner", [k.labels_topic], manual_assign=True,
                         shard=(sync.rank, sync.world_size))
    sink = KafkaSink(k, bootstrap, "learner")
    d = cfg.drift
    drift = DriftMonitor(d.window, d.threshold, d.method, tail_quantile=cfg.ood.tail_quantile)
    dead_letters = DeadLetterWriter(sink, k.dead_letter_topic, "learner",
                                    max_message_bytes=k.max_message_bytes)
    parts: LearnerParts
    stage = assemble_stage(
        source, learner, lc, dead_letters,
        publisher=(lambda lr, what: parts.publish(lr, what)) if sync.rank == 0 else None,
        max_message_bytes=k.max_message_bytes,
        audit_path=ensure_dir(cfg.run_dir) / "trained_ids.log",
        holdout_share=holdout_share(cfg), critic=critics.filter if critics else None,
        self_distiller=distiller, drift=drift,
        reference=ReferenceEnergy(int(tokenizer.pad_token_id or 0), renew_after=4 * d.window))
    parts = LearnerParts(cfg, tokenizer, learner, stage, source, sink, dead_letters, critics,
                         drift, store_for(cfg))
    return parts


def assemble_stage(
    source: MessageSource,
    learner: Learner,
    cfg: LearnerConfig,
    dead_letters: DeadLetterWriter,
    *,
    publisher: Publisher | None = None,
    max_message_bytes: int = 1 << 20,
    holdout_share: float = 0.0,
    critic: Critic | None = None,
    audit_path: str | Path | None = None,
    drift: DriftMonitor | None = None,
    reference: ReferenceEnergy | None = None,
    self_distiller: SelfDistiller | None = None,
    max_wait_s: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
) -> LearnerStage:
    """A learner stage with its intake (decode, dead letters, held out, critics, duplicates)
    and its step observers (audit log, live signals, drift) wired from plain settings."""
    stage: LearnerStage
    keep = ExampleFilter(held_out=functools.partial(held_out, share=holdout_share),
                         seen=lambda prompt_id: stage.seen(prompt_id), critic=critic)
    vocab = int(learner.model.get_input_embeddings().num_embeddings)
    intake = Intake(dead_letters, vocab, max_message_bytes, keep)
    stage = LearnerStage(source, learner, cfg, intake, dead_letters, publisher=publisher,
                         self_distiller=self_distiller, max_wait_s=max_wait_s, clock=clock,
                         wall_clock=wall_clock)
    observers: list[StepObserver] = [LiveSignalsObserver(stage.stats)]
    if audit_path is not None:
        observers.append(AuditLog(audit_path))
    if drift is not None:
        observers.append(DriftObserver(drift, reference, lambda: learner.model))
    stage.observers = observers
    return stage
