"""A non-finite step trains nothing: its examples are retried, the ones whose loss alone is
not finite are dead-lettered, and broken weights are fatal (restart from the checkpoint)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from online_distill.learner.stats import NonFiniteWeights
from online_distill.messages import LabeledExample, decode, encode
from tests.unit.test_stages import (  # noqa: F401 - backend is a fixture
    DLQ,
    LABELS,
    MemoryLog,
    backend,
    labeled_log,
    learner_stage,
    read_topic,
)


def poisoned(example: LabeledExample) -> LabeledExample:
    """The example with a teacher that gives zero mass to every token: under reverse KL its
    loss is infinite (a valid message, as a broken teacher could send)."""
    pts = []
    for pt in example.pseudo_targets:
        lp = pt.topk_logprobs_array().copy()
        lp[:] = -np.inf
        pts.append(dataclasses.replace(pt, topk_logprobs=lp,
                                       tail_logmass=[-np.inf] * pt.num_tokens))
    return dataclasses.replace(example, pseudo_targets=tuple(pts))


def test_a_poisoned_example_is_dead_lettered_and_its_batch_trains_next_step(
        backend, tmp_path) -> None:  # noqa: F811
    log, ids = labeled_log(backend, 16)
    bad = poisoned(decode(read_topic(log, LABELS)[3], LabeledExample))
    assert decode(encode(bad), LabeledExample).pseudo_targets[0].num_tokens > 0  # it travels
    poisoned_log = MemoryLog(partitions=1)
    for value in read_topic(log, LABELS):
        ex = decode(value, LabeledExample)
        poisoned_log.append(LABELS, encode(bad if ex.prompt_id == bad.prompt_id else ex))
    now = [0.0]
    stage = learner_stage(poisoned_log, tmp_path, clock=lambda: now[0], loss="reverse_kl")
    stats = stage.run_once(poll_timeout_s=0.0)
    assert stats is not None and stats.skipped
    assert stage.learner.step == 0 and stage.trained_ids == []
    assert stage.stats.non_finite_steps == 1 and stage.stats.non_finite_dropped == 1
    for _ in range(3):
        now[0] += 2.0
        stage.run_once(poll_timeout_s=0.0)
    assert sorted(stage.trained_ids) == sorted(set(ids) - {bad.prompt_id})
    assert stage.learner.step == 2 and stage.stats.non_finite_steps == 1
    letters = [decode(v) for v in read_topic(poisoned_log, DLQ)]
    assert [(d.error_type, d.offset) for d in letters] == [("non_finite", 3)]
    assert bad.prompt_id in letters[0].reason and "not finite" in letters[0].reason
    assert sum(poisoned_log.committed["learner"].values()) == 16  # all accounted for


def test_a_transient_non_finite_step_retries_every_example(backend, tmp_path) -> None:  # noqa: F811
    log, ids = labeled_log(backend, 8)
    stage = learner_stage(log, tmp_path, clock=lambda: 0.0)
    real = stage.learner._loss
    calls = [0]

    def nan_once(*args, **kwargs):
        calls[0] += 1
        loss, parts, values = real(*args, **kwargs)
        return (loss * float("nan") if calls[0] == 1 else loss), parts, values

    stage.learner._loss = nan_once  # type: ignore[method-assign]
    assert stage.run_once(poll_timeout_s=0.0).skipped
    assert stage.trained_ids == [] and len(stage.pending) == 8
    assert not stage.run_once(poll_timeout_s=0.0).skipped
    assert sorted(stage.trained_ids) == sorted(ids) and stage.learner.step == 1
    assert read_topic(log, DLQ) == []


def test_non_finite_weights_are_fatal_and_commit_nothing(backend, tmp_path) -> None:  # noqa: F811
    log, _ = labeled_log(backend, 16)
    stage = learner_stage(log, tmp_path, clock=lambda: 0.0)
    stage.run_once(poll_timeout_s=0.0)
    committed = dict(log.committed["learner"])
    with torch.no_grad():
        next(stage.learner.model.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(NonFiniteWeights, match="restarts from its last checkpoint"):
        stage.run_once(poll_timeout_s=0.0)
    assert log.committed["learner"] == committed and len(stage.trained_ids) == 8
