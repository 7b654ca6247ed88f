"""The status line of ``online-distill up``: the served student's scores, freshness, rates."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from online_distill.learner.stats import LearnerSnapshot, feedback_share
from online_distill.report.snapshot import LoopSnapshot, Restarting
from online_distill.tasks.probes import ProbeName
from online_distill.weights import PromotedFollower, WeightsStore

if TYPE_CHECKING:
    from online_distill.cli.up import UpSummary


STALL_S = 30.0
"""No learner step for this long: the status line says why (what waits, what was dropped)."""


class ProbeWatcher:
    """The served (promoted) student's scores on the gate's probes, and its freshness.

    With the demo task (``demo=True``): exact-match on its head and tail problems, from the
    gate's verdict on the version, or scored here for a version promoted by hand or with
    the gate off. Without it: the agreement with the teacher on the held-out traffic probes
    (``holdout``, ``rolling``), from the verdict only (there is no task to score). A version
    that cannot be read leaves the previous one's line (:class:`PromotedFollower`'s policy).
    """

    def __init__(self, store: WeightsStore, size: int = 100, demo: bool = True,
                 post_drift: bool = False) -> None:
        self.store, self.size, self.demo = store, size, demo
        self.post_drift = post_drift  # also score the demo's post-drift probe here
        self.metric = "exact_match" if demo else "agreement"
        self.follower: PromotedFollower[tuple[dict[str, float], float | None]] = (
            PromotedFollower(store, self._facts, name="status line"))

    @property
    def version(self) -> int | None:
        return self.follower.version

    @property
    def scores(self) -> dict[str, float]:
        return self.follower.value[0] if self.follower.value is not None else {}

    @property
    def newest_prompt_at(self) -> float | None:
        return self.follower.value[1] if self.follower.value is not None else None

    def refresh(self) -> None:
        self.follower.poll()

    def _facts(self, served: int) -> tuple[dict[str, float], float | None]:
        """(exact-match per probe, newest trained prompt's time) of version ``served``."""
        verdict = self.store.verdict(served) or {}
        scores = {p: m[self.metric] for p, m in verdict.get("scores", {}).items()
                  if self.metric in m}
        newest = self.store.manifest(served).metrics.get("prompt_newest_at")
        names: tuple[ProbeName, ...] = ("head", "tail") if not scores and self.demo else ()
        if self.post_drift:  # the gate does not judge it: what the drift asks for next
            names += ("post_drift",)
        if names:  # one load of the version for every probe scored here
            scores.update(score_model(str(self.store.path(served)), self.size, names))
        return scores, newest

    def freshness_s(self) -> float | None:
        """Seconds since the newest prompt the served student trained on entered the stream."""
        return None if self.newest_prompt_at is None else time.time() - self.newest_prompt_at


def score_model(path: str, size: int, names: tuple[ProbeName, ...] = ("head", "tail")
                ) -> dict[str, float]:
    """Exact-match of a saved model on the fixed demo probes ``names``."""
    from online_distill.models.loader import load_model
    from online_distill.tasks.probes import probe_scores

    model, tok = load_model(path)
    return probe_scores(model, tok, names, size=size)


def why_no_step(learner: LearnerSnapshot, batch_size: int | None) -> str:
    """What the learner waits for, and what it did not train, by reason."""
    waits = f"{learner.pending} fresh waiting" + (f" of a batch of {batch_size}"
                                                  if batch_size else "")
    return (f"{waits}; not trained: critics {learner.critic_dropped}, held out "
            f"{learner.held_out}, duplicates {learner.duplicates}, empty {learner.empty}"
            + late(learner))


def late(learner: LearnerSnapshot) -> str:
    """The freshness policy's skips (``learner.max_lag_s``), when there are any."""
    n = learner.stale + learner.overrun
    return f", late {n} (stale {learner.stale}, overrun {learner.overrun})" if n else ""


def status_line(elapsed: float, sent: int, snap: LoopSnapshot, probe: ProbeWatcher,
                prev: dict[str, float], batch_size: int | None = None) -> str:
    """One line of the loop's state; ``prev`` carries what the last line saw (rates, when the
    learner last stepped)."""
    labeled = snap.labeled
    lag = sum(max(0, t.lag) for t in snap.answering_teachers())
    learner = None if isinstance(snap.learner, Restarting) else snap.learner
    dt = max(1e-6, elapsed - prev.get("t", 0.0))
    rate_in = (sent - prev.get("sent", 0)) / dt
    rate_lab = (labeled - prev.get("labeled", 0)) / dt
    prev.update(t=elapsed, sent=sent, labeled=labeled)
    if learner is not None and learner.step != prev.get("step"):
        prev.update(step=learner.step, step_t=elapsed)
    stalled = learner is not None and elapsed - prev.get("step_t", 0.0) >= STALL_S
    loss = learner.loss if learner else None
    acc = " ".join(f"{k}={v:.0%}" for k, v in probe.scores.items()) or "-"
    if not probe.demo:
        acc = f"agreement {acc}"
    fresh = probe.freshness_s()
    gate = {} if isinstance(snap.gate, Restarting) else snap.gate.counts
    restarting = snap.restarting()
    ood = None if isinstance(snap.ood, Restarting) else snap.ood
    feedback = f"  feedback kept {ood.kept} of {ood.generated}" if ood else ""
    if ood and ood.kept_by_kind:
        kinds = sorted(ood.kept_by_kind.items(), key=lambda kv: -kv[1])[:4]
        feedback += " (" + " ".join(f"{k or '?'} {n}" for k, n in kinds) + ")"
    if ood and learner and learner.by_origin:
        feedback += f", {feedback_share(learner.by_origin):.0%} of trained"
    return (f"[{elapsed:6.0f}s] in {rate_in:5.1f}/s  labeled {labeled} ({rate_lab:5.1f}/s)  "
            f"lag prompts {lag} labels {learner.lag if learner else '-'}  "
            f"step {learner.step if learner else '-'} "
            f"loss {loss if loss is None else round(loss, 4)}  "
            f"served v{probe.version or '-'} {acc} fresh "
            f"{'-' if fresh is None else f'{fresh:.0f}s'} "
            f"(promoted {gate.get('promoted', 0)} refused {gate.get('refused', 0)})"
            + feedback
            + (f"  skipped late {learner.stale + learner.overrun}"
               if learner and learner.stale + learner.overrun else "")
            + (f"  no step for {elapsed - prev['step_t']:.0f}s: "
               f"{why_no_step(learner, batch_size)}" if stalled and learner else "")
            + (f"  restarting: {','.join(restarting)}" if restarting else ""))


def print_summary(summary: UpSummary, references: dict[str, dict[str, float]]) -> None:
    learner = None if isinstance(summary.learner, Restarting) else summary.learner
    gate = {} if isinstance(summary.gate, Restarting) else summary.gate.counts
    print("\n== online-distill summary ==")
    print(f"ran {summary.seconds:.0f}s; prompts sent {summary.prompts_sent}, "
          f"labeled {summary.labeled}, learner steps {learner.step if learner else None}, "
          f"published versions {len(learner.published) if learner else 0}, gate {gate}")
    for name, value in summary.student.items():
        refs = ", ".join(f"{who} {scores[name]:.1%}" for who, scores in references.items()
                         if name in scores)  # the references score head and tail only
        print(f"served student v{summary.student_version} {name} exact-match: {value:.1%}"
              + (f" ({refs})" if refs else ""))
    sys.stdout.flush()
