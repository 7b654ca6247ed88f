"""Freshness under overload: demo traffic at twice what the learner can train, OOD on.

    .venv/bin/python bench/overload.py [--minutes 10] [--max-lag-s 10] [--rate R]
        [--publish-every-s S] [--student LAYERS,WIDTH,HEADS]

1. Calibrates, in the daemon itself (embedded broker, Ray, the actors), with the prompts
   topic pre-filled so nothing waits on traffic: prompts labeled per second by the teacher
   and fresh examples trained per second by the learner (``learner.max_lag_s`` 0: it trains
   everything, as fast as it can).
2. Runs the loop again on a fresh broker with demo traffic at ``--rate`` (default: twice the
   learner's rate, at most 90% of the teacher's, so that the learner, not the teacher, is
   what cannot keep up) and ``learner.max_lag_s``; every 5 s it reads every actor's
   snapshot and the served version's freshness (seconds since the newest prompt it trained
   on entered the stream).
3. Stops the traffic, then the loop (final checkpoint and commits), and accounts for every
   labeled example the learner read: trained, skipped by reason (stale, overrun, held out,
   duplicates, critics, empty), dead-lettered or still waiting; ``lost`` is what none of
   these covers (must be 0).

The learner runs GKD (``learner.loss=jsd``, ``learner.onpolicy_lambda=1.0``) on a freshly
initialised student larger than the teacher (``--student LAYERS,WIDTH,HEADS``, default
6,256,8: about 4.8M parameters against the teacher's 0.82M): the demo's own tiny student
outruns the teacher on two shared cores, and a teacher-sized one only matches it, so only a
heavier one can be overloaded by traffic the teacher still labels in time (as a real-sized
student behind a fast teacher server is).
Prints freshness p50/p90 over the whole run, the label lag (labels not yet committed by the
learner) at its peak and at the end, the skips by reason, and the accounting.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from online_distill.config import Config, load_config
from online_distill.report.snapshot import LoopSnapshot, Restarting
from online_distill.tasks.traffic import DemoTraffic

LEARNER = ["learner.loss=jsd", "learner.onpolicy_lambda=1.0"]
"""GKD: the student samples its own sequences, the heaviest of the demo's learner steps."""


def write_student(shape: str, out_dir: Path) -> Path:
    """A freshly initialised GPT-2 of ``shape`` ("LAYERS,WIDTH,HEADS") on the demo's
    tokenizer, in ``out_dir``; prints its size."""
    from online_distill.tasks.models import ModelShape, count_parameters, new_model, save_model

    layers, width, heads = (int(x) for x in shape.split(","))
    model, tokenizer = new_model(ModelShape(n_layer=layers, n_embd=width, n_head=heads), seed=0)
    save_model(model, tokenizer, out_dir)
    print(f"student {shape}: {count_parameters(model) / 1e6:.2f}M parameters", flush=True)
    return out_dir


def config(tmp: Path, bootstrap: str, max_lag_s: float, student: Path,
           publish_every_s: float) -> Config:
    return load_config("deploy/demo.yaml", [f"learner.publish_every_s={publish_every_s}",
        f"run_dir={tmp}", f"learner.checkpoint_dir={tmp}/ckpt", f"gate.weights_dir={tmp}/w",
        "serve.enabled=false", "metrics.enabled=false", "ood.enabled=true", *LEARNER,
        f"learner.student_model={student}",
        f"learner.max_lag_s={max_lag_s}", f"kafka.bootstrap_servers={bootstrap}"])


def snapshot(sup: Any, tries: int = 6) -> LoopSnapshot:
    """A snapshot in which the learner answered (it may be busy in a step for a while)."""
    snap = sup.snapshot()
    for _ in range(tries):
        if not isinstance(snap.learner, Restarting):
            break
        snap = sup.snapshot()
    return snap


