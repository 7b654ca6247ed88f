"""The run's own log: one JSON line per status interval in ``<run_dir>/timeline.jsonl``.

``online-distill up`` appends a record every status line; ``online-distill report`` draws
the run from it (with the weights store's ``verdicts.jsonl`` and ``promotions.jsonl``), so a
user without Prometheus or Grafana still sees the story. Fields (any may be null):
``at`` (unix s), ``elapsed_s``, ``prompts_sent``, ``labeled``, ``prompt_lag``, ``label_lag``,
``step``, ``loss``, ``served_version``, ``served_scores`` ({probe: exact-match}),
``freshness_s``, ``promoted``, ``refused``, ``kl``, ``agreement``, ``demo_drifted``, ``drift``
(the learner's :meth:`online_distill.learner.drift.DriftMonitor.snapshot`), ``skipped_late``,
``feedback_share`` (of the fresh examples trained on, the share from feedback prompts) and
``feedback_kinds`` ({kind: feedback prompts kept}, null without the OOD actor).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from online_distill.learner.stats import feedback_share
from online_distill.report.snapshot import LoopSnapshot, Restarting

TIMELINE = "timeline.jsonl"


def timeline_record(at: float, elapsed_s: float, sent: int, snap: LoopSnapshot,
                    served_version: int | None, served_scores: dict[str, float],
                    freshness_s: float | None, demo_drifted: bool | None) -> dict[str, Any]:
    """One record from the supervisor's snapshot of every actor."""
    lags = [t.lag for t in snap.answering_teachers()]
    learner = None if isinstance(snap.learner, Restarting) else snap.learner
    live = (learner.live if learner else None) or {}
    counts = {} if isinstance(snap.gate, Restarting) else snap.gate.counts
    ood = None if snap.ood is None or isinstance(snap.ood, Restarting) else snap.ood
    return {
        "at": at, "elapsed_s": elapsed_s, "prompts_sent": sent, "labeled": snap.labeled,
        "prompt_lag": sum(lags) if lags and min(lags) >= 0 else None,
        "label_lag": learner.lag if learner and learner.lag >= 0 else None,
        "step": learner.step if learner else None,
        "loss": _finite(learner.loss if learner else None),
        "served_version": served_version, "served_scores": served_scores,
        "freshness_s": freshness_s, "promoted": counts.get("promoted", 0),
        "refused": counts.get("refused", 0), "kl": _finite(live.get("kl")),
        "agreement": _finite(live.get("agreement")), "demo_drifted": demo_drifted,
        "drift": learner.drift if learner else None,
        "skipped_late": learner.stale + learner.overrun if learner else None,
        "feedback_share": (feedback_share(learner.by_origin) if learner and ood is not None
                           else None),
        "feedback_kinds": (None if ood is None else dict(ood.kept_by_kind)),
    }


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


class TimelineWriter:
    """Appends records to ``<run_dir>/timeline.jsonl`` (flushed per line)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / TIMELINE
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
