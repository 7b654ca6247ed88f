"""Streams without a broker: memory source/sink semantics, dead letters, client settings."""

from __future__ import annotations

import inspect
import logging
import subprocess
import sys

import pytest

from online_distill.config.kafka import KafkaConfig
from online_distill.messages import DeadLetter, LabeledExample, PromptMessage, decode, encode
from online_distill.streams import (
    CommitError,
    DeadLetterWriter,
    Delivered,
    MemoryLog,
    MemorySink,
    MemorySource,
    MessageSink,
    MessageSource,
    Partition,
    Record,
    SinkError,
    SourceError,
    client_kwargs,
    decode_or_dead_letter,
    next_offsets,
    tansu_binary,
)

T = "prompts"
P0, P1 = Partition(T, 0), Partition(T, 1)


def filled(n: int = 10) -> MemoryLog:
    log = MemoryLog(partitions=2)
    sink = MemorySink(log)
    for i in range(n):
        sink.send(T, f"v{i}".encode(), key=f"k{i}".encode())
    sink.flush(1.0)
    return log


def rec(value: bytes, offset: int = 7, key: bytes | None = b"id-1") -> Record:
    return Record("prompts", 1, offset, key, value, 1_700_000_000_000)


def test_next_offsets_is_last_offset_plus_one_per_partition() -> None:
    records = [rec(b"", 3), rec(b"", 9), rec(b"", 5), Record("x", 0, 0, None, b"", 0)]
    assert next_offsets(records) == {Partition("prompts", 1): 10, Partition("x", 0): 1}
    assert next_offsets([]) == {}


def test_round_trip_keeps_partition_order_and_key_placement() -> None:
    log = filled(20)
    got = MemorySource(log, [T]).poll()
    assert sorted(r.value for r in got) == sorted(f"v{i}".encode() for i in range(20))
    for p in (0, 1):
        offsets = [r.offset for r in got if r.partition == p]
        assert offsets == list(range(len(offsets)))
    again = MemorySink(log).send(T, b"again", key=b"k3").get(1.0)
    first = next(r for r in got if r.key == b"k3")
    assert again.partition == first.partition  # same key, same partition


def test_poll_respects_max_records() -> None:
    src = MemorySource(filled(10), [T])
    assert len(src.poll(max_records=3)) == 3
    assert len(src.poll(max_records=100)) == 7
    assert src.poll() == []


def test_new_consumer_of_group_resumes_exactly_at_commit() -> None:
    log = filled(10)
    src = MemorySource(log, [T], group="g")
    first = src.poll(max_records=4)
    src.commit(next_offsets(first))
    src.poll()  # read but never committed: must come again
    src.close()
    rest = MemorySource(log, [T], group="g").poll()
    seen = [(r.partition, r.offset) for r in first + rest]
    assert len(seen) == len(set(seen)) == 10  # no loss, no duplicate
    assert len(MemorySource(log, [T], group="other").poll()) == 10
    assert MemorySource(log, [T], group="late", auto_offset_reset="latest").poll() == []


def test_pause_and_resume() -> None:
    src = MemorySource(filled(10), [T])
    src.pause([P0])
    assert src.paused() == {P0}
    assert {r.partition for r in src.poll()} == {1}
    src.resume([P0])
    assert {r.partition for r in src.poll()} == {0}
    src.pause()
    assert src.paused() == src.assignment() == {P0, P1}
    src.resume()
    assert src.paused() == frozenset()


def test_seek_rewinds_and_position_is_next_offset() -> None:
    src = MemorySource(filled(10), [T])
    src.poll()
    end = src.position()
    src.seek({P0: 1})
    assert [r.offset for r in src.poll()] == list(range(1, end[P0]))
    assert src.position() == end


def test_lag_counts_uncommitted_records() -> None:
    src = MemorySource(filled(10), [T])
    assert sum(src.lag().values()) == 10
    src.commit(next_offsets(src.poll()))
    assert src.lag() == {P0: 0, P1: 0}


def test_bad_commit_seek_and_closed_source_raise() -> None:
    src = MemorySource(filled(4), [T])
    with pytest.raises(CommitError, match="not assigned"):
        src.commit({Partition("other", 0): 1})
    with pytest.raises(CommitError, match="outside"):
        src.commit({P0: 99})
    with pytest.raises(SourceError):
        src.seek({Partition(T, 5): 0})
    src.close()
    with pytest.raises(SourceError, match="closed"):
        src.poll()


def test_flush_reports_each_failure_once_and_keeps_good_records() -> None:
    log = MemoryLog()
    sink = MemorySink(log, max_message_bytes=100)
    ok = sink.send(T, b"ok")
    big = sink.send(T, b"x" * 101, key=b"big")
    sink.fail_next(1)
    late = sink.send(T, b"lost")
    with pytest.raises(SinkError) as err:
        sink.flush(1.0)
    kinds = [(f.topic, f.key, f.kind) for f in err.value.failures]
    assert kinds == [(T, b"big", "oversize"), (T, None, "timeout")]
    assert "2 send(s) failed" in str(err.value) and T in str(err.value)
    sink.flush(1.0)  # already reported
    assert [r.value for r in log.records(T)] == [b"ok"]
    assert isinstance(ok.get(1.0), Delivered) and ok.done()
    for handle in (big, late):
        with pytest.raises(SinkError):
            handle.get(1.0)
    sink.close()
    sink.send(T, b"after close")
    with pytest.raises(SinkError, match="closed"):
        sink.flush(1.0)


