"""NaN mid-stream: a training step whose loss turns NaN (twice), and weights that turn NaN
(once), injected into the running learner actor.

A NaN step takes no update and trains nothing: its examples wait for the next step (each
one's loss alone is finite, so none is dead-lettered). NaN weights are fatal: the learner
exits, Ray restarts it from its last checkpoint, and it reads its uncommitted input again.
Goal: 0 prompts lost, 0 dead letters, duplicates at most one batch per restart, and the
learner trains again after each fault by itself.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")
cloudpickle = pytest.importorskip("ray.cloudpickle")

from harness import Fault, run_scenario  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.faults]
BATCH = 32
# The injections run inside the learner actor: they travel by value (this module is not
# importable there).
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _nan_loss_once(actor: Any) -> None:
    learner = actor.stage.learner
    real = learner._loss

    def once(*args: Any, **kwargs: Any) -> Any:
        del learner._loss  # back to the class's method: only this step is hit
        loss, parts, values = real(*args, **kwargs)
        return loss * float("nan"), parts, values

    learner._loss = once


def _nan_weights(actor: Any) -> None:
    import torch

    with torch.no_grad():
        next(actor.stage.learner.model.parameters()).view(-1)[0] = float("nan")


def inject(fn: Any):
    def action(sup: Any) -> None:
        ray.get(sup.loop.learner.__ray_call__.remote(fn), timeout=60)
    return action


def test_nan_steps_and_nan_weights_lose_nothing(tmp_path: Path) -> None:
    steps = ("learner", "step")
    faults = [Fault(14.0, "NaN loss", inject(_nan_loss_once), steps),
              Fault(24.0, "NaN weights", inject(_nan_weights), steps),
              Fault(40.0, "NaN loss", inject(_nan_loss_once), steps)]
    seen: dict[str, Any] = {}

    def check(sup: Any, _out: Any) -> None:
        seen.update(asdict(sup.snapshot().learner))

    out = run_scenario("nan-batches", tmp_path, faults, prompts=2000, rate=40, check=check)
    assert out.lost == 0, out
    assert out.trained == out.prompts_in == 2000, out
    assert out.dead_letters == 0, out
    assert out.duplicates <= BATCH, out  # one restart (the NaN weights)
    # The learner instance alive at the end saw the last NaN step (the weights fault
    # restarted it before).
    assert seen.get("non_finite_steps", 0) >= 1, seen
    assert len(out.recovery_s) == 3
