"""The demo: synthetic arithmetic traffic with a head-heavy mix and a scheduled drift."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .base import check_range, fail, show, suggest
from .coerce import normalize_fields

DEMO_KINDS: tuple[str, ...] = ("add2", "add3", "sub2", "mul")
"""Prompt kinds of the demo task: add2 is the head (two-digit addition); add3, sub2 and
mul are the tails. online_distill.tasks generates exactly these kinds."""


def _traffic_mix() -> dict[str, float]:
    return {"add2": 0.9, "add3": 0.04, "sub2": 0.03, "mul": 0.03}


def _drift_mix() -> dict[str, float]:
    return {"add2": 0.3, "sub2": 0.6, "add3": 0.05, "mul": 0.05}


def check_mix(name: str, mix: Mapping[str, float]) -> None:
    """Check a kind -> weight mix: non-empty, known kinds, weights >= 0 summing to > 0."""
    if not mix:
        fail(name, dict(mix), f"must name at least one kind of {show(DEMO_KINDS)}")
    for kind, weight in mix.items():
        if kind not in DEMO_KINDS:
            fail(
                f"{name}.{kind}",
                weight,
                f"unknown demo kind '{kind}'"
                f"{suggest(kind, DEMO_KINDS)}; the kinds are {show(DEMO_KINDS)}",
            )
        if weight < 0:
            fail(f"{name}.{kind}", weight, "weights must be >= 0 (they are normalised)")
    if sum(mix.values()) <= 0:
        fail(name, dict(mix), "weights must sum to more than 0")


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """The built-in traffic generator of the demo task (arithmetic with exact answers)."""

    enabled: bool = True
    """Produce synthetic demo prompts into the prompts topic while the daemon runs."""

    traffic_rate_per_s: float = 50.0
    """Prompts produced per second."""

    seed: int = 0
    """Seed of the traffic generator (same seed, same prompt stream)."""

    traffic_mix: dict[str, float] = field(default_factory=_traffic_mix)
    """Weight of each prompt kind before the drift (normalised to sum 1); mostly the head
    kind add2 with rare tails."""

    drift_mix: dict[str, float] = field(default_factory=_drift_mix)
    """Weight of each prompt kind after the drift (normalised to sum 1)."""

    drift_after_prompts: int = 3000
    """Prompts produced before traffic switches from traffic_mix to drift_mix; 0 never drifts."""

    max_prompts: int = 0
    """Prompts produced in all before the generator stops (the loop goes on); 0 never stops.
    A finite stream bounds the work behind it: the learner catches up with all of it, on
    any machine, however slow."""

    duration_s: float = 180.0
    """Seconds the generator runs before it stops producing; 0 runs until stopped."""

    def __post_init__(self) -> None:
        normalize_fields(self)
        check_range(self, "traffic_rate_per_s", gt=0, le=100000, fix="a typical value is 50")
        check_range(self, "seed", ge=0, fix="any non-negative integer")
        check_mix("traffic_mix", self.traffic_mix)
        check_mix("drift_mix", self.drift_mix)
        check_range(self, "drift_after_prompts", ge=0, fix="0 never drifts")
        check_range(self, "duration_s", ge=0, fix="0 runs until stopped")
        check_range(self, "max_prompts", ge=0, fix="0 never stops")
