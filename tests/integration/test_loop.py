"""The streaming loop end to end: real Tansu broker, real Ray, the demo models.

500 prompts and 50 malformed messages go in; two teacher actors share the prompts topic;
one teacher and the learner actor are each killed
mid-stream (Ray restarts them); every prompt must be labeled and trained on, the malformed
ones dead-lettered with reasons, and duplicates bounded by one batch per restart.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from online_distill.actors.supervisor import Supervisor  # noqa: E402

from online_distill.cli.export import export_labels, read_topic  # noqa: E402
from online_distill.config import load_config  # noqa: E402
from online_distill.messages import DeadLetter, LabeledExample, PromptMessage, decode, encode  # noqa: E402
from online_distill.streams import EmbeddedBroker, KafkaSink  # noqa: E402

pytestmark = pytest.mark.integration
BATCH = 32


def audit(run_dir: Path) -> list[str]:
    path = run_dir / "trained_ids.log"
    return [line.split()[1] for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def test_nothing_is_lost_when_teacher_and_learner_die(tmp_path) -> None:
    run = tmp_path / "run"
    overrides = [
        f"run_dir={run}", f"learner.checkpoint_dir={run}/ckpt", f"gate.weights_dir={run}/w",
        f"learner.batch_size={BATCH}", "learner.checkpoint_every_steps=1",
        "learner.publish_every_steps=1000", "teacher.batch_size=32", "teacher.n_pseudo_targets=2",
        "teacher.num_actors=2", "teacher.num_cpus=0.5",
        "serve.enabled=false", "kafka.session_timeout_ms=6000", "ray.num_cpus=2",
        "gate.rolling_probe_size=0",  # hold nothing out: every prompt must be trained on
    ]
    with EmbeddedBroker(log_dir=tmp_path / "broker") as broker:
        cfg = load_config(None, [*overrides, f"kafka.bootstrap_servers={broker.bootstrap}"])
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        sup = Supervisor(cfg)
        try:
            loop = sup.start()
            # Both teachers must hold partitions before traffic starts: a teacher that joins
            # the group late finds the first 250 prompts already labeled by the other.
            wait_for(lambda: all(getattr(t, "partitions", 0) > 0
                                 for t in sup.snapshot().teachers), 180,
                     "both teachers to join their group")
            sink = KafkaSink(cfg.kafka, loop.bootstrap, "test")
            ids = []
            for i in range(500):
                msg = PromptMessage(text=f"{i % 100}+{(7 * i) % 100}=", kind="add2")
                ids.append(msg.id)
                sink.send(cfg.kafka.prompts_topic, encode(msg), key=msg.id.encode())
                if i % 10 == 0:  # 50 malformed messages interleaved
                    sink.send(cfg.kafka.prompts_topic, b"\xffnot a prompt %d" % i)
                if i == 250:
                    sink.flush(30)
                    # Kill both actors mid-stream, once each has done some work.
                    wait_for(lambda: len(audit(run)) >= 64, 120, "the learner to train")
                    snap = sup.snapshot()  # before the kill: restarts reset the counters
                    ray.kill(loop.learner, no_restart=False)
                    ray.kill(loop.teachers[0], no_restart=False)
            sink.flush(30)
            wait_for(lambda: set(ids) <= set(audit(run)), 240, "every prompt to be trained on")
            trained = audit(run)
            labels = [decode(v, LabeledExample).prompt_id for v in
                      read_topic(cfg, loop.bootstrap, cfg.kafka.labels_topic, "t-labels")]
            letters = [decode(v, DeadLetter) for v in
                       read_topic(cfg, loop.bootstrap, cfg.kafka.dead_letter_topic, "t-dlq")]
            exported = export_labels(cfg, loop.bootstrap, tmp_path / "labels.jsonl")
        finally:
            sup.stop()
            ray.shutdown()
    assert set(labels) >= set(ids)  # every prompt labeled (re-labeled ones at most twice)
    # The two teacher actors shared the prompts topic through their consumer group.
    assert all(getattr(t, "labeled", 0) > 0 for t in snap.teachers), snap
    assert exported == len(labels)
    rows = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert {r["prompt_id"] for r in rows} == set(labels)
    counts = Counter(trained)
    duplicates = sum(c - 1 for c in counts.values())
    print(f"trained {len(trained)} rows for {len(ids)} prompts, {duplicates} duplicates, "
          f"{len(labels) - len(ids)} re-labeled, {len(letters)} dead letters")
    assert set(counts) == set(ids)
    assert duplicates <= BATCH  # at most one batch re-trained after the learner's restart
    malformed = [d for d in letters if d.stage == "teacher"]
    assert {d.payload for d in malformed} == {b"\xffnot a prompt %d" % i for i in range(0, 500, 10)}
    assert all(d.error_type == "bad_magic" and d.reason for d in malformed)

