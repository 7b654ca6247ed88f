"""The supervisor: starts the broker (if embedded), Ray, the topics and the loop's actors.

It runs in the ``online-distill up`` process. Actors are created with ``max_restarts=-1``
(Ray restarts a dead one; its stage re-reads uncommitted input) and fractional CPUs sized by
the config so that everything fits the machine (2 cores in the demo).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import ray
from online_distill.actors.gate import GateActor
from online_distill.actors.learner import LearnerActor
from online_distill.actors.teacher import TeacherActor

from online_distill.config import Config, ConfigError, config_to_dict
from online_distill.report.snapshot import LoopSnapshot, Restarting
from online_distill.streams import EmbeddedBroker, ensure_topics
from online_distill.streams.admin import export_sasl_password

log = logging.getLogger("online_distill.supervisor")


@dataclass
class Loop:
    """Handles of the running loop."""

    bootstrap: str
    teachers: list[Any] = field(default_factory=list)
    learner: Any = None
    gate: Any = None
    ood: Any = None
    broker: EmbeddedBroker | None = None
    serve_url: str | None = None
    metrics_hub: Any = None
    metrics_url: str | None = None


class Supervisor:
    """Starts and stops the whole loop; :meth:`snapshot` gathers the actors' snapshots."""

    def __init__(self, cfg: Config, threads_per_actor: int = 1) -> None:
        self.cfg = cfg
        self.threads = threads_per_actor
        self.loop: Loop | None = None

    def start(self) -> Loop:
        cfg = self.cfg
        broker = None
        bootstrap = cfg.kafka.bootstrap_servers
        if not bootstrap:
            broker = EmbeddedBroker.from_config(cfg.kafka, log_dir=os.path.join(cfg.run_dir,
                                                                                 "broker"))
            broker.start()
            bootstrap = broker.bootstrap
            log.info("embedded broker (%s) on %s", cfg.kafka.embedded_storage, bootstrap)
        if cfg.kafka.create_topics:
            ensure_topics(cfg.kafka, bootstrap)
        # The actors get the redacted config and read the Kafka password from their
        # environment: a local Ray instance's processes inherit this process's, so export it
        # before ray.init (Ray's runtime_env env_vars would write it to Ray's logs).
        if not ray.is_initialized() and not cfg.ray.address:
            export_sasl_password(cfg.kafka)
        elif cfg.kafka.sasl_password:
            log.warning("kafka.sasl_password is in the config, but the actors of a Ray instance "
                        "this process did not start read the password from the environment "
                        "variable %s of their nodes; set it there", cfg.kafka.sasl_password_env)
        if not ray.is_initialized():
            if cfg.ray.address:
                ray.init(address=cfg.ray.address, namespace=cfg.ray.namespace)
            else:
                ray.init(num_cpus=cfg.ray.num_cpus or None, namespace=cfg.ray.namespace,
                         include_dashboard=cfg.ray.include_dashboard,
                         dashboard_host=cfg.ray.dashboard_host, log_to_driver=False)
        hub, metrics_url = self._start_metrics() if cfg.metrics.enabled else (None, None)
        plain = config_to_dict(cfg, redact=True)  # no secret in any actor's arguments
        teachers = [
            TeacherActor.options(num_cpus=cfg.teacher.num_cpus, num_gpus=cfg.teacher.num_gpus,
                                 resources=dict(cfg.teacher.ray_resources), max_restarts=-1,
                                 name=f"teacher-{i}").remote(plain, bootstrap, self.threads)
            for i in range(cfg.teacher.num_actors)
        ]
        if cfg.learner.workers > 1:  # a Ray Train job; its workers reserve the CPUs
            from online_distill.actors.learner_train import LearnerJob

            learner = LearnerJob.options(num_cpus=0, name="learner").remote(
                plain, bootstrap, self.threads)
        else:
            learner = LearnerActor.options(num_cpus=cfg.learner.num_cpus,
                                           num_gpus=1 if cfg.learner.device == "cuda" else 0,
                                           resources=dict(cfg.learner.ray_resources),
                                           max_restarts=-1, name="learner").remote(
                                               plain, bootstrap, self.threads)
        gate = GateActor.options(num_cpus=cfg.gate.num_cpus, max_restarts=-1,
                                 name="gate").remote(plain, bootstrap, self.threads)
        ood = None
        if cfg.ood.enabled:
            from online_distill.actors.ood import OODActor

            ood = OODActor.options(num_cpus=cfg.ood.num_cpus, max_restarts=-1,
                                   name="ood").remote(plain, bootstrap, self.threads)
        self.loop = Loop(bootstrap, teachers, learner, gate, ood, broker,
                         metrics_hub=hub, metrics_url=metrics_url)
        if cfg.serve.enabled:
            from online_distill.actors.serve import start_serving

            self.loop.serve_url = start_serving(cfg, bootstrap)
            log.info("serving the promoted student at %s/v1/completions", self.loop.serve_url)
        return self.loop

    def _start_metrics(self) -> tuple[Any, str]:
        """The metrics hub actor and its /metrics URL; a clear error if it cannot bind."""
        from online_distill.actors.metrics import start_hub

        m = self.cfg.metrics
        hub = start_hub(self.cfg)
        try:
            endpoint = ray.get(hub.endpoint.remote(), timeout=60)
        except Exception as exc:
            ray.kill(hub, no_restart=True)
            raise ConfigError(f"cannot serve /metrics on {m.host}:{m.port} ({exc}); free the "
                              "port, pick another, or set metrics.port=0 for a free one",
                              path="metrics.port", value=m.port) from exc
        url = f"http://{endpoint}/metrics"
        log.info("Prometheus metrics of every loop process at %s", url)
        return hub, url

    def snapshot(self, timeout_s: float = 10.0) -> LoopSnapshot:
        """Every actor's snapshot; one that is restarting (or gives no answer within
        ``timeout_s``) is a :class:`Restarting`."""
        assert self.loop is not None
        teachers = [a.stats.remote() for a in self.loop.teachers]
        learner, gate = self.loop.learner.stats.remote(), self.loop.gate.stats.remote()
        ood = self.loop.ood.stats.remote() if self.loop.ood is not None else None
        refs = [*teachers, learner, gate, *([ood] if ood is not None else [])]
        # One wait over all refs: an actor in restart must not stall the status line.
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)

        def answer(ref: Any) -> Any:
            try:
                return ray.get(ref) if ref in ready else Restarting("no answer")
            except Exception as exc:  # noqa: BLE001 - a restarting actor is normal
                return Restarting(type(exc).__name__)

        return LoopSnapshot(tuple(answer(r) for r in teachers), answer(learner), answer(gate),
                            answer(ood) if ood is not None else None)

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop the actors (teachers flush and commit, the learner checkpoints), then Ray."""
        if self.loop is None:
            return
        handles = [*self.loop.teachers, self.loop.learner, self.loop.gate]
        if self.loop.ood is not None:
            handles.append(self.loop.ood)
        try:
            ray.wait([h.stop.remote() for h in handles], num_returns=len(handles),
                     timeout=timeout_s)
        finally:
            for h in handles:
                ray.kill(h, no_restart=True)
            if self.loop.serve_url:
                from online_distill.actors.serve import stop_serving

                stop_serving()
            if self.loop.metrics_hub is not None:
                ray.kill(self.loop.metrics_hub, no_restart=True)
            if self.loop.broker is not None:
                self.loop.broker.stop()
            self.loop = None
