"""How the loop scales out: teacher actors (consumer-group members) and learner workers
(Ray Train data parallelism), measured side by side in one run on this machine.

1. Teachers: labels/s of 1 and of 2 teacher actors (1 thread each) on a prompts topic
   pre-filled with more demo traffic than they can label (2 partitions).
2. Learner: tokens/s of 1 learner actor (1 thread, then 2 threads) and of a 2-worker
   Ray Train learner (1 thread each, gloo), on a labels topic pre-filled with labeled demo
   examples; tokens summed over workers, over wall time after the start-up.

Caveat, printed with the table: this machine has 2 cores. Two actors or workers take both,
so ratios here say whether the machinery scales (no serialisation, no idle lockstep), not
what more machines give; on a cluster each teacher actor or worker has its own GPU or cores.

    .venv/bin/python bench/scaling.py [--seconds 40]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import torch
from online_distill.actors.learner import LearnerActor
from online_distill.actors.learner_train import LearnerJob
from online_distill.actors.teacher import TeacherActor

from online_distill.config import Config, config_to_dict, load_config
from online_distill.messages import LabeledExample, PromptMessage, encode
from online_distill.streams import EmbeddedBroker, KafkaSink, ensure_topics
from online_distill.tasks.models import DEMO_TEACHER_DIR
from online_distill.tasks.traffic import DemoTraffic
from online_distill.teachers.hf import HFTeacher
from online_distill.teachers.stage import label_request


def config(tmp: Path, bootstrap: str, extra: list[str]) -> Config:
    return load_config(None, [
        f"run_dir={tmp}", f"learner.checkpoint_dir={tmp}/ckpt", f"gate.weights_dir={tmp}/w",
        f"kafka.bootstrap_servers={bootstrap}", "kafka.partitions=2", "serve.enabled=false",
        "metrics.enabled=false", "gate.rolling_probe_size=0", "learner.device=cpu",
        "learner.checkpoint_every_steps=1000", "learner.publish_every_steps=100000",
        "teacher.device=cpu", "kafka.session_timeout_ms=6000", *extra])


def measure(count: Callable[[], int], warmup_s: float, seconds: float) -> float:
    """Units per second of ``count()`` over ``seconds``, after ``warmup_s`` of start-up."""
    time.sleep(warmup_s)
    first, t0 = count(), time.monotonic()
    time.sleep(seconds)
    return (count() - first) / (time.monotonic() - t0)


def teachers(n: int, seconds: float) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="od-scale-"))
    with EmbeddedBroker() as broker:
        cfg = config(tmp, broker.bootstrap, [f"teacher.num_actors={n}"])
        ensure_topics(cfg.kafka, broker.bootstrap)
        sink = KafkaSink(cfg.kafka, broker.bootstrap, "bench")
        for item in DemoTraffic(seed=1).take(int(200 * n * (seconds + 30))):
            msg = PromptMessage(text=item.text, kind=item.problem.kind)
            sink.send(cfg.kafka.prompts_topic, encode(msg), key=msg.id.encode())
        sink.flush(120)
        sink.close()
        actors = [TeacherActor.options(num_cpus=0.5, name=f"teacher-{i}").remote(
            config_to_dict(cfg), broker.bootstrap, 1) for i in range(n)]
        try:
            return measure(lambda: sum(s.labeled for s in ray.get(
                [a.stats.remote() for a in actors])), 15, seconds)
        finally:
            ray.get([a.stop.remote() for a in actors])
            for a in actors:
                ray.kill(a)


def labeled_examples(count: int) -> list[LabeledExample]:
    """``count`` labeled demo examples: 512 real labels, repeated under fresh prompt ids."""
    cfg = load_config(None, [])
    teacher = HFTeacher(str(DEMO_TEACHER_DIR), device="cpu", batch_size=128)
    items = DemoTraffic(seed=2).take(512)
    ids = [list(teacher.tokenizer(i.text).input_ids) for i in items]
    pts = teacher.label(ids, label_request(cfg.teacher))
    base = [LabeledExample(prompt_id="x", prompt_text=it.text, prompt_token_ids=tuple(x),
                           pseudo_targets=tuple(p), teacher_id="demo", kind=it.problem.kind)
            for it, x, p in zip(items, ids, pts, strict=True)]
    return [dataclasses.replace(base[i % len(base)], prompt_id=uuid.uuid4().hex)
            for i in range(count)]


def learner(workers: int, threads: int, seconds: float, examples: list[LabeledExample]
            ) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="od-scale-"))
    with EmbeddedBroker() as broker:
        cfg = config(tmp, broker.bootstrap, [f"learner.workers={workers}",
                                             "learner.num_cpus=0.5"])
        ensure_topics(cfg.kafka, broker.bootstrap)
        sink = KafkaSink(cfg.kafka, broker.bootstrap, "bench")
        for ex in examples:
            sink.send(cfg.kafka.labels_topic, encode(ex), key=ex.prompt_id.encode())
        sink.flush(120)
        sink.close()
        plain = config_to_dict(cfg)
        if workers == 1:
            actor = LearnerActor.options(num_cpus=0.5, name="learner").remote(
                plain, broker.bootstrap, threads)

            def tokens() -> int:
                return int(ray.get(actor.stats.remote()).trained_tokens)
        else:
            actor = LearnerJob.options(num_cpus=0, name="learner").remote(
                plain, broker.bootstrap, threads)

            def tokens() -> int:
                stats = ray.get(actor.worker_stats.remote()).values()
                return sum(int(s.snapshot.trained_tokens) for s in stats)
        try:
            return measure(tokens, 30 if workers > 1 else 15, seconds)
        finally:
            ray.get(actor.stop.remote())
            ray.kill(actor)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=40.0)
    args = p.parse_args()
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows: list[tuple[str, Any, Any, str]] = []
    t1, t2 = teachers(1, args.seconds), teachers(2, args.seconds)
    rows.append(("teacher labels/s (1 thread per actor)", f"{t1:.0f}", f"{t2:.0f}",
                 f"{t2 / t1:.2f}"))
    print(rows[-1], flush=True)
    examples = labeled_examples(int(1500 * (args.seconds + 40)))
    l1 = learner(1, 1, args.seconds, examples)
    l1t2 = learner(1, 2, args.seconds, examples)
    l2 = learner(2, 1, args.seconds, examples)
    rows.append(("learner tokens/s (1 thread per worker)", f"{l1:.0f}", f"{l2:.0f}",
                 f"{l2 / l1:.2f}"))
    rows.append(("learner tokens/s: 1 worker x 2 threads vs 2 workers x 1 thread",
                 f"{l1t2:.0f}", f"{l2:.0f}", f"{l2 / l1t2:.2f}"))
    ray.shutdown()
    print("\n| measure | 1 | 2 | ratio 2/1 |\n| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |")
    print("\nCaveat: 2 cores. Two actors or workers share the machine's two cores with the "
          "broker and Ray, so a ratio near 2 says the machinery adds no serialisation; on a "
          "cluster each gets its own GPU or cores.")


if __name__ == "__main__":
    main()
