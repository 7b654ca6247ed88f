"""The OOD-feedback actor (GOLD): a thin Ray shell over :class:`OODStage`.

It reads the prompts topic in its own consumer group (``<prefix>.ood``), or the labels topic
with ``ood.score=answer_gap``, scores prompts (or the teacher's answers) under the served
student, and writes synthetic prompts like the tail ones to the feedback topic, which the
teacher actors label like any prompt (within ``ood.feedback_share_cap``).
"""

from __future__ import annotations

from typing import Any

import ray
import torch
from online_distill.actors.metrics import start_pusher
from prometheus_client import CollectorRegistry

from online_distill.config import config_from_dict
from online_distill.metrics import OODMetrics, StageMetrics
from online_distill.models.paths import student_path, teacher_path
from online_distill.ood import feedback_format
from online_distill.ood.callouts import (
    StudentAnswerScorer,
    StudentEnergyScorer,
    TeacherPromptWriter,
)
from online_distill.ood.stage import OODStage
from online_distill.ood.stats import OODSnapshot
from online_distill.streams import DeadLetterWriter, KafkaSink, KafkaSource
from online_distill.streams.running import LagProbe, LoopThread
from online_distill.teachers.factory import build_teacher
from online_distill.weights.store import store_for


@ray.remote
class OODActor:
    def __init__(self, cfg: dict[str, Any], bootstrap: str, threads: int = 1) -> None:
        torch.set_num_threads(threads)
        self.cfg = config_from_dict(cfg)
        k, t, o = self.cfg.kafka, self.cfg.teacher, self.cfg.ood
        teacher = build_teacher(t, teacher_path(t.model),
                                student_path(self.cfg.learner.student_model))
        student = student_path(self.cfg.learner.student_model)
        scorer = (StudentAnswerScorer(store_for(self.cfg), student, o)
                  if o.score == "answer_gap" else
                  StudentEnergyScorer(store_for(self.cfg), student, o,
                                      teacher=getattr(teacher, "model", None)
                                      if o.score == "nll_gap" else None))
        writer = TeacherPromptWriter(teacher, teacher.tokenizer)
        # answer_gap scores the teacher's labels; the other scores read prompts.
        topic = k.labels_topic if o.score == "answer_gap" else k.prompts_topic
        source = KafkaSource(k, bootstrap, "ood", [topic])
        self.sink = KafkaSink(k, bootstrap, "ood")
        self.dead_letters = DeadLetterWriter(self.sink, k.dead_letter_topic, "ood",
                                             max_message_bytes=k.max_message_bytes)
        self.stage = OODStage(source, self.sink, writer, scorer, feedback_format(self.cfg), o,
                              k.feedback_topic, self.dead_letters,
                              max_message_bytes=k.max_message_bytes)
        self.scorer = scorer
        self.lag = LagProbe(source)
        registry = CollectorRegistry()
        self.stage_metrics = StageMetrics(registry, "ood")
        self.ood_metrics = OODMetrics(registry)
        self.pusher = start_pusher(self.cfg, "ood", registry, self._update_metrics)
        self.loop = LoopThread("ood", self.stage.run_once, after_step=self.lag.poll)

    def _update_metrics(self) -> None:
        s = self.stage.stats
        self.stage_metrics.update(s.by_topic, {self.cfg.kafka.feedback_topic: s.kept},
                                  self.dead_letters.by_topic, self.lag.by_topic)
        self.ood_metrics.update(s)

    def stats(self) -> OODSnapshot:
        return self.stage.stats.snapshot(student_version=self.scorer.version)

    def stop(self) -> None:
        self.loop.stop()
        if self.pusher is not None:
            self.pusher.stop()
