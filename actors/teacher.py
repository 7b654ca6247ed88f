"""The teacher actor: a thin Ray shell over :class:`TeacherStage`.

Several teacher actors share the prompts and feedback topics through one consumer group
(``<prefix>.teacher``): Kafka splits the partitions between them.
"""

from __future__ import annotations

from typing import Any

import ray
import torch
from online_distill.actors.common import LoopThread, teacher_path, total_lag

from online_distill.config import config_from_dict
from online_distill.stages.teacher_stage import TeacherStage
from online_distill.streams import DeadLetterWriter, KafkaSink, KafkaSource
from online_distill.teachers.hf import HFTeacher


@ray.remote
class TeacherActor:
    def __init__(self, cfg: dict[str, Any], bootstrap: str, threads: int = 1) -> None:
        torch.set_num_threads(threads)
        self.cfg = config_from_dict(cfg)
        k, t = self.cfg.kafka, self.cfg.teacher
        backend = HFTeacher(teacher_path(t.model), device=t.device, batch_size=t.batch_size)
        source = KafkaSource(k, bootstrap, "teacher", [k.prompts_topic, k.feedback_topic])
        self.sink = KafkaSink(k, bootstrap, "teacher")
        self.stage = TeacherStage(
            source, self.sink, backend, backend.tokenizer, t, k.labels_topic,
            DeadLetterWriter(self.sink, k.dead_letter_topic, "teacher"),
            max_prompt_tokens=self.cfg.learner.max_seq_len - t.max_new_tokens,
            max_message_bytes=k.max_message_bytes,
        )
        self.loop = LoopThread("teacher", self.stage.run_once)

    def stats(self) -> dict[str, Any]:
        s = self.stage.stats
        return {"polled": s.polled, "labeled": s.labeled, "dead_lettered": s.dead_lettered,
                "retries": s.retries, "label_seconds": s.label_seconds,
                "labeled_tokens": s.labeled_tokens, "lag": total_lag(self.stage.source)}

    def stop(self) -> None:
        """Finish the batch in hand (it flushes and commits), then stop."""
        self.loop.stop()
