"""Kill a stage's actor several times mid-stream, at seeded random points; Ray restarts it
and the loop goes on. Goal: 0 prompts lost, duplicates at most one batch per learner
restart, recovery by itself (the killed actor makes progress again)."""

from __future__ import annotations

from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from harness import Fault, run_scenario, seeded_times  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.faults]
BATCH = 32


def kill(target: str):
    def action(sup) -> None:
        loop = sup.loop
        handle = {"learner": loop.learner, "gate": loop.gate, "ood": loop.ood}.get(target)
        if handle is None:
            handle = loop.teachers[int(target.split("-")[1])]
        ray.kill(handle, no_restart=False)  # Ray restarts it (max_restarts=-1)
    return action


SCENARIOS = {
    "teacher-0": (("teacher-0", "labeled"), [], 11),
    "learner": (("learner", "step"), [], 12),
    "gate": (("gate", "judged"), ["learner.publish_every_steps=5"], 13),
    "ood": (("ood", "scored"), ["ood.enabled=true", "ood.min_window=50",
                                "ood.feedback_interval_s=2", "teacher.num_cpus=0.25",
                                "learner.num_cpus=0.25", "ood.num_cpus=0.25"], 14),
}


SLOW = {"gate", "ood"}  # left out of `make test` (each a few minutes): `make faults` runs them


@pytest.mark.parametrize("target", [
    pytest.param(t, marks=[pytest.mark.slow_fault] if t in SLOW else []) for t in SCENARIOS])
def test_killed_actor_recovers_and_nothing_is_lost(target: str, tmp_path: Path) -> None:
    watch, extra, seed = SCENARIOS[target]
    times = seeded_times(seed, 3, 12, 42)
    out = run_scenario(f"kill-{target}", tmp_path,
                       [Fault(t, f"kill {target}", kill(target), watch) for t in times],
                       extra=extra, prompts=2400, rate=40)
    assert out.lost == 0, out
    assert out.trained == out.prompts_in == 2400
    restarts = len(times) if target == "learner" else 0
    assert out.duplicates <= BATCH * restarts, out
    assert len(out.recovery_s) == 3
