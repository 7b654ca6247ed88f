"""The evaluation gate (promote a candidate only if it is not worse) and its probes."""

from online_distill.gate.build import build_gate
from online_distill.gate.gate import Gate, Verdict, regressions
from online_distill.gate.probes import HIGHER_IS_BETTER, LabelProbe, Probe, TaskProbe

__all__ = ["HIGHER_IS_BETTER", "Gate", "LabelProbe", "Probe", "TaskProbe", "Verdict",
           "build_gate", "regressions"]
