"""Backend outages in the teacher stage, and a full checkpoint disk in the learner stage."""

from __future__ import annotations

import pytest

from online_distill.messages import LabeledExample, PromptMessage, decode, encode
from online_distill.streams import MemoryLog
from online_distill.teachers.hf import HFTeacher
from tests.unit.test_learner import TOKENIZER, tiny_model
from tests.unit.test_stages import (
    DLQ,
    LABELS,
    PROMPTS,
    labeled_log,
    learner_stage,
    produce_prompts,
    read_topic,
    teacher_stage,
)


@pytest.fixture(scope="module")
def backend() -> HFTeacher:
    return HFTeacher(tiny_model(100, layers=2, width=48), device="cpu", tokenizer=TOKENIZER,
                     teacher_id="tiny")


class DownBackend:
    """Fails every call while ``down``; 'poison' prompts (containing 666) always fail."""

    teacher_id = "down"
    tokenizer = TOKENIZER

    def __init__(self, inner: HFTeacher) -> None:
        self.inner, self.down, self.calls = inner, True, 0

    def label(self, prompt_ids, request):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.down:
            raise ConnectionError("teacher server unreachable")
        if any("666" in TOKENIZER.decode(p) for p in prompt_ids):
            raise ValueError("poison prompt")
        return self.inner.label(prompt_ids, request)

    def score(self, *a):  # type: ignore[no-untyped-def]
        return self.inner.score(*a)


def test_an_outage_holds_the_batch_and_loses_nothing(backend) -> None:
    log = MemoryLog(partitions=1)
    ids = produce_prompts(log, 6)
    down = DownBackend(backend)
    waits: list[float] = []
    stage = teacher_stage(log, down, max_retries=1)
    stage.sleep = waits.append
    for _ in range(4):  # the backend is down: nothing is labeled, dead-lettered or committed
        stage.run_once(poll_timeout_s=0.0)
    assert read_topic(log, LABELS) == [] and read_topic(log, DLQ) == []
    assert not log.committed.get("teacher")
    assert stage.stats.outages == 1
    assert [w for w in waits if w > 0] == [0.5, 1.0, 2.0, 4.0]  # doubling
    down.down = False
    while stage.run_once(poll_timeout_s=0.0):
        pass
    labeled = {decode(v, LabeledExample).prompt_id for v in read_topic(log, LABELS)}
    assert labeled == set(ids)
    assert read_topic(log, DLQ) == []
    assert log.committed["teacher"] == {(PROMPTS, 0): 6}
    more = produce_prompts(log, 3)  # the partitions were resumed: new prompts flow again
    while stage.run_once(poll_timeout_s=0.0):
        pass
    assert {decode(v, LabeledExample).prompt_id for v in read_topic(log, LABELS)} == set(
        ids + more)


def test_prompts_that_fail_while_the_backend_answers_are_dead_lettered(backend) -> None:
    log = MemoryLog(partitions=1)
    for text in ("666+1=", "1+666="):
        log.append(PROMPTS, encode(PromptMessage(text=text)))
    down = DownBackend(backend)
    down.down = False
    stage = teacher_stage(log, down, max_retries=0)
    stage.run_once(poll_timeout_s=0.0)
    letters = [decode(v) for v in read_topic(log, DLQ)]
    assert [d.error_type for d in letters] == ["teacher_error"] * 2
    assert stage.stats.outages == 0 and log.committed["teacher"] == {(PROMPTS, 0): 2}


def test_a_failed_checkpoint_commits_nothing_and_training_goes_on(backend, tmp_path,
                                                                   monkeypatch) -> None:
    log, ids = labeled_log(backend, 40)
    stage = learner_stage(log, tmp_path, clock=lambda: 0.0, checkpoint_every_steps=1)
    real_save = stage.learner.save

    def full_disk(*a, **k):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(stage.learner, "save", full_disk)
    assert stage.run_once(poll_timeout_s=0.0) is not None  # a step, then a failed checkpoint
    assert stage.stats.checkpoint_failures == 1 and stage.stats.checkpoints == 0
    assert not log.committed.get("learner")
    monkeypatch.setattr(stage.learner, "save", real_save)  # space again
    assert stage.run_once(poll_timeout_s=0.0) is not None
    assert stage.stats.checkpoints == 1 and sum(log.committed["learner"].values()) > 0