def calibrate(seconds: float, student: Path, publish_every_s: float
              ) -> tuple[float, float, int]:
    """(teacher prompts labeled/s, learner fresh examples trained/s, the growth of the label
    lag) in the daemon, both over wall time with the prompts topic pre-filled; a label lag
    that grows says the learner, not the teacher, is what cannot keep up."""
    import ray
    from online_distill.actors.supervisor import Supervisor

    from online_distill.messages import PromptMessage, encode
    from online_distill.streams import EmbeddedBroker, KafkaSink, ensure_topics

    tmp = Path(tempfile.mkdtemp(prefix="od-overload-cal-"))
    with EmbeddedBroker() as broker:
        cfg = config(tmp, broker.bootstrap, 0.0, student, publish_every_s)
        ensure_topics(cfg.kafka, broker.bootstrap)
        sink = KafkaSink(cfg.kafka, broker.bootstrap, "bench")
        for item in DemoTraffic(seed=1).take(int(150 * (seconds + 40))):
            msg = PromptMessage(text=item.text, kind=item.problem.kind)
            sink.send(cfg.kafka.prompts_topic, encode(msg), key=msg.id.encode())
        sink.close()
        sup = Supervisor(cfg)
        sup.start()
        try:
            time.sleep(20)  # actors load their models and join; not measured
            first, t0 = snapshot(sup), time.monotonic()
            time.sleep(seconds)
            last, wall = snapshot(sup), time.monotonic() - t0
        finally:
            sup.stop()
            ray.shutdown()
    assert not isinstance(first.learner, Restarting) and not isinstance(last.learner,
                                                                        Restarting)
    return ((last.labeled - first.labeled) / wall,
            (last.learner.fresh_trained - first.learner.fresh_trained) / wall,
            last.learner.lag - first.learner.lag)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--max-lag-s", type=float, default=10.0)
    p.add_argument("--calibrate-s", type=float, default=60.0)
    p.add_argument("--publish-every-s", type=float, default=0.0,
                   help="learner.publish_every_s (default 0: the demo's 25 steps only)")
    p.add_argument("--student", default="6,256,8",
                   help="the student's shape, LAYERS,WIDTH,HEADS (default 6,256,8)")
    p.add_argument("--rate", type=float, default=None,
                   help="prompts/s (default: twice the learner's calibrated rate, at most "
                   "90%% of the teacher's)")
    args = p.parse_args()
    import ray
    from online_distill.actors.supervisor import Supervisor

    from online_distill.cli.produce import DemoTrafficThread
    from online_distill.streams import EmbeddedBroker, KafkaSink, ensure_topics
    from online_distill.weights.store import store_for

    student = write_student(args.student, Path(tempfile.mkdtemp(prefix="od-overload-student-")))
    teacher_rate, learner_rate, growth = calibrate(args.calibrate_s, student, args.publish_every_s)
    rate = args.rate or min(2 * learner_rate, 0.9 * teacher_rate)
    print(f"calibrated in the daemon: teacher {teacher_rate:.1f} prompts/s, learner "
          f"{learner_rate:.1f} examples/s (label lag {growth:+d} in {args.calibrate_s:g} s); "
          f"traffic {rate:.1f} prompts/s for {args.minutes:g} "
          f"min, learner.max_lag_s={args.max_lag_s:g}, "
          f"learner.publish_every_s={args.publish_every_s:g}, OOD on", flush=True)
    fresh: list[float] = []
    label_lags: list[int] = []
    tmp = Path(tempfile.mkdtemp(prefix="od-overload-"))
    with EmbeddedBroker() as broker:
        cfg = config(tmp, broker.bootstrap, args.max_lag_s, student, args.publish_every_s)
        ensure_topics(cfg.kafka, broker.bootstrap)
        store = store_for(cfg)
        sup = Supervisor(cfg)
        sup.start()
        d = cfg.demo
        traffic = DemoTrafficThread(
            KafkaSink(cfg.kafka, broker.bootstrap, "bench-traffic"), cfg.kafka.prompts_topic,
            DemoTraffic(d.traffic_mix, d.drift_mix, d.drift_after_prompts, seed=d.seed),
            rate).start()
        start = time.monotonic()
        try:
            while (elapsed := time.monotonic() - start) < args.minutes * 60:
                time.sleep(5)
                snap = sup.snapshot()
                served = store.promoted()
                newest = (store.manifest(served).metrics.get("prompt_newest_at")
                          if served is not None else None)
                if newest is not None:
                    fresh.append(time.time() - newest)
                learner = snap.learner
                lag = getattr(learner, "lag", -1)
                late = getattr(learner, "stale", 0) + getattr(learner, "overrun", 0)
                if lag >= 0:
                    label_lags.append(lag)
                print(f"[{elapsed:5.0f}s] sent {traffic.sent} labeled {snap.labeled} "
                      f"step {getattr(learner, 'step', '-')} label lag {lag} "
                      f"skipped late {late} served v{served} fresh "
                      f"{'-' if newest is None else f'{time.time() - newest:.1f}s'}", flush=True)
        finally:
            traffic.stop()
            final = snapshot(sup)
            sup.stop()
            ray.shutdown()
    s = final.learner
    assert not isinstance(s, Restarting), "the learner gave no final snapshot"
    outcomes = {"trained": s.fresh_trained, "stale": s.stale, "overrun": s.overrun,
                "held_out": s.held_out, "duplicates": s.duplicates,
                "critics": s.critic_dropped, "empty": s.empty,
                "dead_lettered": s.non_finite_dropped, "waiting": s.pending,
                "in_step": s.in_step}
    lost = s.polled - sum(outcomes.values())
    p90 = statistics.quantiles(fresh, n=10)[8] if len(fresh) >= 2 else float("nan")
    print(f"\n| measure | value |\n| --- | --- |\n"
          f"| calibration (daemon, {args.calibrate_s:g} s) | teacher {teacher_rate:.1f} "
          f"prompts/s, learner {learner_rate:.1f} examples/s, label lag {growth:+d} |\n"
          f"| traffic | {rate:.1f} prompts/s ({rate / learner_rate:.1f}x the learner), "
          f"{traffic.sent} sent in {args.minutes:g} min |\n"
          f"| freshness p50 / p90 | "
          f"{statistics.median(fresh) if fresh else float('nan'):.1f} s / {p90:.1f} s "
          f"({len(fresh)} samples, every 5 s) |\n"
          f"| label lag peak / end | {max(label_lags, default=-1)} / "
          f"{label_lags[-1] if label_lags else -1} |\n"
          f"| learner read | {s.polled} labeled examples, learner.max_lag_s="
          f"{args.max_lag_s:g} |\n"
          f"| outcomes | {', '.join(f'{k} {v}' for k, v in outcomes.items())} |\n"
          f"| lost | {lost} |")


if __name__ == "__main__":
    main()
