"""``online-distill up``: run the whole loop with a one-line live status until stopped."""

from __future__ import annotations

import faulthandler
import io
import logging
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from online_distill.cli.produce import DemoTrafficThread
from online_distill.cli.status import ProbeWatcher, status_line
from online_distill.config import Config
from online_distill.metrics import StageMetrics
from online_distill.models.tokenizers import check_shared_tokenizer
from online_distill.report.snapshot import Restarting
from online_distill.report.timeline import TimelineWriter, timeline_record
from online_distill.tasks.traffic import DemoTraffic
from online_distill.weights.store import store_for

if TYPE_CHECKING:
    from online_distill.gate.stage import GateSnapshot
    from online_distill.learner.stats import LearnerSnapshot

log = logging.getLogger("online_distill.up")

STOP_STACKS_AFTER_S = 60.0
"""A stop still running after this long prints every thread's stack to stderr."""


class StopRequest:
    """Ctrl-C/SIGTERM as a plain flag the status loop polls.

    The signal handler only assigns a bool: a ``threading.Event.set()`` in a handler can
    deadlock, because the handler runs on the main thread, which may be holding that very
    Event's lock inside ``Event.wait`` when the signal lands (a clean clone's ``up`` once
    never printed "stopping" after SIGTERM)."""

    POLL_S = 0.2

    def __init__(self) -> None:
        self.requested = False

    def handler(self, signum: int, frame: object) -> None:
        self.requested = True

    def wait(self, timeout_s: float) -> bool:
        """Sleep up to ``timeout_s``; True as soon as a stop was requested."""
        deadline = time.monotonic() + timeout_s
        while not self.requested:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(self.POLL_S, left))
        return True


@dataclass(frozen=True, slots=True)
class UpSummary:
    """What ``up`` reports once stopped (:func:`online_distill.cli.status.print_summary`)."""

    prompts_sent: int
    labeled: int
    """Prompts labeled by the teachers that answered the last snapshot."""
    learner: LearnerSnapshot | Restarting
    gate: GateSnapshot | Restarting
    student_version: int | None
    """The served (promoted) version; None: the starting student."""
    student: dict[str, float]
    """The served version's exact-match per probe."""
    seconds: float


def run_up(cfg: Config, demo_traffic: bool, duration_s: float, status_every_s: float = 5.0
           ) -> UpSummary:
    """Start the loop, print status lines, stop cleanly on Ctrl-C/SIGTERM or after duration."""
    from online_distill.actors.metrics import start_pusher  # Ray: imported when the loop runs
    from online_distill.actors.supervisor import Supervisor
    from online_distill.streams import KafkaSink  # kafka-python: only when the loop runs

    # Every thread's stack on SIGUSR1 (kill -USR1 <pid>): the diagnosis of a hang.
    try:
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    except (AttributeError, ValueError, io.UnsupportedOperation):
        pass  # stderr is not a file (captured, as in tests): no dump, nothing else changes
    check_shared_tokenizer(cfg)  # before anything starts: a clear error, not silent garbage
    stop = StopRequest()
    sup = Supervisor(cfg)
    loop = sup.start()
    # After ray.init, which installs its own SIGTERM handler (it aborts the driver).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop.handler)
    traffic = None
    if demo_traffic:
        d = cfg.demo
        gen = DemoTraffic(d.traffic_mix, d.drift_mix, d.drift_after_prompts, seed=d.seed)
        traffic = DemoTrafficThread(KafkaSink(cfg.kafka, loop.bootstrap, "demo-traffic"),
                                    cfg.kafka.prompts_topic, gen, d.traffic_rate_per_s,
                                    max_prompts=d.max_prompts).start()
    pusher = None
    if traffic is not None:  # the demo producer's messages, as stage "producer"
        registry = CollectorRegistry()
        produced = StageMetrics(registry, "producer")
        topic = cfg.kafka.prompts_topic
        pusher = start_pusher(cfg, "driver", registry,
                              lambda: produced.update({}, {topic: traffic.sent}, {}, None))
    probe = ProbeWatcher(store_for(cfg), demo=cfg.demo.enabled, post_drift=cfg.demo.enabled)
    timeline = TimelineWriter(cfg.run_dir)
    start, prev = time.monotonic(), dict[str, float]()
    print(f"online-distill up: broker {loop.bootstrap}, {len(loop.teachers)} teacher(s), "
          f"weights in {cfg.gate.weights_dir}"
          + (f", serving {loop.serve_url}/v1/completions" if loop.serve_url else "")
          + (f", metrics {loop.metrics_url}" if loop.metrics_url else "")
          + "; Ctrl-C stops", flush=True)
    try:
        while not stop.wait(status_every_s):
            elapsed = time.monotonic() - start
            snap = sup.snapshot()
            probe.refresh()
            sent = traffic.sent if traffic else 0
            print(status_line(elapsed, sent, snap, probe, prev, cfg.learner.batch_size),
                  flush=True)
            timeline.write(timeline_record(
                time.time(), elapsed, sent, snap, probe.version, probe.scores,
                probe.freshness_s(), traffic.drifted_at is not None if traffic else None))
            if duration_s and elapsed >= duration_s:
                break
    finally:
        print("stopping: flushing producers, final checkpoint, committing offsets...",
              flush=True)
        stopping = time.monotonic()
        # A stop that hangs shows where: every thread's stack goes to stderr after this long
        # (the stop itself is bounded by its parts; this is the diagnosis when one is not).
        faulthandler.dump_traceback_later(STOP_STACKS_AFTER_S, exit=False)
        if traffic:
            traffic.stop()
        if pusher is not None:
            pusher.stop()
        snap = sup.snapshot()
        sup.stop()
        faulthandler.cancel_dump_traceback_later()
        print(f"stopped in {time.monotonic() - stopping:.1f}s", flush=True)
    probe.refresh()
    return UpSummary(prompts_sent=traffic.sent if traffic else 0, labeled=snap.labeled,
                     learner=snap.learner, gate=snap.gate, student_version=probe.version,
                     student=probe.scores, seconds=time.monotonic() - start)


