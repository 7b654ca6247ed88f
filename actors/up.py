"""``online-distill up``: run the whole loop with a one-line live status until stopped."""

from __future__ import annotations

import faulthandler
import logging
import signal
import sys
import threading
import time
from typing import Any

from online_distill.actors.metrics import start_pusher
from online_distill.actors.supervisor import Supervisor
from prometheus_client import CollectorRegistry

from online_distill.config import Config
from online_distill.metrics import StageMetrics
from online_distill.producer import DemoTrafficThread
from online_distill.streams import KafkaSink
from online_distill.tasks.traffic import DemoTraffic
from online_distill.timeline import TimelineWriter, timeline_record
from online_distill.weights import LocalWeightsStore, store_for

log = logging.getLogger("online_distill.up")

STOP_STACKS_AFTER_S = 60.0
"""A stop still running after this long prints every thread's stack to stderr."""


class ProbeWatcher:
    """The served (promoted) student's head/tail exact-match and freshness.

    Scores come from the gate's verdict on the version (it scored them already); a version
    promoted by hand or with the gate off is scored here.
    """

    def __init__(self, store: LocalWeightsStore, size: int = 100) -> None:
        self.store, self.size = store, size
        self.version: int | None = None
        self.scores: dict[str, float] = {}
        self.newest_prompt_at: float | None = None

    def refresh(self) -> None:
        served = self.store.promoted()
        if served is None or served == self.version:
            return
        try:
            verdict = self.store.verdict(served) or {}
            scores = {p: m["exact_match"] for p, m in verdict.get("scores", {}).items()
                      if "exact_match" in m}
            self.scores = scores or score_model(str(self.store.path(served)), self.size)
            self.newest_prompt_at = self.store.manifest(served).metrics.get("prompt_newest_at")
        except FileNotFoundError:  # pruned or rolled over meanwhile: next time
            return
        self.version = served

    def freshness_s(self) -> float | None:
        """Seconds since the newest prompt the served student trained on entered the stream."""
        return None if self.newest_prompt_at is None else time.time() - self.newest_prompt_at


def score_model(path: str, size: int) -> dict[str, float]:
    """Head and tail exact-match of a saved model on the fixed demo probes."""
    from online_distill.tasks.models import load_model
    from online_distill.tasks.probes import probe_scores

    model, tok = load_model(path)
    return probe_scores(model, tok, size=size)


def status_line(elapsed: float, sent: int, snap: dict[str, Any], probe: ProbeWatcher,
                prev: dict[str, float]) -> str:
    teachers = [v for k, v in snap.items() if k.startswith("teacher") and "error" not in v]
    labeled = sum(t["labeled"] for t in teachers)
    lag = sum(max(0, t.get("lag", 0)) for t in teachers)
    learner = snap.get("learner", {})
    dt = max(1e-6, elapsed - prev.get("t", 0.0))
    rate_in = (sent - prev.get("sent", 0)) / dt
    rate_lab = (labeled - prev.get("labeled", 0)) / dt
    prev.update(t=elapsed, sent=sent, labeled=labeled)
    loss = learner.get("loss")
    acc = " ".join(f"{k}={v:.0%}" for k, v in probe.scores.items()) or "-"
    fresh = probe.freshness_s()
    gate = snap.get("gate", {}).get("counts", {})
    restarting = [k for k, v in snap.items() if "error" in v]
    ood = snap.get("ood", {})
    feedback = (f"  feedback kept {ood.get('kept', 0)} of {ood.get('generated', 0)}"
                if "kept" in ood else "")
    return (f"[{elapsed:6.0f}s] in {rate_in:5.1f}/s  labeled {labeled} ({rate_lab:5.1f}/s)  "
            f"lag prompts {lag} labels {learner.get('lag', '-')}  step {learner.get('step', '-')} "
            f"loss {loss if loss is None else round(loss, 4)}  "
            f"served v{probe.version or '-'} {acc} fresh "
            f"{'-' if fresh is None else f'{fresh:.0f}s'} "
            f"(promoted {gate.get('promoted', 0)} refused {gate.get('refused', 0)})"
            + feedback
            + (f"  restarting: {','.join(restarting)}" if restarting else ""))


def run_up(cfg: Config, demo_traffic: bool, duration_s: float, status_every_s: float = 5.0
           ) -> dict[str, Any]:
    """Start the loop, print status lines, stop cleanly on Ctrl-C/SIGTERM or after duration."""
    stop = threading.Event()
    sup = Supervisor(cfg)
    loop = sup.start()
    # After ray.init, which installs its own SIGTERM handler (it aborts the driver).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    traffic = None
    if demo_traffic:
        d = cfg.demo
        gen = DemoTraffic(d.traffic_mix, d.drift_mix, d.drift_after_prompts, seed=d.seed)
        traffic = DemoTrafficThread(KafkaSink(cfg.kafka, loop.bootstrap, "demo-traffic"),
                                    cfg.kafka.prompts_topic, gen, d.traffic_rate_per_s).start()
    pusher = None
    if traffic is not None:  # the demo producer's messages, as stage "producer"
        registry = CollectorRegistry()
        produced = StageMetrics(registry, "producer")
        topic = cfg.kafka.prompts_topic
        pusher = start_pusher(cfg, "driver", registry,
                              lambda: produced.update({}, {topic: traffic.sent}, {}, None))
    probe = ProbeWatcher(store_for(cfg))
    timeline = TimelineWriter(cfg.run_dir)
    start, prev = time.monotonic(), {}
    snap: dict[str, Any] = {}
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
            print(status_line(elapsed, sent, snap, probe, prev), flush=True)
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
    summary = {"prompts_sent": traffic.sent if traffic else 0,
               "labeled": sum(v.get("labeled", 0) for k, v in snap.items()
                              if k.startswith("teacher")),
               "learner": snap.get("learner", {}), "gate": snap.get("gate", {}),
               "student_version": probe.version,
               "student": probe.scores, "seconds": time.monotonic() - start}
    return summary


def print_summary(summary: dict[str, Any], references: dict[str, dict[str, float]]) -> None:
    learner = summary["learner"]
    print("\n== online-distill summary ==")
    print(f"ran {summary['seconds']:.0f}s; prompts sent {summary['prompts_sent']}, "
          f"labeled {summary['labeled']}, learner steps {learner.get('step')}, "
          f"published versions {len(learner.get('published', []))}, "
          f"gate {summary.get('gate', {}).get('counts', {})}")
    for name, value in summary["student"].items():
        refs = ", ".join(f"{who} {scores[name]:.1%}" for who, scores in references.items())
        print(f"served student v{summary['student_version']} {name} exact-match: {value:.1%}"
              + (f" ({refs})" if refs else ""))
    sys.stdout.flush()
