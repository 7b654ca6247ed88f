"""The gate actor: a thin Ray shell over :class:`GateStage`."""

from __future__ import annotations

from typing import Any

import ray
import torch
from online_distill.actors.common import LoopThread

from online_distill.config import config_from_dict
from online_distill.gate import build_gate
from online_distill.gate.build import build_holdout
from online_distill.stages.gate_stage import GateStage
from online_distill.streams import KafkaSource
from online_distill.weights import store_for


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
        self.loop = LoopThread("gate", self.stage.run_once)

    def stats(self) -> dict[str, Any]:
        last = self.gate.last
        return {"promoted_version": self.store.promoted(), "counts": dict(self.gate.counts),
                "held_out": self.stage.stats.held_out,
                "rolling_probe": len(self.holdout.rolling),
                "last": last.to_dict() if last else None}

    def stop(self) -> None:
        self.loop.stop()
