"""A real teacher stage (the shipped demo teacher) on a real broker, and a reader of the
labels topic: what tests that feed the prompts topic some other way use to see the labels."""

from __future__ import annotations

import time
from collections.abc import Callable

from online_distill.config import TeacherConfig
from online_distill.config.kafka import KafkaConfig
from online_distill.messages import LabeledExample, decode
from online_distill.streams import DeadLetterWriter, KafkaSink, KafkaSource
from online_distill.tasks.models import DEMO_TEACHER_DIR
from online_distill.teachers.hf import HFTeacher
from online_distill.teachers.stage import TeacherStage


def label_until(k: KafkaConfig, bootstrap: str,
                done: Callable[[dict[str, LabeledExample]], bool], deadline_s: float
                ) -> tuple[dict[str, LabeledExample], TeacherStage]:
    """Run a teacher stage on the prompts topic until ``done(labeled by prompt id)`` or
    ``deadline_s`` passed; returns what was labeled and the stage (for its stats)."""
    sink = KafkaSink(k, bootstrap, "teacher")
    teacher = HFTeacher(DEMO_TEACHER_DIR, device="cpu")
    source = KafkaSource(k, bootstrap, "teacher", [k.prompts_topic])
    stage = TeacherStage(source, sink, teacher, teacher.tokenizer,
                         TeacherConfig(n_pseudo_targets=1, max_new_tokens=8), k.labels_topic,
                         DeadLetterWriter(sink, k.dead_letter_topic, "teacher"),
                         max_prompt_tokens=64)
    labels = KafkaSource(k, bootstrap, "reader", [k.labels_topic], manual_assign=True)
    got: dict[str, LabeledExample] = {}
    deadline = time.monotonic() + deadline_s
    try:
        while not done(got) and time.monotonic() < deadline:
            stage.run_once(poll_timeout_s=0.5)
            for rec in labels.poll(timeout_s=0.1):
                ex = decode(rec.value, LabeledExample)
                got[ex.prompt_id] = ex
    finally:
        labels.close()
        source.close()
        sink.close()
    return got, stage
