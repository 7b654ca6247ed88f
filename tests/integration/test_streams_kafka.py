"""KafkaSource, KafkaSink, ensure_topics and EmbeddedBroker against a real broker.

Each test starts its own Tansu broker (memory://, ready in well under a second) and uses
uuid topic names and a fresh consumer group: a group whose members closed mid-join can stay
stuck on Tansu (shared/MACHINE.md). session_timeout_ms=6000 because a subscribed consumer's
first assignment arrives after about session_timeout_ms / 2.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from online_distill.config.kafka import KafkaConfig
from online_distill.streams import (
    BrokerError,
    EmbeddedBroker,
    KafkaSink,
    KafkaSource,
    Partition,
    Record,
    SinkError,
    SourceError,
    ensure_topics,
    next_offsets,
)

pytestmark = pytest.mark.integration

# Upper bound for a poll loop: first assignment takes ~3 s (session 6 s / 2), and this
# 2-core machine may be busy with other work.
POLL_DEADLINE_S = 20.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_dir=tmp_path) as b:
        yield b


@pytest.fixture
def cfg() -> KafkaConfig:
    u = uuid.uuid4().hex[:10]
    return KafkaConfig(
        prompts_topic=f"prompts-{u}",
        labels_topic=f"labels-{u}",
        feedback_topic=f"feedback-{u}",
        dead_letter_topic=f"dead-{u}",
        consumer_group_prefix=f"test-{u}",
        session_timeout_ms=6000,
    )


def produce(cfg: KafkaConfig, bootstrap: str, n: int) -> list[bytes]:
    ensure_topics(cfg, bootstrap)
    sink = KafkaSink(cfg, bootstrap)
    values = [f"prompt-{i}".encode() for i in range(n)]
    for i, v in enumerate(values):
        sink.send(cfg.prompts_topic, v, key=f"id-{i}".encode())
    sink.flush(timeout_s=10.0)  # 10 s: 200 small records take well under 1 s
    sink.close()
    return values


def poll_until(src: KafkaSource, n: int, commit: bool = False) -> list[Record]:
    got: list[Record] = []
    deadline = time.monotonic() + POLL_DEADLINE_S
    while len(got) < n and time.monotonic() < deadline:
        batch = src.poll(timeout_s=0.5)  # short polls: the loop checks its deadline often
        if commit and batch:
            src.commit(next_offsets(batch))
        got += batch
    return got


def test_ensure_topics_is_idempotent(broker: EmbeddedBroker, cfg: KafkaConfig) -> None:
    cfg3 = dataclasses.replace(cfg, partitions=3)
    names = [cfg.prompts_topic, cfg.labels_topic, cfg.feedback_topic, cfg.dead_letter_topic]
    assert sorted(ensure_topics(cfg3, broker.bootstrap)) == sorted(names)
    assert ensure_topics(cfg3, broker.bootstrap) == []
    src = KafkaSource(cfg3, broker.bootstrap, "check", names, manual_assign=True)
    assert len(src.assignment()) == 4 * 3
    src.close()


def test_produce_200_and_consume_all_with_manual_commits(
    broker: EmbeddedBroker, cfg: KafkaConfig
) -> None:
    values = produce(cfg, broker.bootstrap, 200)
    src = KafkaSource(cfg, broker.bootstrap, "teacher", [cfg.prompts_topic])
    got = poll_until(src, 200, commit=True)
    assert sorted(r.value for r in got) == sorted(values)
    for p in (0, 1):
        offsets = [r.offset for r in got if r.partition == p]
        assert offsets == list(range(len(offsets)))  # in order, no gap, no duplicate
    assert src.lag() == {Partition(cfg.prompts_topic, 0): 0, Partition(cfg.prompts_topic, 1): 0}
    src.close()


def test_new_consumer_resumes_exactly_at_committed_offset(
    broker: EmbeddedBroker, cfg: KafkaConfig
) -> None:
    produce(cfg, broker.bootstrap, 100)
    first = KafkaSource(cfg, broker.bootstrap, "teacher", [cfg.prompts_topic])
    done = poll_until(first, 40)[:40]  # the rest was read but never committed
    first.commit(next_offsets(done))
    first.close()
    second = KafkaSource(cfg, broker.bootstrap, "teacher", [cfg.prompts_topic])
    rest = poll_until(second, 60)
    second.close()
    seen = [(r.partition, r.offset) for r in done + rest]
    assert len(seen) == len(set(seen)) == 100  # no loss, no duplicate


def test_lag_and_seek_with_manual_assignment(broker: EmbeddedBroker, cfg: KafkaConfig) -> None:
    produce(cfg, broker.bootstrap, 50)
    src = KafkaSource(cfg, broker.bootstrap, "learner", [cfg.prompts_topic], manual_assign=True)
    got = poll_until(src, 50)
    assert sum(src.lag().values()) == 50  # read, not committed: all of it is still lag
    src.commit(next_offsets(got))
    assert set(src.lag().values()) == {0}
    p0 = Partition(cfg.prompts_topic, 0)
    src.seek({p0: 0})
    again = poll_until(src, src.position()[p0])
    assert [r.offset for r in again] == list(range(src.position()[p0]))
    src.close()


def test_pause_and_resume(broker: EmbeddedBroker, cfg: KafkaConfig) -> None:
    produce(cfg, broker.bootstrap, 40)
    src = KafkaSource(cfg, broker.bootstrap, "teacher", [cfg.prompts_topic], manual_assign=True)
    p0, p1 = Partition(cfg.prompts_topic, 0), Partition(cfg.prompts_topic, 1)
    with pytest.raises(SourceError, match="not assigned"):
        src.pause([Partition(cfg.labels_topic, 0)])
    src.pause([p0])
    assert src.paused() == {p0}
    first = [r for _ in range(4) for r in src.poll(timeout_s=0.5)]
    assert first and {r.partition for r in first} == {1}
    src.resume([p0])
    assert {r.partition for r in poll_until(src, 40 - len(first))} == {0}
    src.pause()
    assert src.paused() == {p0, p1}
    produce(cfg, broker.bootstrap, 10)
    assert [r for _ in range(3) for r in src.poll(timeout_s=0.5)] == []
    src.resume()
    assert len(poll_until(src, 10)) == 10
    src.close()


def test_flush_raises_for_an_oversize_message(broker: EmbeddedBroker, cfg: KafkaConfig) -> None:
    ensure_topics(cfg, broker.bootstrap)
    sink = KafkaSink(cfg, broker.bootstrap)
    good = sink.send(cfg.prompts_topic, b"fine")
    sink.send(cfg.prompts_topic, b"x" * (cfg.max_message_bytes + 1), key=b"big")
    with pytest.raises(SinkError) as err:
        sink.flush(timeout_s=10.0)  # 10 s: one small record to a local broker
    (failure,) = err.value.failures
    assert (failure.topic, failure.key, failure.kind) == (cfg.prompts_topic, b"big", "oversize")
    assert cfg.prompts_topic in str(err.value) and "MessageSizeTooLarge" in str(err.value)
    assert good.get(timeout_s=5.0).topic == cfg.prompts_topic
    sink.send(cfg.prompts_topic, b"after")
    sink.flush(timeout_s=10.0)  # the failure was reported once; this flush is clean
    sink.close()


def test_flush_raises_when_the_broker_is_gone(broker: EmbeddedBroker, cfg: KafkaConfig) -> None:
    ensure_topics(cfg, broker.bootstrap)
    sink = KafkaSink(cfg, broker.bootstrap)
    sink.send(cfg.prompts_topic, b"before")
    sink.flush(timeout_s=10.0)  # 10 s: one small record to a local broker
    broker.stop()
    sink.send(cfg.prompts_topic, b"unacknowledged")
    with pytest.raises(SinkError) as err:
        sink.flush(timeout_s=1.0)  # 1 s: nothing will answer; the test only needs the error
    assert [f.kind for f in err.value.failures] == ["timeout"]
    sink.close(timeout_s=0.5)


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in state  # a zombie waiting for init to reap it is not running


def test_stop_leaves_no_process_and_restart_keeps_the_port(tmp_path: Path) -> None:
    broker = EmbeddedBroker(log_dir=tmp_path).start()
    pid, bootstrap = broker.pid, broker.bootstrap
    assert pid is not None
    broker.restart()
    assert broker.bootstrap == bootstrap and broker.pid != pid and _gone(pid)
    pid = broker.pid
    sink = KafkaSink(KafkaConfig(), bootstrap)  # an open client must not delay the stop
    started = time.monotonic()
    broker.stop(grace_s=5.0)
    assert time.monotonic() - started < 2.0 and broker.returncode == 0
    assert pid is not None and _gone(pid) and not broker.running
    sink.close(timeout_s=0.5)
    assert "tansu broker" in broker.log_path.read_text()


def test_broker_dies_with_a_killed_parent(tmp_path: Path) -> None:
    code = (
        "import sys, time; from online_distill.streams import EmbeddedBroker; "
        f"b = EmbeddedBroker(log_dir={str(tmp_path)!r}).start(); "
        "print(b.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)  # no atexit, no finalizer: only the kernel helps
    parent.wait()
    deadline = time.monotonic() + 5.0  # SIGTERM reaches Tansu at once; it exits in ms
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid)


def test_start_failure_reports_the_broker_log(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="UnsupportedStorageUrl"):
        EmbeddedBroker(storage="bogus://x", log_dir=tmp_path).start()
