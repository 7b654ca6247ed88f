"""Freshness first under overload (``learner.max_lag_s``): a learner slower than its teachers
skips stale and overrun examples, counted by reason, and loses nothing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from online_distill.config import LearnerConfig
from online_distill.learner.build import assemble_stage
from online_distill.learner.intake import FreshnessPolicy
from online_distill.learner.stage import LearnerStage
from online_distill.learner.trainer import Learner
from online_distill.messages import LabeledExample, decode, encode
from online_distill.streams import DeadLetterWriter, MemoryLog, MemorySink, MemorySource
from online_distill.teachers.hf import HFTeacher
from tests.unit.test_learner import TOKENIZER, tiny_model
from tests.unit.test_stages import LABELS, labeled_log, read_topic

DLQ = "dead"
BORN = 1_000.0
"""The first example was labeled at this (fake) unix time, one per second; their prompts
are all 500 s older (a teacher that lagged: not the learner's backlog, not skipped)."""


@pytest.fixture(scope="module")
def examples() -> list[LabeledExample]:
    backend = HFTeacher(tiny_model(100, layers=2, width=48), device="cpu", tokenizer=TOKENIZER,
                        teacher_id="tiny")
    log, _ = labeled_log(backend, 100)
    got = [decode(v, LabeledExample) for v in read_topic(log, LABELS)]
    return [dataclasses.replace(ex, created_at=BORN + i, prompt_created_at=BORN + i - 500)
            for i, ex in enumerate(got)]


def stage_on(examples: list[LabeledExample], tmp_path: Path, now: float, max_lag_s: float
             ) -> tuple[MemoryLog, LearnerStage]:
    log = MemoryLog(partitions=1)  # one partition: the stream's order is the examples' order
    for ex in examples:
        log.append(LABELS, encode(ex), key=ex.prompt_id.encode())
    cfg = LearnerConfig(batch_size=8, device="cpu", warmup_steps=1, checkpoint_every_steps=1,
                        checkpoint_dir=str(tmp_path), publish_every_steps=1000,
                        max_lag_s=max_lag_s)
    stage = assemble_stage(MemorySource(log, [LABELS], group="learner"),
                           Learner(tiny_model(1), cfg, pad_id=0), cfg,
                           DeadLetterWriter(MemorySink(log), DLQ, "learner"),
                           max_wait_s=0.0, clock=lambda: 0.0, wall_clock=lambda: now)
    return log, stage


def drain(stage: LearnerStage, log: MemoryLog, total: int) -> None:
    """Run until every record is read and nothing waits (bounded: each call reads or trains)."""
    for _ in range(10 * total):
        stage.run_once(poll_timeout_s=0.0)
        if stage.stats.polled == total and not stage.pending:
            return
    pytest.fail(f"polled {stage.stats.polled} of {total}, {len(stage.pending)} waiting")


def test_stale_examples_are_skipped_counted_and_committed(examples: list[LabeledExample],
                                                         tmp_path: Path) -> None:
    # "Now" is 100 s after the first prompt: with max_lag_s 30, the first 70 are stale.
    log, stage = stage_on(examples, tmp_path, now=BORN + 100, max_lag_s=30)
    drain(stage, log, len(examples))
    s = stage.stats
    assert (s.stale, s.overrun) == (70, 0)
    assert sorted(stage.trained_ids) == sorted(ex.prompt_id for ex in examples[70:])
    assert s.stale + s.fresh_trained == len(examples)  # every example: trained or counted
    stage.checkpoint()
    assert sum(log.committed["learner"].values()) == len(examples)  # handled, so committed
    assert len(read_topic(log, LABELS)) == len(examples)  # and still in the topic (export)
    snap = s.snapshot(step=stage.learner.step, skipped_steps=0, pending=0, published=(),
                      critics=None, drift=None)
    assert (snap.stale, snap.overrun) == (70, 0)


def test_a_learner_that_cannot_keep_up_trains_the_newest_and_skips_the_oldest(
        examples: list[LabeledExample], tmp_path: Path) -> None:
    log, stage = stage_on(examples, tmp_path, now=BORN + 100, max_lag_s=1e6)
    waiting = []
    for _ in range(1000):
        stage.run_once(poll_timeout_s=0.0)
        waiting.append(len(stage.pending))
        if stage.stats.polled == len(examples) and not stage.pending:
            break
    s = stage.stats
    assert max(waiting) <= 4 * 8  # bounded: at most 4 batches wait
    assert s.overrun > 0 and s.stale == 0
    assert s.overrun + s.fresh_trained == len(examples)
    assert examples[-1].prompt_id in stage.trained_ids  # the newest always trains
    stage.checkpoint()
    assert sum(log.committed["learner"].values()) == len(examples)


def test_off_by_default_trains_everything_in_order(examples: list[LabeledExample],
                                                   tmp_path: Path) -> None:
    assert LearnerConfig().max_lag_s == 0
    log, stage = stage_on(examples, tmp_path, now=BORN + 1e6, max_lag_s=0)
    drain(stage, log, len(examples))
    assert stage.trained_ids == [ex.prompt_id for ex in examples]
    assert (stage.stats.stale, stage.stats.overrun) == (0, 0)


def test_the_policy_alone() -> None:
    exs = [(i, type("E", (), {"prompt_created_at": 0.0, "created_at": float(i)})())
           for i in range(10)]
    kept, skipped = FreshnessPolicy(5.0, 3, lambda: 10.0).split(exs)  # type: ignore[arg-type]
    assert [i for i, _ in kept] == [7, 8, 9]
    assert [(i, why) for (i, _), why in skipped] == [(0, "stale"), (1, "stale"), (2, "stale"),
                                                     (3, "stale"), (4, "stale"),
                                                     (5, "overrun"), (6, "overrun")]
    assert FreshnessPolicy(0.0, 3, lambda: 10.0).split(exs) == (exs, [])  # type: ignore[arg-type]


def test_a_snapshot_during_a_step_counts_its_batch_in_step(examples: list[LabeledExample],
                                                         tmp_path: Path) -> None:
    """Accounting taken while a step runs (another thread asks for a snapshot): the batch
    left ``pending`` but is not trained yet; ``in_step`` covers it, so nothing looks lost."""
    log, stage = stage_on(examples, tmp_path, now=BORN + 100, max_lag_s=0)
    seen: list[tuple[int, int, int, int]] = []
    step = stage.learner.train_step

    def observed(batch: list[LabeledExample]):  # type: ignore[no-untyped-def]
        s = stage.stats
        seen.append((s.polled, s.fresh_trained, len(stage.pending), s.in_step))
        return step(batch)

    stage.learner.train_step = observed  # type: ignore[method-assign]
    drain(stage, log, len(examples))
    assert seen and all(polled == trained + pending + in_step and 0 < in_step <= 8
                        for polled, trained, pending, in_step in seen), seen
    assert stage.stats.in_step == 0 and stage.stats.fresh_trained == len(examples)


def test_publish_every_s_publishes_by_the_clock_between_step_counts(
        examples: list[LabeledExample], tmp_path: Path) -> None:
    log = MemoryLog(partitions=1)
    for ex in examples:
        log.append(LABELS, encode(ex), key=ex.prompt_id.encode())
    cfg = LearnerConfig(batch_size=8, device="cpu", warmup_steps=1, checkpoint_every_steps=100,
                        checkpoint_dir=str(tmp_path), publish_every_steps=1000,
                        publish_every_s=5.0)
    now = [0.0]
    published: list[int] = []
    stage = assemble_stage(MemorySource(log, [LABELS], group="learner"),
                           Learner(tiny_model(1), cfg, pad_id=0), cfg,
                           DeadLetterWriter(MemorySink(log), DLQ, "learner"),
                           publisher=lambda learner, _pub: published.append(learner.step),
                           max_wait_s=0.0, clock=lambda: now[0])
    for _ in range(12):  # one step per call, 2 s apart: a version every third step
        now[0] += 2.0
        stage.run_once(poll_timeout_s=0.0)
    assert stage.learner.step == 12 and published == [3, 6, 9, 12], published
