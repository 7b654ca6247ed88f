"""GOLD's feedback loop for real: broker, Ray, the OOD actor, the demo teacher and a student.

The student has only seen ``add2`` lines, so ``mul`` prompts are out of its distribution.
Traffic is 99% add2 and 1% mul; the OOD actor must find the mul prompts in the tail and ask
the teacher for more like them: the feedback topic must be mostly mul, far above 1%.
Twice: scoring prompts (``ood.score=nll``, the prompts topic), and scoring the teacher's
answers (``ood.score=answer_gap``: the demo teacher labels the traffic first, with the
teacher stage on the real broker, and the actor reads the labels topic).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from online_distill.actors.ood import OODActor  # noqa: E402

from online_distill.cli.export import read_topic  # noqa: E402
from online_distill.config import Config, config_to_dict, load_config  # noqa: E402
from online_distill.messages import PromptMessage, decode, encode  # noqa: E402
from online_distill.models.loader import load_model  # noqa: E402
from online_distill.streams import (  # noqa: E402
    DeadLetterWriter,
    EmbeddedBroker,
    KafkaSink,
    KafkaSource,
    ensure_topics,
)
from online_distill.tasks.arithmetic import sample_problem  # noqa: E402
from online_distill.tasks.models import DEMO_STUDENT_DIR, DEMO_TEACHER_DIR  # noqa: E402
from online_distill.teachers.hf import HFTeacher  # noqa: E402
from online_distill.teachers.stage import TeacherStage  # noqa: E402
from online_distill.weights.store import store_for  # noqa: E402

pytestmark = pytest.mark.integration


def head_only_student(steps: int = 300):
    """The demo student after ``steps`` steps of plain CE on add2 lines only."""
    torch.manual_seed(0)
    model, tok = load_model(DEMO_STUDENT_DIR)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(0)
    for _ in range(steps):
        lines = [sample_problem("add2", rng).line for _ in range(32)]
        batch = tok(lines, return_tensors="pt", padding=True)
        labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
        loss = model(**batch, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model, tok


def label_everything(cfg: Config, bootstrap: str, n: int) -> None:
    """The demo teacher labels the ``n`` prompts on the prompts topic (teacher stage, real
    broker), as the loop's teacher actor would."""
    model, tok = load_model(DEMO_TEACHER_DIR)
    backend = HFTeacher(model, device="cpu", batch_size=64, tokenizer=tok, teacher_id="demo")
    sink = KafkaSink(cfg.kafka, bootstrap, "teacher")
    stage = TeacherStage(KafkaSource(cfg.kafka, bootstrap, "teacher", [cfg.kafka.prompts_topic]),
                         sink, backend, tok, cfg.teacher, cfg.kafka.labels_topic,
                         DeadLetterWriter(sink, cfg.kafka.dead_letter_topic, "teacher"),
                         max_prompt_tokens=112)
    deadline = time.monotonic() + 300
    while stage.stats.labeled < n:
        assert time.monotonic() < deadline, f"labeled {stage.stats.labeled} of {n} in 300 s"
        stage.run_once(poll_timeout_s=1.0)
    stage.source.close()
    sink.close()


@pytest.mark.parametrize("score", ["nll", "answer_gap"])
def test_ood_actor_asks_for_more_of_the_rare_kind(tmp_path: Path, score: str) -> None:
    torch.set_num_threads(2)
    student, tok = head_only_student()
    with EmbeddedBroker(log_dir=tmp_path / "broker") as broker:
        cfg = load_config(None, [
            f"kafka.bootstrap_servers={broker.bootstrap}", f"run_dir={tmp_path}",
            f"gate.weights_dir={tmp_path / 'w'}", "ood.enabled=true",
            "ood.feedback_interval_s=1.0", "ood.min_window=200", "ood.tail_quantile=0.99",
            "kafka.partitions=1", f"ood.score={score}", "teacher.n_pseudo_targets=1"])
        store = store_for(cfg)
        store.publish(student, tok, learner_step=300)
        store.promote(1)
        ensure_topics(cfg.kafka, broker.bootstrap)
        sink = KafkaSink(cfg.kafka, broker.bootstrap, "test")
        rng = random.Random(1)
        sent = Counter()
        for i in range(3000):
            kind = "mul" if i % 100 == 37 else "add2"
            msg = PromptMessage(text=sample_problem(kind, rng).prompt, kind=kind)
            sink.send(cfg.kafka.prompts_topic, encode(msg), key=msg.id.encode())
            sent[kind] += 1
        sink.flush(30)
        if score == "answer_gap":
            label_everything(cfg, broker.bootstrap, sum(sent.values()))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            actor = OODActor.options(num_cpus=1).remote(config_to_dict(cfg), broker.bootstrap)
            deadline = time.monotonic() + 180
            stats = ray.get(actor.stats.remote())
            while time.monotonic() < deadline and stats.kept < 40:
                time.sleep(2)
                stats = ray.get(actor.stats.remote())
            ray.get(actor.stop.remote())
        finally:
            ray.shutdown()
        feedback = [decode(v, PromptMessage) for v in
                    read_topic(cfg, broker.bootstrap, cfg.kafka.feedback_topic, "t-fb")]
    kinds = Counter(m.kind for m in feedback)
    share = kinds["mul"] / max(1, len(feedback))
    print(f"\ntraffic: {dict(sent)} (mul {sent['mul'] / sum(sent.values()):.1%}); "
          f"feedback: {dict(kinds)} (mul {share:.1%}); stats: {stats}")
    assert stats.student_version == 1 and len(feedback) >= 40
    assert all(m.origin == "feedback" and m.parent_ids for m in feedback)
    # Prompts are scored for noise; a new prompt has no answer to score yet.
    assert all((m.energy is None) == (score == "answer_gap") for m in feedback)
    assert share >= 0.5  # 1% of traffic, at least half of the feedback
