"""The evaluation gate: a published student is served only if it is not worse.

For each new candidate version the gate scores the candidate and the promoted version on
the same probes (see :mod:`online_distill.gate.probes`) and refuses the candidate if any
metric regresses by more than its tolerance: an absolute ``tolerance`` for fractions
(exact-match, agreement) and a relative ``nll_tolerance`` for NLL. Before anything is
served, the first candidate with finite weights is promoted (anything beats nothing).
Only the newest unevaluated version is gated; older ones it skips are marked superseded.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from online_distill.gate.probes import HIGHER_IS_BETTER, Probe
from online_distill.weights import LocalWeightsStore

log = logging.getLogger("online_distill.gate")

Decision = Literal["promoted", "refused", "superseded"]


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


def regressions(candidate: dict[str, dict[str, float]], baseline: dict[str, dict[str, float]],
                tolerance: float, nll_tolerance: float) -> list[str]:
    """Human-readable reasons, one per metric that got worse beyond its tolerance."""
    reasons = []
    for probe, metrics in candidate.items():
        for metric, value in metrics.items():
            old = baseline.get(probe, {}).get(metric)
            if old is None:
                continue
            if not math.isfinite(value):
                reasons.append(f"{probe}/{metric} is {value} (baseline {old:.4f})")
            elif HIGHER_IS_BETTER.get(metric, True):
                if value < old - tolerance:
                    reasons.append(f"{probe}/{metric} {value:.4f} < {old:.4f} - {tolerance}")
            elif math.isfinite(old) and value > old * (1 + nll_tolerance):
                reasons.append(
                    f"{probe}/{metric} {value:.4f} > {old:.4f} * (1 + {nll_tolerance})")
    return reasons


def finite_weights(model: PreTrainedModel) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


class Gate:
    """Decides, for each new version in ``store``, whether it replaces the served one."""

    def __init__(self, store: LocalWeightsStore, probes: Sequence[Probe], tolerance: float,
                 nll_tolerance: float, enabled: bool = True, device: str = "cpu") -> None:
        self.store, self.probes = store, list(probes)
        self.tolerance, self.nll_tolerance = tolerance, nll_tolerance
        self.enabled, self.device = enabled, device
        self.counts: Counter[str] = Counter()
        """Decisions since start: promoted, refused, superseded, and refused/<probe>/<metric>."""
        self.last: Verdict | None = None
        self._cache: dict[tuple[int, str], dict[str, float]] = {}

    def pending(self) -> list[int]:
        """Versions newer than every judged one, oldest first."""
        judged = [v for v in self.store.versions() if self.store.verdict(v) is not None]
        floor = max([*judged, self.store.promoted() or 0])
        return [v for v in self.store.versions() if v > floor]

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
            verdict = Verdict(version, "promoted", None, scores,
                              reasons=["nothing was served yet"])
        else:
            scores = self.scores(version, model, tokenizer)
            base_model, base_tok = self.store.load(baseline, self.device)
            base_scores = self.scores(baseline, base_model, base_tok)
            reasons = regressions(scores, base_scores, self.tolerance, self.nll_tolerance)
            verdict = Verdict(version, "refused" if reasons else "promoted", baseline, scores,
                              base_scores, reasons)
        verdict = Verdict(**{**asdict(verdict), "seconds": time.monotonic() - started})
        self._record(verdict)
        return verdict

    def scores(self, version: int, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
               ) -> dict[str, dict[str, float]]:
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
        self.counts[verdict.decision] += 1
        self.last = verdict
        if verdict.decision == "promoted":
            self.store.promote(verdict.version, reason="gate", by="gate")
            log.info("gate: promoted v%d (%s)", verdict.version,
                     "; ".join(verdict.reasons) or _brief(verdict.scores))
        elif verdict.decision == "refused":
            for reason in verdict.reasons:
                self.counts["refused/" + reason.split(" ", 1)[0]] += 1
            log.warning("gate: refused v%d, still serving v%s: %s", verdict.version,
                        verdict.baseline, "; ".join(verdict.reasons))


def _brief(scores: dict[str, dict[str, float]]) -> str:
    return ", ".join(f"{p}/{m}={v:.3f}" for p, ms in scores.items() for m, v in ms.items())
