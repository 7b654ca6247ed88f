"""The gate stage: collect held-out live examples, judge each new version, prune the store.

One call to :meth:`GateStage.run_once`:

1. poll the labels topic in the gate's own consumer group (the learner's reading is
   untouched);
2. decode each record; one that does not decode is counted and left to the learner, which
   dead-letters it (one dead letter per bad record, not two);
3. offer the examples to the probe buffer, which keeps the ones
   :func:`online_distill.messages.holdout.held_out` selects (the learner skips the same);
4. commit the polled offsets at once: the probe is a sample of recent traffic, so a restart
   that refills it from newer records loses nothing the loop needs;
5. judge the newest unjudged version against the served one; the verdict (and a
   promotion) is written to the weights store before this returns;
6. after a verdict, prune old versions, never the served one nor the rollback target.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from online_distill.gate.gate import Gate, Verdict
from online_distill.gate.holdout import HoldoutBuffer
from online_distill.messages import LabeledExample, MessageDecodeError, decode
from online_distill.streams import MessageSource, next_offsets
from online_distill.weights import WeightsStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GateSnapshot:
    """The gate actor's state: what is served, what it decided, how large its probe is.
    Frozen plain values: it crosses Ray as it is and the status line reads its attributes."""

    promoted_version: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    """Verdicts by decision (``promoted``, ``refused``), and refusals by the metric that
    regressed (``refused/<metric>``: one verdict may count under several)."""
    judged: int = 0
    """Verdicts given (the decisions' counts, not the ``refused/<metric>`` ones)."""
    held_out: int = 0
    """Held-out live examples collected for the rolling probe since start."""
    rolling_probe: int = 0
    """Examples in the rolling probe now."""
    polled: int = 0
    undecodable: int = 0
    pruned: int = 0
    last: dict[str, Any] | None = None
    """The last verdict (:meth:`Verdict.to_dict`), None before the first."""


@dataclass
class GateStageStats:
    """Counters of one stage instance since start."""

    polled: int = 0
    held_out: int = 0
    undecodable: int = 0
    pruned: int = 0
    by_topic: Counter[str] = field(default_factory=Counter)


class GateStage:
    """One :meth:`run_once` = one poll of held-out examples and at most one verdict."""

    def __init__(self, source: MessageSource, holdout: HoldoutBuffer, gate: Gate,
                 store: WeightsStore, keep_versions: int,
                 max_message_bytes: int = 1 << 20) -> None:
        self.source, self.holdout, self.gate, self.store = source, holdout, gate, store
        self.keep_versions, self.max_message_bytes = keep_versions, max_message_bytes
        self.stats = GateStageStats()

    def run_once(self, poll_timeout_s: float = 0.2) -> Verdict | None:
        """Poll, keep the held-out examples, commit, maybe judge a version (module docstring)."""
        # Step 1: poll.
        records = self.source.poll(max_records=1000, timeout_s=poll_timeout_s)
        # Step 2: decode; bad records are the learner's to dead-letter.
        examples = []
        for rec in records:
            try:
                examples.append(decode(rec.value, LabeledExample, self.max_message_bytes))
            except MessageDecodeError:
                self.stats.undecodable += 1
        self.stats.polled += len(records)
        self.stats.by_topic.update(rec.topic for rec in records)
        # Step 3: the held-out ones join the probe.
        self.stats.held_out += self.holdout.offer(examples)
        # Step 4: commit (the probe is a sample; nothing downstream depends on these).
        if records:
            self.source.commit(next_offsets(records))
        # Step 5: judge the newest version (written to the store before it returns).
        verdict = self.gate.step()
        # Step 6: prune.
        if verdict is not None:
            protect = {v for v in (self.store.rollback_target(),) if v is not None}
            self.stats.pruned += len(self.store.prune(self.keep_versions, protect))
        return verdict

    def snapshot(self) -> GateSnapshot:
        """The gate's state now (the store, the gate's counts and last verdict, the probe)."""
        last, counts = self.gate.last, dict(self.gate.counts)
        return GateSnapshot(
            promoted_version=self.store.promoted(), counts=counts,
            judged=sum(n for decision, n in counts.items() if "/" not in decision),
            held_out=self.stats.held_out,
            rolling_probe=len(self.holdout.rolling), polled=self.stats.polled,
            undecodable=self.stats.undecodable, pruned=self.stats.pruned,
            last=last.to_dict() if last else None)
