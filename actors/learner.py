"""The learner actor (``learner.workers = 1``): a thin Ray shell over the learner's parts
(:mod:`online_distill.learner.build`). Several workers run as a Ray Train job
instead (:mod:`online_distill.actors.learner_train`), behind the same interface."""

from __future__ import annotations

from typing import Any

import ray
import torch
from online_distill.actors.metrics import start_pusher

from online_distill.config import config_from_dict
from online_distill.learner.build import LearnerExporter, build_learner
from online_distill.learner.stats import LearnerSnapshot
from online_distill.streams.running import LagProbe, LoopThread


@ray.remote
class LearnerActor:
    def __init__(self, cfg: dict[str, Any], bootstrap: str, threads: int = 1) -> None:
        torch.set_num_threads(threads)
        self.cfg = config_from_dict(cfg)
        self.parts = build_learner(self.cfg, bootstrap)
        self.stage, self.learner = self.parts.stage, self.parts.learner
        if self.cfg.learner.resume:  # else the student starts fresh from student_model
            self.stage.resume()
        self.lag = LagProbe(self.parts.source)
        self.exporter = LearnerExporter(self.parts)
        self.pusher = start_pusher(self.cfg, "learner", self.exporter.registry,
                                   lambda: self.exporter.update(self.lag.by_topic))
        self.loop = LoopThread("learner", self.stage.run_once, after_step=self.lag.poll)

    def stats(self) -> LearnerSnapshot:
        return self.parts.snapshot(lag=self.lag.total)

    def trained_ids(self) -> list[str]:
        return list(self.stage.trained_ids)

    def stop(self) -> None:
        """Finish the step in hand, write a final checkpoint and commit its offsets."""
        self.loop.stop()
        self.stage.checkpoint()
        if self.pusher is not None:
            self.pusher.stop()
