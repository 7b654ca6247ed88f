"""Demo traffic: a seeded, head-heavy stream of arithmetic prompts with a scheduled drift.

Before the drift, prompts follow ``mix`` (by default 90% ``add2``, rare tails); after
``drift_after`` prompts the mix moves to ``drift_mix`` (linearly over ``drift_ramp`` prompts,
0 = a step change). Everything is a pure function of the seed and the prompt count, so
accuracy, tail accuracy and drift are exactly measurable and reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from online_distill.tasks.arithmetic import KINDS, Kind, Problem, sample_problem

DEFAULT_MIX: dict[str, float] = {"add2": 0.9, "add3": 0.04, "sub2": 0.03, "mul": 0.03}
DEFAULT_DRIFT_MIX: dict[str, float] = {"add2": 0.3, "sub2": 0.6, "add3": 0.05, "mul": 0.05}


def check_mix(mix: Mapping[str, float], name: str = "mix") -> dict[Kind, float]:
    """Validate a kind -> weight mapping and return it normalised to sum 1.

    Raises ValueError naming the bad key or weight and the allowed kinds.
    """
    if not mix:
        raise ValueError(f"{name} is empty: give at least one of {', '.join(KINDS)} a weight")
    out: dict[Kind, float] = {}
    for key, weight in mix.items():
        if key not in KINDS:
            raise ValueError(f"{name} has unknown kind {key!r}: use one of {', '.join(KINDS)}")
        if not weight >= 0:  # also rejects NaN
            raise ValueError(f"{name}[{key!r}] = {weight}: weights must be >= 0")
        out[key] = float(weight)  # type: ignore[index]
    total = sum(out.values())
    if total <= 0:
        raise ValueError(f"{name} weights sum to {total}: at least one must be > 0")
    return {k: w / total for k, w in out.items()}


@dataclass(frozen=True, slots=True)
class TrafficItem:
    """One generated prompt with its ground truth (kept by the demo, never sent to Kafka)."""

    index: int
    problem: Problem
    drifted: bool

    @property
    def text(self) -> str:
        return self.problem.prompt


class DemoTraffic:
    """Iterator of :class:`TrafficItem` following the mix and its drift schedule."""

    def __init__(
        self,
        mix: Mapping[str, float] = DEFAULT_MIX,
        drift_mix: Mapping[str, float] = DEFAULT_DRIFT_MIX,
        drift_after: int = 3000,
        drift_ramp: int = 0,
        seed: int = 0,
    ) -> None:
        if drift_after < 0 or drift_ramp < 0:
            raise ValueError(
                f"drift_after={drift_after}, drift_ramp={drift_ramp}: both must be >= 0"
            )
        self.mix = check_mix(mix, "mix")
        self.drift_mix = check_mix(drift_mix, "drift_mix")
        self.drift_after = drift_after
        self.drift_ramp = drift_ramp
        self._rng = random.Random(seed)
        self._count = 0

    def drift_fraction(self, index: int) -> float:
        """How far the mix has moved towards ``drift_mix`` at prompt ``index`` (0..1)."""
        if self.drift_after == 0 or index < self.drift_after:
            return 0.0
        if self.drift_ramp == 0:
            return 1.0
        return min(1.0, (index - self.drift_after + 1) / self.drift_ramp)

    def weights_at(self, index: int) -> dict[Kind, float]:
        """The kind distribution in force at prompt ``index``."""
        f = self.drift_fraction(index)
        return {
            k: (1 - f) * self.mix.get(k, 0.0) + f * self.drift_mix.get(k, 0.0) for k in KINDS
        }

    def __iter__(self) -> Iterator[TrafficItem]:
        return self

    def __next__(self) -> TrafficItem:
        index = self._count
        self._count += 1
        weights = self.weights_at(index)
        kind = self._rng.choices(KINDS, weights=[weights[k] for k in KINDS])[0]
        problem = sample_problem(kind, self._rng)
        return TrafficItem(index, problem, self.drift_fraction(index) > 0)

    def take(self, n: int) -> list[TrafficItem]:
        """The next ``n`` items."""
        return [next(self) for _ in range(n)]
