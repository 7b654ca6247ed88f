"""Build the gate's probes from the config."""

from __future__ import annotations

from online_distill.config import Config
from online_distill.gate.gate import ROLLING, Gate
from online_distill.gate.holdout import HoldoutBuffer
from online_distill.gate.probes import LabelProbe, Probe, TaskProbe
from online_distill.weights import WeightsStore


def build_holdout(cfg: Config) -> HoldoutBuffer:
    """Held-out live examples: a frozen first set only when the task has no probes of its own."""
    g = cfg.gate
    fixed = 0 if cfg.demo.enabled else g.probe_size
    return HoldoutBuffer(g.rolling_holdout_share, fixed, g.rolling_probe_size)


def build_gate(cfg: Config, store: WeightsStore, holdout: HoldoutBuffer) -> Gate:
    """The demo gates on its head and tail problems plus the rolling held-out traffic;
    any other task on a frozen and a rolling set of held-out traffic."""
    g = cfg.gate
    probes: list[Probe] = []
    if cfg.demo.enabled:
        from online_distill.tasks.probes import probe_set

        probes += [TaskProbe(name, probe_set(name, size=g.probe_size))
                   for name in ("head", "tail")]
    else:
        probes.append(LabelProbe("holdout", lambda: holdout.fixed,
                                 lambda: min(len(holdout.fixed), holdout.fixed_size),
                                 min_examples=g.min_probe_examples))
    if g.rolling_probe_size > 0:
        probes.append(LabelProbe(ROLLING, lambda: list(holdout.rolling),
                                 lambda: holdout.generation, min_examples=g.min_probe_examples))
    return Gate(store, probes, g.tolerance, g.nll_tolerance, confidence=g.confidence,
                enabled=g.enabled, fixed_slack=g.fixed_probe_slack)
