"""Teacher and learner stages on the in-memory broker fakes, with tiny real models."""

from __future__ import annotations

import pytest

from online_distill.config import LearnerConfig, TeacherConfig
from online_distill.gate.holdout import held_out
from online_distill.learner.build import assemble_stage
from online_distill.learner.stage import LearnerStage
from online_distill.learner.trainer import Learner
from online_distill.messages import LabeledExample, PromptMessage, decode, encode
from online_distill.streams import DeadLetterWriter, MemoryLog, MemorySink, MemorySource, Record
from online_distill.streams.offsets import OffsetTracker
from online_distill.teachers.hf import HFTeacher
from online_distill.teachers.stage import TeacherStage
from tests.unit.test_learner import TOKENIZER, tiny_model

PROMPTS, LABELS, DLQ = "prompts", "labels", "dead"


@pytest.fixture(scope="module")
def backend() -> HFTeacher:
    return HFTeacher(tiny_model(100, layers=2, width=48), device="cpu", tokenizer=TOKENIZER,
                     teacher_id="tiny")


def teacher_stage(log: MemoryLog, backend, **cfg) -> TeacherStage:
    sink = MemorySink(log)
    tcfg = TeacherConfig(**{"n_pseudo_targets": 2, "max_new_tokens": 4, "batch_size": 8,
                            "top_k_logprobs": 5, "retry_backoff_s": 0.0, **cfg})
    return TeacherStage(MemorySource(log, [PROMPTS], group="teacher"), sink, backend, TOKENIZER,
                        tcfg, LABELS, DeadLetterWriter(sink, DLQ, "teacher"),
                        max_prompt_tokens=24, sleep=lambda s: None)


def produce_prompts(log: MemoryLog, n: int) -> list[str]:
    ids = []
    for i in range(n):
        msg = PromptMessage(text=f"{i % 90}+{i % 7}=", kind="add2")
        log.append(PROMPTS, encode(msg), key=msg.id.encode())
        ids.append(msg.id)
    return ids


def read_topic(log: MemoryLog, topic: str) -> list[bytes]:
    return [r.value for part in log.topics.get(topic, []) for r in part]


def test_teacher_labels_every_prompt_and_commits_after_flush(backend) -> None:
    log = MemoryLog(partitions=2)
    ids = produce_prompts(log, 20)
    stage = teacher_stage(log, backend)
    while stage.run_once():
        pass
    labeled = [decode(v, LabeledExample) for v in read_topic(log, LABELS)]
    assert sorted(ex.prompt_id for ex in labeled) == sorted(ids)
    assert all(len(ex.pseudo_targets) == 3 for ex in labeled)  # greedy + 2 sampled
    assert sum(log.committed["teacher"].values()) == 20
    snap = stage.stats.snapshot(lag=0, partitions=2)  # what the actor sends the status line
    assert (snap.polled, snap.labeled, snap.dead_lettered, snap.lag, snap.partitions) == (
        20, 20, 0, 0, 2)
    assert snap.by_origin == {"traffic": 20} and snap.pseudo_targets == 60


def test_malformed_and_oversize_prompts_are_dead_lettered_and_the_rest_flows(backend) -> None:
    log = MemoryLog(partitions=1)
    good = produce_prompts(log, 5)
    log.append(PROMPTS, b"\x00garbage")
    log.append(PROMPTS, encode(PromptMessage(text="1+" * 40 + "1=")))
    good += produce_prompts(log, 3)
    stage = teacher_stage(log, backend)
    while stage.run_once():
        pass
    labeled = {decode(v, LabeledExample).prompt_id for v in read_topic(log, LABELS)}
    assert labeled == set(good)
    letters = [decode(v) for v in read_topic(log, DLQ)]
    assert [d.error_type for d in letters] == ["bad_magic", "prompt_too_long"]
    assert letters[0].payload == b"\x00garbage" and letters[0].offset == 5
    assert "learner.max_seq_len" in letters[1].reason


class FlakyBackend:
    """Fails the first ``failures`` calls, and always for prompts containing '666'."""

    def __init__(self, inner: HFTeacher, failures: int) -> None:
        self.inner, self.failures, self.calls = inner, failures, 0
        self.teacher_id = "flaky"

    def label(self, prompt_ids, request):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls <= self.failures:
            raise TimeoutError("teacher timed out")
        if any("666" in TOKENIZER.decode(p) for p in prompt_ids):
            raise ValueError("poison prompt")
        return self.inner.label(prompt_ids, request)

    def score(self, *a):  # type: ignore[no-untyped-def]
        return self.inner.score(*a)


def test_failing_teacher_is_retried_then_poison_prompts_are_isolated(backend) -> None:
    log = MemoryLog(partitions=1)
    ids = produce_prompts(log, 3)
    poison = PromptMessage(text="666+1=")
    log.append(PROMPTS, encode(poison))
    flaky = FlakyBackend(backend, failures=2)
    stage = teacher_stage(log, flaky, max_retries=3)
    stage.backend = flaky
    stage.run_once()
    labeled = {decode(v, LabeledExample).prompt_id for v in read_topic(log, LABELS)}
    assert labeled == set(ids)
    (letter,) = [decode(v) for v in read_topic(log, DLQ)]
    assert letter.error_type == "teacher_error" and "poison" in letter.reason
    assert stage.stats.retries >= 2
    assert log.committed["teacher"] == {(PROMPTS, 0): 4}


