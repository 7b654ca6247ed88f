"""The evaluation gate: a published student is served only if it is not worse.

For each new candidate version the gate scores the candidate and the promoted version on
the same probe items (see :mod:`online_distill.gate.probes`) and refuses the candidate if
any metric is *confidently* worse by more than its tolerance: an absolute ``tolerance`` for
fractions (exact-match, agreement), a relative ``nll_tolerance`` for NLL.

"Confidently" is a paired one-sided test: with d_i the candidate's minus the baseline's
value on item i, the candidate is refused when the upper confidence bound of the mean
regression, mean(-d) - z * sd(d) / sqrt(n) (z from ``confidence``; 0.95 gives 1.645), is
still above the tolerance. Without it a 200-item probe refuses good students for 1-2 items
of noise (2.5% vs 0% on rare kinds early in training), and the served student goes stale;
with it a real regression (a damaged or diverged candidate) is still refused at once.
``confidence=0.5`` (z = 0) compares the means alone. Before anything is served, the first
candidate with finite weights is promoted (anything beats nothing).
Only the newest unevaluated version is gated; older ones it skips are marked superseded.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from online_distill.gate.probes import HIGHER_IS_BETTER, ItemScores, Probe
from online_distill.weights import WeightsStore

log = logging.getLogger("online_distill.gate")

Decision = Literal["promoted", "refused", "superseded"]
ROLLING = "rolling"
"""The probe of recent held-out traffic (see :func:`online_distill.gate.build.build_gate`)."""


@dataclass(frozen=True)
class Verdict:
    """What the gate decided about one version and why."""

    version: int
    decision: Decision
    baseline: int | None
    """The promoted version it was compared with (None: nothing was served)."""
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    baseline_scores: dict[str, dict[str, float]] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0
    at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _regression_bound(cand: Sequence[float], base: Sequence[float], higher_better: bool,
                      z: float) -> float:
    """Lower confidence bound of how much worse the candidate is (in the metric's units)."""
    sign = 1.0 if higher_better else -1.0
    worse = [sign * (b - c) for c, b in zip(cand, base, strict=True)]  # > 0: candidate worse
    n = len(worse)
    spread = statistics.stdev(worse) if n > 1 else 0.0
    return mean(worse) - z * spread / math.sqrt(n)


def regressions(candidate: dict[str, ItemScores], baseline: dict[str, ItemScores],
                tolerance: float, nll_tolerance: float, confidence: float = 0.95,
                scale: dict[str, float] | None = None) -> list[str]:
    """Human-readable reasons, one per metric confidently worse beyond its tolerance.

    ``scale`` multiplies both tolerances per probe (default 1): the gate widens them for
    the fixed probes while the rolling probe of today's traffic is scored.
    """
    z = statistics.NormalDist().inv_cdf(confidence)
    reasons = []
    for probe, metrics in candidate.items():
        k = (scale or {}).get(probe, 1.0)
        for metric, values in metrics.items():
            old = baseline.get(probe, {}).get(metric)
            if old is None or len(old) != len(values) or not values:
                continue  # the baseline was not scored on these items
            new_mean, old_mean = mean(values), mean(old)
            name = f"{probe}/{metric} {new_mean:.4f} vs {old_mean:.4f}"
            if not all(math.isfinite(v) for v in values):
                reasons.append(f"{name}: not finite")
                continue
            higher = HIGHER_IS_BETTER.get(metric, True)
            allowed = k * (tolerance if higher else nll_tolerance * abs(old_mean))
            bound = _regression_bound(values, old, higher, z)
            if bound > allowed:
                reasons.append(f"{name}: worse by at least {bound:.4f} (allowed {allowed:.4f}, "
                               f"{confidence:.0%} confidence, n={len(values)})")
    return reasons


def summary(scores: dict[str, ItemScores]) -> dict[str, dict[str, float]]:
    """Mean of each metric per probe (what a verdict records and the CLI shows)."""
    return {p: {m: mean(v) for m, v in ms.items()} for p, ms in scores.items()}


def finite_weights(model: PreTrainedModel) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


class Gate:
    """Decides, for each new version in ``store``, whether it replaces the served one."""

    def __init__(self, store: WeightsStore, probes: Sequence[Probe], tolerance: float,
                 nll_tolerance: float, confidence: float = 0.95, enabled: bool = True,
                 device: str = "cpu", fixed_slack: float = 1.0) -> None:
        self.store, self.probes = store, list(probes)
        self.tolerance, self.nll_tolerance = tolerance, nll_tolerance
        self.confidence = confidence
        self.fixed_slack = fixed_slack
        self.enabled, self.device = enabled, device
        self.counts: Counter[str] = Counter()
        """Decisions since start: promoted, refused, superseded, and refused/<probe>/<metric>."""
        self.last: Verdict | None = None
        self.recent: deque[dict[str, Any]] = deque(maxlen=256)
        """Verdicts not yet exported (drained by the metrics exporter)."""
        self._cache: dict[tuple[int, str], ItemScores] = {}
        self._judged: int | None = None  # newest judged version; read from disk once
        self._held: tuple[int, PreTrainedModel, PreTrainedTokenizerBase] | None = None
        """The promoted version's model, kept loaded: it is every candidate's baseline."""

    def pending(self) -> list[int]:
        """Versions newer than every judged one (and the promoted one), oldest first."""
        versions = self.store.versions()
        if self._judged is None:  # after a restart: the verdicts on disk say how far it got
            self._judged = max((v for v in versions if self.store.verdict(v) is not None),
                               default=0)
        floor = max(self._judged, self.store.promoted() or 0)
        return [v for v in versions if v > floor]

    def step(self) -> Verdict | None:
        """Judge the newest pending version (marking older pending ones superseded)."""
        todo = self.pending()
        if not todo:
            return None
        newest = todo[-1]
        for v in todo[:-1]:
            self._record(Verdict(v, "superseded", self.store.promoted(),
                                 reasons=[f"superseded by v{newest} before it was judged"]))
        return self.judge(newest)

    def judge(self, version: int) -> Verdict:
        started = time.monotonic()
        baseline = self.store.promoted()
        model, tokenizer = self.store.load(version, self.device)
        if not finite_weights(model):
            verdict = Verdict(version, "refused", baseline,
                              reasons=["weights contain NaN or infinity"])
        elif not self.enabled:
            verdict = Verdict(version, "promoted", baseline, reasons=["gate disabled"])
        elif baseline is None:
            scores = self.scores(version, model, tokenizer)
            verdict = Verdict(version, "promoted", None, summary(scores),
                              reasons=["nothing was served yet"])
        else:
            scores = self.scores(version, model, tokenizer)
            base_scores = self.scores(baseline, *self._load(baseline))
            reasons = regressions(scores, base_scores, self.tolerance, self.nll_tolerance,
                                  self.confidence, self._scale(scores))
            verdict = Verdict(version, "refused" if reasons else "promoted", baseline,
                              summary(scores), summary(base_scores), reasons)
        verdict = Verdict(**{**asdict(verdict), "seconds": time.monotonic() - started})
        self._record(verdict)
        if verdict.decision == "promoted":
            self._held = (version, model, tokenizer)
        return verdict

    def _load(self, version: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """The promoted version's model: from memory, or loaded once and then kept."""
        if self._held is None or self._held[0] != version:
            self._held = (version, *self.store.load(version, self.device))
        return self._held[1], self._held[2]

    def _scale(self, scores: dict[str, ItemScores]) -> dict[str, float]:
        """Fixed probes guard against damage; once the rolling probe (today's traffic) is
        scored, they allow ``fixed_slack`` times the tolerance, so that after a drift a
        student that serves today's traffic better is not held back by yesterday's mix."""
        if ROLLING not in scores:
            return {}
        return {name: self.fixed_slack for name in scores if name != ROLLING}

    def scores(self, version: int, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
               ) -> dict[str, ItemScores]:
        """Scores of a version on every ready probe (cached per probe content)."""
        out = {}
        for probe in self.probes:
            if not probe.ready():
                continue
            key = (version, probe.fingerprint())
            if key not in self._cache:
                self._cache[key] = probe.score(model, tokenizer)
            out[probe.name] = self._cache[key]
        live = {(v, fp) for v, fp in self._cache if v in (version, self.store.promoted())}
        self._cache = {k: s for k, s in self._cache.items() if k in live}
        return out

    def _record(self, verdict: Verdict) -> None:
        self.store.record_verdict(verdict.version, verdict.to_dict())
        self._judged = max(self._judged or 0, verdict.version)
        self.counts[verdict.decision] += 1
        self.last = verdict
        self.recent.append(verdict.to_dict())
        if verdict.decision == "promoted":
            self.store.promote(verdict.version, reason="gate", by="gate")
            log.info("gate: promoted v%d (%s)", verdict.version,
                     "; ".join(verdict.reasons) or _brief(verdict.scores))
        elif verdict.decision == "refused":
            for reason in verdict.reasons:
                self.counts["refused/" + reason.split(" ", 1)[0].rstrip(":")] += 1
            log.warning("gate: refused v%d, still serving v%s: %s", verdict.version,
                        verdict.baseline, "; ".join(verdict.reasons))


def _brief(scores: dict[str, dict[str, float]]) -> str:
    return ", ".join(f"{p}/{m}={v:.3f}" for p, ms in scores.items() for m, v in ms.items())
