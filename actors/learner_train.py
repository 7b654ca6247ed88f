"""The multi-worker learner (``learner.workers = N > 1``) as a Ray Train ``TorchTrainer`` job.

:class:`LearnerJob` is a named actor with the single learner actor's interface (``stats``,
``trained_ids``, ``stop``), so the supervisor and the status line treat both alike. It runs
``TorchTrainer.fit()`` in a thread; fit starts N workers (DDP over gloo on CPU, NCCL on GPU)
and each runs :func:`train_worker`:

- worker r reads its own share of the labels partitions and trains in lockstep with the
  others (:mod:`online_distill.learner.lockstep` says how: one agreement per loop iteration,
  equal batches, the whole step's token count as the loss normaliser);
- rank 0 writes checkpoints holding every worker's offsets and publishes versions;
- a worker that dies fails the group's next collective: Ray Train restarts every worker
  (``FailureConfig(max_failures=-1)``), and each resumes from the latest checkpoint and seeks
  its partitions to the checkpoint's offsets, so no label is lost.

Workers report their stats to the job actor about twice a second and read the stop flag
from it; the stop itself is agreed through the same per-iteration collective.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray
import torch
from online_distill.actors.metrics import start_pusher

from online_distill.config import Config, config_from_dict
from online_distill.learner.build import LearnerExporter, LearnerParts, build_learner
from online_distill.learner.lockstep import TorchSync
from online_distill.learner.stats import LearnerSnapshot, WorkerReport
from online_distill.models.device import resolve_device
from online_distill.report.snapshot import Restarting
from online_distill.streams.running import LagProbe

log = logging.getLogger("online_distill.learner_train")

REPORT_EVERY_S = 0.5


# Threaded: stop() waits for fit while the workers keep calling report/stop_requested.
@ray.remote(max_concurrency=8)
class LearnerJob:
    """Owns the Ray Train run of an N-worker learner (see the module docstring)."""

    def __init__(self, cfg: dict[str, Any], bootstrap: str, threads: int = 1) -> None:
        self.cfg = config_from_dict(cfg)
        self.reports: dict[int, WorkerReport] = {}
        self.pids: dict[int, int] = {}
        self.starts = 0
        """Worker-group starts (1 + the restarts after a failure)."""
        self.error: str | None = None
        self._stop = False
        name = ray.get_runtime_context().get_actor_name() or "learner"
        loop_config = {"cfg": cfg, "bootstrap": bootstrap, "threads": threads,
                       "job": name, "namespace": ray.get_runtime_context().namespace}
        self.thread = threading.Thread(target=self._fit, args=(loop_config,), daemon=True,
                                       name="learner-fit")
        self.thread.start()

    def _fit(self, loop_config: dict[str, Any]) -> None:
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        lc = self.cfg.learner
        gpu = resolve_device(lc.device).type == "cuda" if lc.device != "auto" else (
            ray.cluster_resources().get("GPU", 0) >= lc.workers)
        resources = {"CPU": lc.num_cpus, **({"GPU": 1} if gpu else {}), **lc.ray_resources}
        trainer = TorchTrainer(
            train_worker, train_loop_config=loop_config,
            torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
            scaling_config=ScalingConfig(num_workers=lc.workers, use_gpu=gpu,
                                         resources_per_worker=resources),
            run_config=RunConfig(
                name="learner", storage_path=str(Path(self.cfg.run_dir, "ray_train").resolve()),
                # A dead worker restarts the whole group from the latest checkpoint.
                failure_config=FailureConfig(max_failures=-1)),
        )
        try:
            trainer.fit()
        except Exception as exc:  # noqa: BLE001 - surfaced through stats()
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("learner job failed")

    # ------------------------------------------------------------------ from workers
    def register(self, rank: int, pid: int) -> None:
        if rank == 0:
            self.starts += 1
        self.pids[rank] = pid

    def report(self, rank: int, report: WorkerReport) -> None:
        self.reports[rank] = report

    def stop_requested(self) -> bool:
        return self._stop

    # ------------------------------------------------------------------ for the supervisor
    def worker_pids(self) -> dict[int, int]:
        return dict(self.pids)

    def stats(self) -> LearnerSnapshot | Restarting:
        """Rank 0's snapshot, with every worker's step and the group's restarts; Restarting
        before rank 0's first report, or with the error once the job failed."""
        if self.error:
            return Restarting(self.error)
        first = self.reports.get(0)
        if first is None:
            return Restarting("no report from rank 0 yet")
        return replace(first.snapshot, restarts=max(0, self.starts - 1),
                       workers={r: w.snapshot.step for r, w in sorted(self.reports.items())})

    def worker_stats(self) -> dict[int, WorkerReport]:
        return dict(self.reports)

    def trained_ids(self) -> list[str]:
        """Prompt ids trained by any worker, from the audit log they share."""
        path = Path(self.cfg.run_dir, "trained_ids.log")
        if not path.exists():
            return []
        return [line.split()[1] for line in path.read_text().splitlines() if " " in line]

    def stop(self, timeout_s: float = 60.0) -> None:
        """Every worker stops at the same iteration, checkpoints and commits; fit returns."""
        self._stop = True
        self.thread.join(timeout_s)


def train_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: build the parts, resume, then loop in lockstep until stopped."""
    from ray import train

    ctx = train.get_context()
    rank = ctx.get_world_rank()
    cfg: Config = config_from_dict(config["cfg"])
    torch.set_num_threads(int(config["threads"]))
    job = ray.get_actor(config["job"], namespace=config["namespace"])
    device = resolve_device(cfg.learner.device)
    parts = build_learner(cfg, config["bootstrap"],
                          TorchSync(device if device.type == "cuda" else None))
    if cfg.learner.resume:
        parts.stage.resume()  # every worker loads the same checkpoint (a shared directory)
    parts.learner.wrap_for_data_parallel()
    ray.get(job.register.remote(rank, os.getpid()))
    lag = LagProbe(parts.source)
    exporter = LearnerExporter(parts)
    pusher = start_pusher(cfg, f"learner-{rank}", exporter.registry,
                          lambda: exporter.update(lag.by_topic))
    losses: list[float] = []
    try:
        _loop(parts, job, rank, lag, losses)
        parts.stage.checkpoint()  # every worker: rank 0 saves, each commits its own
        ray.get(job.report.remote(rank, _report(parts, lag, losses, digest=True)))
    finally:
        if pusher is not None:
            pusher.stop()


def _loop(parts: LearnerParts, job: Any, rank: int, lag: LagProbe, losses: list[float]
          ) -> None:
    stage, max_steps = parts.stage, parts.cfg.learner.max_steps
    last = -REPORT_EVERY_S
    while not stage.stopped:
        now = time.monotonic()
        if now - last >= REPORT_EVERY_S:
            last = now
            stage.stop_requested = bool(ray.get(job.stop_requested.remote()))
            job.report.remote(rank, _report(parts, lag, losses))
            # After max_steps no worker calls a collective any more: stop on our own.
            if stage.stop_requested and max_steps is not None and (
                    parts.learner.step >= max_steps):
                return
        stats = stage.run_once()
        if stats is not None:
            losses.append(stats.loss)
        lag.poll()


def _report(parts: LearnerParts, lag: LagProbe, losses: list[float], digest: bool = False
            ) -> WorkerReport:
    # The digest at the end only: hashing a large model takes a while.
    return WorkerReport(parts.snapshot(lag=lag.total), tuple(losses[-1000:]),
                        _digest(parts.learner.model) if digest else None)


def _digest(model: torch.nn.Module) -> str:
    """A fingerprint of the weights, to check that every worker holds the same ones."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
