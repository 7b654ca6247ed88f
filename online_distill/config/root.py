"""The whole config: one field per component section, plus checks that span sections."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .base import check_nonempty, fail
from .coerce import normalize_fields
from .critics import CriticsConfig
from .demo import DemoConfig
from .gate import GateConfig
from .kafka import KafkaConfig
from .learner import LearnerConfig
from .metrics import DriftConfig, MetricsConfig
from .ood import OODConfig
from .ray import RayConfig
from .serve import ServeConfig
from .teacher import TeacherConfig


@dataclass(frozen=True, kw_only=True)
class Config:
    """Everything the daemon reads at start: deploy/*.yaml plus dotted overrides."""

    run_dir: str = "runs/demo"
    """Directory for this run's logs and state files (checkpoint and weights directories
    are set in their own sections)."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Lowest level of log records printed by the daemon and its actors."""

    ray: RayConfig = field(default_factory=RayConfig)
    """The Ray cluster that hosts the actors and the Serve app."""

    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    """The broker, topics and client settings."""

    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    """The teacher LM that writes pseudo-targets."""

    critics: CriticsConfig = field(default_factory=CriticsConfig)
    """Filters that drop bad pseudo-targets before training."""

    learner: LearnerConfig = field(default_factory=LearnerConfig)
    """Student training, checkpoints and publishing."""

    ood: OODConfig = field(default_factory=OODConfig)
    """The out-of-distribution feedback loop (GOLD)."""

    gate: GateConfig = field(default_factory=GateConfig)
    """The evaluation gate in front of serving."""

    serve: ServeConfig = field(default_factory=ServeConfig)
    """The HTTP app serving the promoted student."""

    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    """Prometheus metrics."""

    drift: DriftConfig = field(default_factory=DriftConfig)
    """The input-drift monitor (in the learner)."""

    demo: DemoConfig = field(default_factory=DemoConfig)
    """The demo traffic generator."""

    def __post_init__(self) -> None:
        normalize_fields(self)
        check_nonempty(self, "run_dir", "a typical value is 'runs/demo'")
        if self.learner.checkpoint_dir == self.gate.weights_dir:
            fail(
                "gate.weights_dir",
                self.gate.weights_dir,
                "must differ from learner.checkpoint_dir; e.g. 'runs/demo/weights'",
            )
        if (
            self.serve.enabled
            and self.metrics.enabled
            and self.metrics.port != 0
            and self.serve.port == self.metrics.port
        ):
            fail(
                "metrics.port",
                self.metrics.port,
                "serve.port uses the same port; pick another (default 9100) or 0 for a free one",
            )
        if self.teacher.num_actors > self.kafka.partitions:
            fail(
                "teacher.num_actors",
                self.teacher.num_actors,
                f"only kafka.partitions = {self.kafka.partitions} actors can consume the "
                "prompts topic; raise kafka.partitions or lower teacher.num_actors",
            )
        if self.learner.workers > self.kafka.partitions:
            fail(
                "learner.workers",
                self.learner.workers,
                f"each learner worker reads its own labels partitions and only "
                f"kafka.partitions = {self.kafka.partitions} exist; raise kafka.partitions "
                "or lower learner.workers",
            )
        if self.ood.enabled and self.ood.score == "nll_gap" and self.teacher.backend != "hf":
            fail(
                "ood.score",
                self.ood.score,
                f"nll_gap needs the teacher's logits in-process (teacher.backend=hf), not "
                f"teacher.backend={self.teacher.backend}; use ood.score=nll or energy",
            )
        if self.learner.max_seq_len <= self.teacher.max_new_tokens:
            fail(
                "learner.max_seq_len",
                self.learner.max_seq_len,
                f"must exceed teacher.max_new_tokens = {self.teacher.max_new_tokens} to leave "
                "room for the prompt",
            )
        wanted = self.reserved_cpus()
        if not self.ray.address and self.ray.num_cpus and wanted > self.ray.num_cpus:
            fail(
                "ray.num_cpus",
                self.ray.num_cpus,
                f"the actors reserve {wanted:g} CPUs (teacher.num_cpus x num_actors, "
                "learner.num_cpus x workers, serve.num_cpus x num_replicas, ood.num_cpus), "
                "so some would wait forever; raise ray.num_cpus or lower those",
            )

    def reserved_cpus(self) -> float:
        """CPUs the daemon's actors reserve from Ray, summed over enabled components."""
        total = self.teacher.num_actors * self.teacher.num_cpus
        total += self.learner.workers * self.learner.num_cpus
        if self.serve.enabled:
            total += self.serve.num_replicas * self.serve.num_cpus
        if self.ood.enabled:
            total += self.ood.num_cpus
        return total