def test_dead_letter_wraps_the_original_bytes() -> None:
    log = MemoryLog()
    writer = DeadLetterWriter(MemorySink(log), "dead", stage="teacher")
    original = rec(b"\x00\xffnot a message", offset=42)
    writer.send(original, "bad_magic: nope", "bad_magic")
    (stored,) = log.records("dead")
    assert stored.key == original.key
    letter = decode(stored.value, DeadLetter)
    assert letter.payload == original.value
    assert (letter.topic, letter.partition, letter.offset) == ("prompts", 1, 42)
    assert (letter.stage, letter.reason, letter.error_type) == (
        "teacher",
        "bad_magic: nope",
        "bad_magic",
    )
    assert writer.count == 1 and writer.by_error_type == {"bad_magic": 1}


def test_dead_letter_payload_truncation_is_stated_in_reason() -> None:
    log = MemoryLog()
    writer = DeadLetterWriter(MemorySink(log), "dead", "learner", max_payload_bytes=8)
    writer.send(rec(b"0123456789abcdef"), "too big", "oversize")
    letter = decode(log.records("dead")[0].value, DeadLetter)
    assert letter.payload == b"01234567"
    assert letter.reason == "too big [payload truncated from 16 bytes]"


def test_decode_or_dead_letter(caplog: pytest.LogCaptureFixture) -> None:
    log = MemoryLog()
    writer = DeadLetterWriter(MemorySink(log), "dead", "teacher")
    good = encode(PromptMessage(text="2+2="))
    assert decode_or_dead_letter(rec(good), PromptMessage, writer, 1 << 20) is not None
    assert writer.count == 0
    bad = {
        b"garbage": "bad_magic",
        good[:-3]: "truncated",
        good[:-1] + bytes([good[-1] ^ 1]): "bad_checksum",
        b"": "truncated",
    }
    with caplog.at_level(logging.WARNING, logger="online_distill.streams"):
        for i, value in enumerate(bad):
            assert (
                decode_or_dead_letter(rec(value, offset=i), PromptMessage, writer, 1 << 20) is None
            )
        assert decode_or_dead_letter(rec(good, offset=10), LabeledExample, writer, 1 << 20) is None
        assert decode_or_dead_letter(rec(good, offset=11), PromptMessage, writer, 10) is None
    reasons = [*bad.values(), "wrong_type", "oversize"]
    letters = [decode(r.value, DeadLetter) for r in log.records("dead")]
    assert [d.error_type for d in letters] == reasons
    assert [d.payload for d in letters] == [*bad, good, good]
    assert writer.count == 6 and writer.by_error_type["truncated"] == 2
    assert "prompts/1@11" in caplog.text and "oversize" in caplog.text


def test_client_kwargs_sasl_ssl_scram(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OD_TEST_KAFKA_PW", "s3cret")
    cfg = KafkaConfig(
        bootstrap_servers="b1:9093,b2:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="distill",
        sasl_password_env="OD_TEST_KAFKA_PW",
        ssl_cafile="/etc/ca.pem",
    )
    kw = client_kwargs(cfg, " b1:9093, b2:9093 ")
    assert kw["bootstrap_servers"] == ["b1:9093", "b2:9093"]
    assert kw["security_protocol"] == "SASL_SSL"
    assert kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (kw["sasl_plain_username"], kw["sasl_plain_password"]) == ("distill", "s3cret")
    assert kw["ssl_cafile"] == "/etc/ca.pem" and kw["ssl_certfile"] is None
    assert kw["ssl_check_hostname"] is True
    monkeypatch.delenv("OD_TEST_KAFKA_PW")
    with pytest.raises(Exception, match="OD_TEST_KAFKA_PW") as err:
        client_kwargs(cfg, "b1:9093")
    assert "s3cret" not in str(err.value)


def test_client_kwargs_plaintext_has_no_security_settings() -> None:
    kw = client_kwargs(KafkaConfig(), "127.0.0.1:9092")
    assert kw["security_protocol"] == "PLAINTEXT"
    assert not any(k.startswith(("sasl", "ssl")) for k in kw)


def params(fn: object) -> list[str]:
    return list(inspect.signature(fn).parameters)  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", [MessageSource, MessageSink])
def test_implementations_have_every_protocol_method(protocol: type) -> None:
    from online_distill.streams import KafkaSink, KafkaSource

    impls = (KafkaSource, MemorySource) if protocol is MessageSource else (KafkaSink, MemorySink)
    methods = [n for n, _ in inspect.getmembers(protocol, inspect.isfunction) if n[0] != "_"]
    for impl in impls:
        for name in methods:
            wanted = params(getattr(protocol, name))
            assert params(getattr(impl, name))[: len(wanted)] == wanted, f"{impl.__name__}.{name}"


def test_package_import_loads_no_kafka_client() -> None:
    code = "import sys, online_distill.streams; print('kafka' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_tansu_binary_is_found() -> None:
    assert tansu_binary().name == "tansu"
