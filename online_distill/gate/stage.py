"""The gate stage: collect held-out live examples, judge each new version, prune the store.

It reads the labels topic in its own consumer group (the learner's reading is untouched),
keeps the examples :func:`online_distill.gate.holdout.held_out` selects (the learner skips the
same ones), and commits as it goes: the probe is a sample of recent traffic, so a restart
that refills it from newer records loses nothing the loop needs. Records that do not
decode are left to the learner, which dead-letters them.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from online_distill.gate.gate import Gate, Verdict
from online_distill.gate.holdout import HoldoutBuffer
from online_distill.messages import LabeledExample, MessageDecodeError, decode
from online_distill.streams import MessageSource, next_offsets
from online_distill.weights.store import LocalWeightsStore

log = logging.getLogger(__name__)


@dataclass
class GateStageStats:
    polled: int = 0
    held_out: int = 0
    undecodable: int = 0
    pruned: int = 0
    by_topic: Counter[str] = field(default_factory=Counter)


class GateStage:
    """One :meth:`run_once` = one poll of held-out examples and at most one verdict."""

    def __init__(self, source: MessageSource, holdout: HoldoutBuffer, gate: Gate,
                 store: LocalWeightsStore, keep_versions: int,
                 max_message_bytes: int = 1 << 20) -> None:
        self.source, self.holdout, self.gate, self.store = source, holdout, gate, store
        self.keep_versions, self.max_message_bytes = keep_versions, max_message_bytes
        self.stats = GateStageStats()

    def run_once(self, poll_timeout_s: float = 0.2) -> Verdict | None:
        records = self.source.poll(max_records=1000, timeout_s=poll_timeout_s)
        examples = []
        for rec in records:
            try:
                examples.append(decode(rec.value, LabeledExample, self.max_message_bytes))
            except MessageDecodeError:
                self.stats.undecodable += 1
        self.stats.polled += len(records)
        self.stats.by_topic.update(rec.topic for rec in records)
        self.stats.held_out += self.holdout.offer(examples)
        if records:
            self.source.commit(next_offsets(records))
        verdict = self.gate.step()
        if verdict is not None:
            protect = {v for v in (self.store.rollback_target(),) if v is not None}
            self.stats.pruned += len(self.store.prune(self.keep_versions, protect))
        return verdict
