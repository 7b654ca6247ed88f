"""The embedded broker on `s3://` storage survives a hard crash: nothing acknowledged is lost.

Tansu stores through moto's S3 server (s3_store.py: it honours conditional writes, which
Tansu's S3 engine relies on).
The broker is SIGKILLed, not stopped, so it has no chance to flush anything: what survives is
what it had written to the store before acknowledging. Topic names and the group are fresh
per run (uuid), session_timeout_ms=6000 as in test_streams_kafka.py.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3_store import S3Store, running_s3_store

from online_distill.config.kafka import KafkaConfig
from online_distill.streams import (
    EmbeddedBroker,
    KafkaSink,
    KafkaSource,
    Partition,
    Record,
    ensure_topics,
    next_offsets,
)

pytestmark = pytest.mark.integration

POLL_DEADLINE_S = 20.0  # first assignment takes ~3 s (session 6 s / 2) on a busy machine


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[S3Store]:
    with running_s3_store(tmp_path / "s3.log") as store:
        yield store


def send(cfg: KafkaConfig, bootstrap: str, ids: range) -> None:
    """Send one record per id (key and value name it), acks=all, and wait for every ack."""
    sink = KafkaSink(cfg, bootstrap)
    for i in ids:
        sink.send(cfg.prompts_topic, f"prompt-{i}".encode(), key=f"id-{i}".encode())
    sink.flush(timeout_s=20.0)  # 20 s: each ack waits for a write to the store
    sink.close()


def poll_until(src: KafkaSource, n: int) -> list[Record]:
    got: list[Record] = []
    deadline = time.monotonic() + POLL_DEADLINE_S
    while len(got) < n and time.monotonic() < deadline:
        got += src.poll(timeout_s=0.5)
    return got


def ids(records: list[Record]) -> list[int]:
    return sorted(int(r.key.removeprefix(b"id-")) for r in records if r.key)


def test_sigkilled_broker_keeps_messages_and_committed_offsets(s3: S3Store, tmp_path: Path) -> None:
    u = uuid.uuid4().hex[:10]
    cfg = KafkaConfig(
        prompts_topic=f"prompts-{u}",
        labels_topic=f"labels-{u}",
        feedback_topic=f"feedback-{u}",
        dead_letter_topic=f"dead-{u}",
        consumer_group_prefix=f"durable-{u}",
        session_timeout_ms=6000,
    )
    broker = EmbeddedBroker(storage=s3.storage, log_dir=tmp_path / "tansu", env=s3.env)
    with broker:
        ensure_topics(cfg, broker.bootstrap)
        send(cfg, broker.bootstrap, range(0, 150))
        send(cfg, broker.bootstrap, range(150, 300))

        first = KafkaSource(cfg, broker.bootstrap, "teacher", [cfg.prompts_topic])
        done = poll_until(first, 120)[:120]  # per partition a prefix: records come in order
        committed = next_offsets(done)
        first.commit(committed)
        first.close()

        pid = broker.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while broker.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert broker.returncode == -signal.SIGKILL

        port = broker.port
        broker.restart()  # reaps the killed process, starts a new one on the same port
        assert broker.port == port and broker.pid != pid

        # Every acknowledged record is still there, once, at its old place.
        audit = KafkaSource(cfg, broker.bootstrap, "audit", [cfg.prompts_topic], manual_assign=True)
        everything = poll_until(audit, 300)
        audit.close()
        assert ids(everything) == list(range(300))
        where = {(r.partition, r.offset) for r in everything}
        assert {(r.partition, r.offset) for r in done} <= where

        # The group resumes exactly at its committed offsets: no record twice, none lost.
        second = KafkaSource(cfg, broker.bootstrap, "teacher", [cfg.prompts_topic])
        rest = poll_until(second, 180)
        starts = {p: min(r.offset for r in rest if r.where == p) for p in {r.where for r in rest}}
        assert starts == {p: committed.get(p, 0) for p in starts}
        assert ids(done + rest) == list(range(300))

        # The restarted broker takes new writes, and the resumed consumer sees them.
        send(cfg, broker.bootstrap, range(300, 320))
        more = poll_until(second, 20)
        assert ids(more) == list(range(300, 320))
        second.commit(next_offsets(rest + more))
        assert set(second.lag().values()) == {0}
        assert set(second.lag()) == {Partition(cfg.prompts_topic, p) for p in range(2)}
        second.close()
