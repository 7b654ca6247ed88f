"""The status line of ``online-distill up``: the served student's scores, freshness, rates."""

from __future__ import annotations

import sys
import time
from typing import Any

from online_distill.weights.store import LocalWeightsStore


class ProbeWatcher:
    """The served (promoted) student's head/tail exact-match and freshness.

    Scores come from the gate's verdict on the version (it scored them already); a version
    promoted by hand or with the gate off is scored here.
    """

    def __init__(self, store: LocalWeightsStore, size: int = 100) -> None:
        self.store, self.size = store, size
        self.version: int | None = None
        self.scores: dict[str, float] = {}
        self.newest_prompt_at: float | None = None

    def refresh(self) -> None:
        served = self.store.promoted()
        if served is None or served == self.version:
            return
        try:
            verdict = self.store.verdict(served) or {}
            scores = {p: m["exact_match"] for p, m in verdict.get("scores", {}).items()
                      if "exact_match" in m}
            self.scores = scores or score_model(str(self.store.path(served)), self.size)
            self.newest_prompt_at = self.store.manifest(served).metrics.get("prompt_newest_at")
        except FileNotFoundError:  # pruned or rolled over meanwhile: next time
            return
        self.version = served

    def freshness_s(self) -> float | None:
        """Seconds since the newest prompt the served student trained on entered the stream."""
        return None if self.newest_prompt_at is None else time.time() - self.newest_prompt_at


def score_model(path: str, size: int) -> dict[str, float]:
    """Head and tail exact-match of a saved model on the fixed demo probes."""
    from online_distill.models.loader import load_model
    from online_distill.tasks.probes import probe_scores

    model, tok = load_model(path)
    return probe_scores(model, tok, size=size)


def status_line(elapsed: float, sent: int, snap: dict[str, Any], probe: ProbeWatcher,
                prev: dict[str, float]) -> str:
    teachers = [v for k, v in snap.items() if k.startswith("teacher") and "error" not in v]
    labeled = sum(t["labeled"] for t in teachers)
    lag = sum(max(0, t.get("lag", 0)) for t in teachers)
    learner = snap.get("learner", {})
    dt = max(1e-6, elapsed - prev.get("t", 0.0))
    rate_in = (sent - prev.get("sent", 0)) / dt
    rate_lab = (labeled - prev.get("labeled", 0)) / dt
    prev.update(t=elapsed, sent=sent, labeled=labeled)
    loss = learner.get("loss")
    acc = " ".join(f"{k}={v:.0%}" for k, v in probe.scores.items()) or "-"
    fresh = probe.freshness_s()
    gate = snap.get("gate", {}).get("counts", {})
    restarting = [k for k, v in snap.items() if "error" in v]
    ood = snap.get("ood", {})
    feedback = (f"  feedback kept {ood.get('kept', 0)} of {ood.get('generated', 0)}"
                if "kept" in ood else "")
    return (f"[{elapsed:6.0f}s] in {rate_in:5.1f}/s  labeled {labeled} ({rate_lab:5.1f}/s)  "
            f"lag prompts {lag} labels {learner.get('lag', '-')}  step {learner.get('step', '-')} "
            f"loss {loss if loss is None else round(loss, 4)}  "
            f"served v{probe.version or '-'} {acc} fresh "
            f"{'-' if fresh is None else f'{fresh:.0f}s'} "
            f"(promoted {gate.get('promoted', 0)} refused {gate.get('refused', 0)})"
            + feedback
            + (f"  restarting: {','.join(restarting)}" if restarting else ""))


def print_summary(summary: dict[str, Any], references: dict[str, dict[str, float]]) -> None:
    learner = summary["learner"]
    print("\n== online-distill summary ==")
    print(f"ran {summary['seconds']:.0f}s; prompts sent {summary['prompts_sent']}, "
          f"labeled {summary['labeled']}, learner steps {learner.get('step')}, "
          f"published versions {len(learner.get('published', []))}, "
          f"gate {summary.get('gate', {}).get('counts', {})}")
    for name, value in summary["student"].items():
        refs = ", ".join(f"{who} {scores[name]:.1%}" for who, scores in references.items())
        print(f"served student v{summary['student_version']} {name} exact-match: {value:.1%}"
              + (f" ({refs})" if refs else ""))
    sys.stdout.flush()