def test_sink_failure_is_fatal_and_commits_nothing(backend) -> None:
    log = MemoryLog(partitions=1)
    produce_prompts(log, 4)
    stage = teacher_stage(log, backend)
    stage.sink.fail_next(1)
    with pytest.raises(Exception, match="injected"):
        stage.run_once()
    assert log.committed.get("teacher", {}) == {}
    # A restarted stage (same group) re-reads and labels everything.
    again = teacher_stage(log, backend)
    assert again.run_once() == 4


def labeled_log(backend, n: int) -> tuple[MemoryLog, list[str]]:
    log = MemoryLog(partitions=2)
    ids = produce_prompts(log, n)
    stage = teacher_stage(log, backend)
    while stage.run_once():
        pass
    return log, ids


def learner_stage(log: MemoryLog, tmp_path, clock, holdout_share: float = 0.0, **cfg
                  ) -> LearnerStage:
    lcfg = LearnerConfig(**{"batch_size": 8, "device": "cpu", "warmup_steps": 1,
                            "checkpoint_every_steps": 1, "checkpoint_dir": str(tmp_path),
                            "publish_every_steps": 2, **cfg})
    sink = MemorySink(log)
    return assemble_stage(MemorySource(log, [LABELS], group="learner"),
                          Learner(tiny_model(1), lcfg, pad_id=0), lcfg,
                          DeadLetterWriter(sink, DLQ, "learner"),
                          publisher=lambda lr, what: None, max_wait_s=1.0, clock=clock,
                          holdout_share=holdout_share)


def test_learner_trains_every_example_once_and_resumes_exactly(backend, tmp_path) -> None:
    log, ids = labeled_log(backend, 30)
    # A duplicate (a re-labeled prompt) and a malformed record in the labels topic.
    first = read_topic(log, LABELS)[0]
    log.append(LABELS, first)
    bad = log.append(LABELS, b"not a message")
    now = [0.0]
    stage = learner_stage(log, tmp_path, clock=lambda: now[0])
    stage.resume()
    for _ in range(3):  # 3 full batches of 8
        stage.run_once()
    assert stage.learner.step == 3 and stage.stats.checkpoints == 3
    trained_before = list(stage.trained_ids)
    # "Crash": a new stage with a fresh model resumes from the checkpoint.
    again = learner_stage(log, tmp_path, clock=lambda: now[0])
    assert again.resume() == 3
    for _ in range(5):
        now[0] += 2.0  # let the partial batch at the end train
        again.run_once()
    assert sorted(trained_before + again.trained_ids) == sorted(ids)
    assert again.stats.duplicates + stage.stats.duplicates >= 1
    # At-least-once: a record polled ahead of the checkpoint may be dead-lettered again
    # after the restart, but it is the same record every time.
    letters = [decode(v) for v in read_topic(log, DLQ)]
    assert {(d.error_type, d.partition, d.offset) for d in letters} == {
        ("bad_magic", bad.partition, bad.offset)}
    total = sum(len(p) for p in log.topics[LABELS])
    assert sum(log.committed["learner"].values()) == total


def test_offset_tracker_never_commits_past_an_unfinished_record() -> None:
    t = OffsetTracker()
    recs = [Record("t", 0, i, None, b"", -1) for i in range(4)]
    for r in recs:
        t.add(r)
    t.done(recs[1])
    t.done(recs[3])
    assert t.committable() == {("t", 0): 0}
    t.done(recs[0])
    assert t.committable() == {("t", 0): 2}
    t.done(recs[2])
    assert t.committable() == {("t", 0): 4} and t.in_flight == 0


def test_learner_stops_training_at_max_steps(backend, tmp_path) -> None:
    log, _ = labeled_log(backend, 40)
    stage = learner_stage(log, tmp_path, clock=lambda: 0.0, max_steps=2)
    for _ in range(5):
        stage.run_once(poll_timeout_s=0.0)
    assert stage.learner.step == 2 and stage.stats.fresh_trained == 16


def test_learner_never_trains_held_out_prompts_but_commits_them(backend, tmp_path) -> None:
    log, ids = labeled_log(backend, 40)
    held = {i for i in ids if held_out(i, 0.3)}
    assert 0 < len(held) < len(ids)
    now = [0.0]
    stage = learner_stage(log, tmp_path, clock=lambda: now[0], holdout_share=0.3)
    for _ in range(8):
        now[0] += 2.0
        stage.run_once(poll_timeout_s=0.0)
    stage.checkpoint()
    assert sorted(stage.trained_ids) == sorted(set(ids) - held)
    assert stage.stats.held_out == len(held)
    assert stage.stats.by_origin == {"traffic": len(ids) - len(held)}
    assert sum(log.committed["learner"].values()) == len(ids)
    snap = stage.stats.snapshot(step=stage.learner.step, skipped_steps=0,
                                pending=len(stage.pending), published=(), critics=None,
                                drift=None, lag=0)
    last = stage.stats.last_step
    assert last is not None and snap.loss == last.loss and snap.tokens == last.tokens
    assert snap.held_out == len(held) and snap.by_origin == stage.stats.by_origin
    assert snap.fresh_trained == len(ids) - len(held) and snap.checkpoints >= 1
