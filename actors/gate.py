"""The gate actor: a thin Ray shell over :class:`GateStage`.

It also exports what the weights store knows (promoted and latest version, the promoted
version's scores and freshness): the gate is the store's one always-running reader.
"""

from __future__ import annotations

from typing import Any

import ray
import torch
from online_distill.actors.metrics import start_pusher
from prometheus_client import CollectorRegistry

from online_distill.config import config_from_dict
from online_distill.gate import build_gate
from online_distill.gate.build import build_holdout
from online_distill.gate.stage import GateSnapshot, GateStage
from online_distill.metrics import GateMetrics, StageMetrics, drain
from online_distill.streams import KafkaSource
from online_distill.streams.running import LagProbe, LoopThread
from online_distill.weights import PromotedFollower, store_for


@ray.remote
class GateActor:
    def __init__(self, cfg: dict[str, Any], bootstrap: str, threads: int = 1) -> None:
        torch.set_num_threads(threads)
        self.cfg = config_from_dict(cfg)
        k, g = self.cfg.kafka, self.cfg.gate
        self.store = store_for(self.cfg)
        self.holdout = build_holdout(self.cfg)
        self.gate = build_gate(self.cfg, self.store, self.holdout)
        source = KafkaSource(k, bootstrap, "gate", [k.labels_topic])
        self.stage = GateStage(source, self.holdout, self.gate, self.store, g.keep_versions,
                               k.max_message_bytes)
        self.lag = LagProbe(source)
        registry = CollectorRegistry()
        self.stage_metrics = StageMetrics(registry, "gate")
        self.gate_metrics = GateMetrics(registry)
        self.served: PromotedFollower[tuple[dict[str, Any], float | None]] = (
            PromotedFollower(self.store, self._facts_of, name="gate metrics"))
        self.pusher = start_pusher(self.cfg, "gate", registry, self._update_metrics)
        self.loop = LoopThread("gate", self.stage.run_once, after_step=self.lag.poll)

    def _served_facts(self) -> tuple[int | None, dict[str, Any], float | None]:
        """The promoted version, its gate scores and its newest trained prompt's time
        (re-read only when the promoted version changes; the last readable one's until
        then)."""
        self.served.poll()
        scores, newest = self.served.value or ({}, None)
        return self.served.version, scores, newest

    def _facts_of(self, version: int) -> tuple[dict[str, Any], float | None]:
        verdict = self.store.verdict(version) or {}
        return (verdict.get("scores", {}),
                self.store.manifest(version).metrics.get("prompt_newest_at"))

    def _update_metrics(self) -> None:
        promoted, scores, newest = self._served_facts()
        self.stage_metrics.update(self.stage.stats.by_topic, {}, {}, self.lag.by_topic)
        self.gate_metrics.update(self.gate.counts, drain(self.gate.recent), promoted,
                                 self.store.latest(), newest, scores, len(self.holdout.rolling))

    def stats(self) -> GateSnapshot:
        return self.stage.snapshot()

    def stop(self) -> None:
        self.loop.stop()
        if self.pusher is not None:
            self.pusher.stop()
