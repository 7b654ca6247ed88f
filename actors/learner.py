"""The learner actor: a thin Ray shell over :class:`LearnerStage` and the weights store."""

from __future__ import annotations

from typing import Any

import ray
import torch
from online_distill.actors.common import (
    LagProbe,
    LoopThread,
    ensure_dir,
    student_path,
    teacher_path,
)
from online_distill.actors.metrics import start_pusher
from prometheus_client import CollectorRegistry
from transformers import AutoModelForCausalLM, AutoTokenizer

from online_distill.config import Config, config_from_dict
from online_distill.critics import CriticChain, build_critics
from online_distill.drift import DriftMonitor
from online_distill.drift_energy import ReferenceEnergy
from online_distill.learner import Learner
from online_distill.metrics import DriftMetrics, LearnerMetrics, StageMetrics
from online_distill.self_distill import SelfDistiller
from online_distill.stages.learner_stage import LearnerStage, prompt_time_metrics
from online_distill.stages.offsets import offsets_to_json
from online_distill.streams import DeadLetterWriter, KafkaSink, KafkaSource
from online_distill.teachers.hf import HFTeacher
from online_distill.weights import store_for


def holdout_share(cfg: Config) -> float:
    """Share of prompts kept out of training for the gate's rolling probe (0: none)."""
    g = cfg.gate
    return g.rolling_holdout_share if g.enabled and g.rolling_probe_size > 0 else 0.0


@ray.remote
class LearnerActor:
    def __init__(self, cfg: dict[str, Any], bootstrap: str, threads: int = 1) -> None:
        torch.set_num_threads(threads)
        self.cfg = config_from_dict(cfg)
        k, lc, t = self.cfg.kafka, self.cfg.learner, self.cfg.teacher
        path = student_path(lc.student_model)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)
        scorer = None
        if lc.onpolicy_lambda > 0 or lc.joint_teaching:  # the teacher scores student samples
            scorer = HFTeacher(teacher_path(t.model), device=t.device, batch_size=t.batch_size)
        self.learner = Learner(model, lc, pad_id=int(self.tokenizer.pad_token_id or 0),
                               scorer=scorer, top_k=t.top_k_logprobs,
                               max_new_tokens=t.max_new_tokens)
        self.store = store_for(self.cfg)
        # Critics on the teacher's labels, and a separate chain (separate counts) on the
        # student's own candidates in self-distillation rounds.
        self.critics = build_critics(self.cfg)
        self.distiller = None
        if lc.self_distill_every_steps:
            # Same critics, own counts; one similarity model (an embedding model loads once).
            own = (CriticChain(self.critics.cfg, self.critics.checker,
                               similarity=self.critics.similarity) if self.critics else None)
            self.distiller = SelfDistiller(self.learner, self.tokenizer,
                                           lc.self_distill_samples, t.max_new_tokens,
                                           critic=own.filter if own else None,
                                           top_k=t.top_k_logprobs)
        # The learner is the only reader of the labels topic and restores its offsets from
        # its own checkpoint, so it takes every partition directly (no rebalances).
        source = KafkaSource(k, bootstrap, "learner", [k.labels_topic], manual_assign=True)
        self.sink = KafkaSink(k, bootstrap, "learner")
        m = self.cfg.metrics
        self.drift = DriftMonitor(m.drift_window, m.drift_threshold, m.drift_method,
                                  tail_quantile=self.cfg.ood.tail_quantile)
        self.dead_letters = DeadLetterWriter(self.sink, k.dead_letter_topic, "learner")
        self.stage = LearnerStage(source, self.learner, lc, self.dead_letters,
                                  self.sink, publisher=self._publish,
                                  max_message_bytes=k.max_message_bytes,
                                  audit_path=ensure_dir(self.cfg.run_dir) / "trained_ids.log",
                                  holdout_share=holdout_share(self.cfg),
                                  critic=self.critics.filter if self.critics else None,
                                  self_distiller=self.distiller, drift=self.drift,
                                  reference_energy=ReferenceEnergy(
                                      int(self.tokenizer.pad_token_id or 0),
                                      renew_after=4 * m.drift_window))
        if lc.resume:  # else the student starts fresh from student_model
            self.stage.resume()
        self.published: list[int] = []
        self.lag = LagProbe(source)
        registry = CollectorRegistry()
        self.stage_metrics = StageMetrics(registry, "learner")
        self.learner_metrics = LearnerMetrics(registry)
        self.drift_metrics = DriftMetrics(registry)
        self.pusher = start_pusher(self.cfg, "learner", registry, self._update_metrics)
        self.loop = LoopThread("learner", self.stage.run_once, after_step=self.lag.poll)

    def _update_metrics(self) -> None:
        s = self.stage.stats
        self.stage_metrics.update(s.by_topic, {}, self.dead_letters.by_topic, self.lag.by_topic)
        self.learner_metrics.update(s, self.learner.skipped_steps,
                                    self.critics.snapshot() if self.critics else None)
        self.drift_metrics.update(self.drift.snapshot())

    def _publish(self, learner: Learner) -> None:
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
                "published": list(self.published), "pending": len(self.stage.pending),
                "tokens": last.tokens if last else 0, "lag": self.lag.total,
                "train_seconds": s.train_seconds, "trained_tokens": s.trained_tokens,
                "live": s.last_live, "drift": self.drift.snapshot()}

    def trained_ids(self) -> list[str]:
        return list(self.stage.trained_ids)

    def stop(self) -> None:
        """Finish the step in hand, write a final checkpoint and commit its offsets."""
        self.loop.stop()
        self.stage.checkpoint()
        if self.pusher is not None:
            self.pusher.stop()
