"""The teacher actor: a thin Ray shell over :class:`TeacherStage`.

Several teacher actors share the prompts and feedback topics through one consumer group
(``<prefix>.teacher``): Kafka splits the partitions between them.
"""

from __future__ import annotations

from typing import Any

import ray
import torch
from online_distill.actors.metrics import start_pusher
from prometheus_client import CollectorRegistry

from online_distill.config import config_from_dict
from online_distill.metrics import StageMetrics, TeacherMetrics
from online_distill.models.paths import student_path, teacher_path
from online_distill.streams import DeadLetterWriter, KafkaSink, KafkaSource
from online_distill.streams.running import LagProbe, LoopThread
from online_distill.teachers.factory import build_teacher
from online_distill.teachers.stage import TeacherStage
from online_distill.teachers.stats import TeacherSnapshot


@ray.remote
class TeacherActor:
    def __init__(self, cfg: dict[str, Any], bootstrap: str, threads: int = 1) -> None:
        torch.set_num_threads(threads)
        self.cfg = config_from_dict(cfg)
        k, t = self.cfg.kafka, self.cfg.teacher
        backend = build_teacher(t, teacher_path(t.model),
                                student_path(self.cfg.learner.student_model))
        source = KafkaSource(k, bootstrap, "teacher", [k.prompts_topic, k.feedback_topic])
        self.sink = KafkaSink(k, bootstrap, "teacher")
        self.dead_letters = DeadLetterWriter(self.sink, k.dead_letter_topic, "teacher",
                                             max_message_bytes=k.max_message_bytes)
        self.stage = TeacherStage(
            source, self.sink, backend, backend.tokenizer, t, k.labels_topic, self.dead_letters,
            max_prompt_tokens=self.cfg.learner.max_seq_len - t.max_new_tokens,
            max_message_bytes=k.max_message_bytes,
        )
        self.lag = LagProbe(source)
        registry = CollectorRegistry()
        self.stage_metrics = StageMetrics(registry, "teacher")
        self.teacher_metrics = TeacherMetrics(registry)
        name = ray.get_runtime_context().get_actor_name() or "teacher"
        self.pusher = start_pusher(self.cfg, name, registry, self._update_metrics)
        self.loop = LoopThread("teacher", self.stage.run_once, after_step=self.lag.poll)

    def _update_metrics(self) -> None:
        s = self.stage.stats
        self.stage_metrics.update(s.by_topic, {self.cfg.kafka.labels_topic: s.labeled},
                                  self.dead_letters.by_topic, self.lag.by_topic)
        self.teacher_metrics.update(s)

    def stats(self) -> TeacherSnapshot:
        return self.stage.stats.snapshot(lag=self.lag.total, partitions=self.lag.partitions)

    def stop(self) -> None:
        """Finish the batch in hand (it flushes and commits), then stop."""
        self.loop.stop()
        if self.pusher is not None:
            self.pusher.stop()
