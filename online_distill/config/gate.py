"""The evaluation gate: which published student version is served."""

from __future__ import annotations

from dataclasses import dataclass

from .base import check_nonempty, check_range, fail
from .coerce import normalize_fields


@dataclass(frozen=True, kw_only=True)
class GateConfig:
    """The evaluation gate: a published student version is served only if it is not worse
    than the serving one on held-out probes."""

    enabled: bool = True
    """Evaluate each published version before promotion; off promotes every version."""

    tolerance: float = 0.01
    """Largest drop in probe score (a fraction, e.g. exact-match accuracy) still promoted;
    a bigger regression is refused and the serving version stays."""

    nll_tolerance: float = 0.1
    """Largest relative rise in a probe's NLL per token still promoted (0.1 = 10% worse);
    catches damaged weights that exact-match alone might not see."""

    confidence: float = 0.95
    """A candidate is refused only when it is worse beyond the tolerance with this confidence
    (a paired one-sided test over the probe items), so probe noise does not refuse good
    students; 0.5 compares the means alone."""

    fixed_probe_slack: float = 5.0
    """While the rolling probe of today's held-out traffic is scored, the fixed probes (a
    regression guard against damaged students) allow this many times the tolerances, so
    that after a drift the gate promotes the student that serves today's traffic better
    (with 1.0 a post-drift student that forgets a little of yesterday's mix is refused).
    The rolling probe itself always uses the plain tolerances."""

    probe_size: int = 200
    """Prompts in the fixed held-out probe set scored for every candidate version."""

    min_probe_examples: int = 20
    """A held-out live probe is scored only once it holds at least this many examples."""

    rolling_probe_size: int = 200
    """Recent held-out live prompts also scored, so the gate follows drifting traffic."""

    rolling_holdout_share: float = 0.02
    """Share of live prompts held out of training to fill the rolling probe."""

    keep_versions: int = 5
    """Published versions kept in the weights store (the rollback targets)."""

    weights_dir: str = "runs/demo/weights"
    """Directory of the weights store (published versions and the promoted pointer)."""

    num_cpus: float = 0.25
    """CPUs Ray reserves for the gate actor (it scores each candidate on the probes)."""

    def __post_init__(self) -> None:
        normalize_fields(self)
        check_range(self, "tolerance", ge=0, le=1, fix="a typical value is 0.01")
        check_range(self, "nll_tolerance", ge=0, fix="a typical value is 0.1")
        check_range(self, "confidence", ge=0.5, lt=1, fix="a typical value is 0.95")
        check_range(self, "fixed_probe_slack", ge=1, fix="1 applies the plain tolerances")
        check_range(self, "probe_size", ge=1, fix="a typical value is 200")
        check_range(self, "min_probe_examples", ge=1, fix="a typical value is 20")
        check_range(self, "rolling_probe_size", ge=0, fix="0 turns the rolling probe off")
        check_range(self, "rolling_holdout_share", ge=0, le=0.5, fix="a typical value is 0.02")
        if self.rolling_probe_size > 0 and self.rolling_holdout_share == 0:
            fail(
                "rolling_holdout_share",
                self.rolling_holdout_share,
                "the rolling probe needs held-out prompts; set it > 0 or rolling_probe_size=0",
            )
        check_range(self, "keep_versions", ge=1, fix="a typical value is 5")
        check_range(self, "num_cpus", gt=0, fix="a typical value is 0.25")
        check_nonempty(self, "weights_dir", "a typical value is 'runs/demo/weights'")
