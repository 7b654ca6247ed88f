"""In-memory broker, source and sink: controllable fakes for broker-free unit tests only.

`MemoryLog` holds topics (lists of partitions of `Record`s) and the committed offsets of
consumer groups. `MemorySink` appends to it at once (or fails on demand: `fail_next`, or
records over `max_message_bytes`); `MemorySource` reads it like one consumer that owns
every partition of its topics. A new `MemorySource` of the same group resumes at the
committed offsets, so resume semantics can be tested without a broker. No clock, no
threads: `poll` never waits.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from .exceptions import CommitError, SendFailure, SinkError, SourceError, StreamsError
from .protocol import Delivered, Partition, Record


class MemoryLog:
    """Topics and committed group offsets, shared by memory sources and sinks."""

    def __init__(self, partitions: int = 2) -> None:
        self.default_partitions = partitions
        self.topics: dict[str, list[list[Record]]] = {}
        self.committed: dict[str, dict[Partition, int]] = {}
        """Per group id, the committed offset (next to read) of each partition."""
        self._round_robin = 0

    def create_topic(self, topic: str, partitions: int | None = None) -> None:
        """Create `topic` if missing (like broker auto-creation)."""
        if topic not in self.topics:
            self.topics[topic] = [[] for _ in range(partitions or self.default_partitions)]

    def append(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> Record:
        """Store one record: in `partition`, else by CRC-32 of the key, else round robin."""
        self.create_topic(topic)
        parts = self.topics[topic]
        if partition is None:
            if key is None:
                partition, self._round_robin = self._round_robin % len(parts), self._round_robin + 1
            else:
                partition = zlib.crc32(key) % len(parts)
        log = parts[partition]
        record = Record(topic, partition, len(log), key, bytes(value), int(time.time() * 1000))
        log.append(record)
        return record

    def records(self, topic: str) -> list[Record]:
        """Every record of `topic`, partition by partition, in offset order."""
        return [r for part in self.topics.get(topic, []) for r in part]

    def end_offset(self, p: Partition) -> int:
        """The offset the next record of `p` will get."""
        return len(self.topics[p.topic][p.partition])


class _Done:
    """A send handle whose outcome is known at once."""

    def __init__(self, delivered: Delivered | None, failure: SendFailure | None) -> None:
        self._delivered, self._failure = delivered, failure

    def done(self) -> bool:
        return True

    def get(self, timeout_s: float) -> Delivered:
        if self._failure is not None:
            raise SinkError([self._failure])
        assert self._delivered is not None
        return self._delivered


class MemorySink:
    """A `MessageSink` over a `MemoryLog`; records are visible to sources at once."""

    def __init__(self, log: MemoryLog, max_message_bytes: int = 1048576) -> None:
        self.log = log
        self.max_message_bytes = max_message_bytes
        self._failures: list[SendFailure] = []
        self._fail_next: list[BaseException] = []
        self.closed = False

    def fail_next(self, count: int = 1, error: BaseException | None = None) -> None:
        """Make the next `count` sends fail with `error` (default: a timeout)."""
        self._fail_next += [error or TimeoutError("injected by fail_next")] * count

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> _Done:
        """Append the record now, or record a failure for the next `flush`."""
        failure: SendFailure | None = None
        if self.closed:
            failure = SendFailure(topic, key, "closed", StreamsError("sink is closed"))
        elif len(value) > self.max_message_bytes:
            too_big = ValueError(f"{len(value)} bytes > max_message_bytes={self.max_message_bytes}")
            failure = SendFailure(topic, key, "oversize", too_big)
        elif self._fail_next:
            error = self._fail_next.pop(0)
            kind: Literal["timeout", "error"] = (
                "timeout" if isinstance(error, TimeoutError) else "error"
            )
            failure = SendFailure(topic, key, kind, error)
        if failure is not None:
            self._failures.append(failure)
            return _Done(None, failure)
        r = self.log.append(topic, value, key)
        return _Done(Delivered(r.topic, r.partition, r.offset), None)

    def flush(self, timeout_s: float) -> None:
        """Raise SinkError for the failures since the last flush (each reported once)."""
        failures, self._failures = self._failures, []
        if failures:
            raise SinkError(failures)

    def close(self) -> None:
        self.closed = True


class MemorySource:
    """A `MessageSource` over a `MemoryLog`: one consumer owning all partitions of `topics`."""

    def __init__(
        self,
        log: MemoryLog,
        topics: Sequence[str],
        group: str = "test",
        auto_offset_reset: Literal["earliest", "latest"] = "earliest",
        max_poll_records: int = 256,
    ) -> None:
        self.log, self.group, self.max_poll_records = log, group, max_poll_records
        self._reset = auto_offset_reset
        for t in topics:
            log.create_topic(t)
        self._assigned = frozenset(
            Partition(t, i) for t in topics for i in range(len(log.topics[t]))
        )
        committed = log.committed.setdefault(group, {})
        self._position = {
            p: committed.get(p, 0 if auto_offset_reset == "earliest" else log.end_offset(p))
            for p in sorted(self._assigned)
        }
        self._paused: set[Partition] = set()
        self.closed = False

    def _check(self, partitions: Iterable[Partition]) -> list[Partition]:
        if self.closed:
            raise SourceError("source is closed")
        parts = [Partition(*p) for p in partitions]
        unknown = [p for p in parts if p not in self._assigned]
        if unknown:
            raise SourceError(f"partitions not assigned to this source: {unknown}")
        return parts

    def poll(self, max_records: int | None = None, timeout_s: float = 1.0) -> list[Record]:
        """Up to `max_records` records, partitions in turn; returns at once."""
        self._check([])
        budget = max_records or self.max_poll_records
        out: list[Record] = []
        for p, pos in self._position.items():
            if p in self._paused or budget <= 0:
                continue
            batch = self.log.topics[p.topic][p.partition][pos : pos + budget]
            out += batch
            budget -= len(batch)
            self._position[p] = pos + len(batch)
        return out

    def commit(self, offsets: Mapping[Partition, int]) -> None:
        """Store next-to-read offsets for the group; refuses impossible offsets."""
        self._check([])
        for p in offsets:
            if p not in self._assigned:  # like Kafka after a rebalance moved p away
                raise CommitError(f"{p}: not assigned to this consumer; commit refused")
            if not 0 <= offsets[p] <= self.log.end_offset(p):
                raise CommitError(f"{p}: offset {offsets[p]} outside [0, {self.log.end_offset(p)}]")
        self.log.committed[self.group].update({Partition(*p): o for p, o in offsets.items()})

    def seek(self, offsets: Mapping[Partition, int]) -> None:
        for p in self._check(offsets):
            self._position[p] = offsets[p]

    def pause(self, partitions: Iterable[Partition] | None = None) -> None:
        self._paused |= set(self._check(self._assigned if partitions is None else partitions))

    def resume(self, partitions: Iterable[Partition] | None = None) -> None:
        self._paused -= set(self._check(self._assigned if partitions is None else partitions))

    def paused(self) -> frozenset[Partition]:
        """Partitions paused now."""
        return frozenset(self._paused)

    def assignment(self) -> frozenset[Partition]:
        return self._assigned

    def position(self) -> dict[Partition, int]:
        return dict(self._position)

    def lag(self) -> dict[Partition, int]:
        committed = self.log.committed[self.group]
        start = {p: 0 if self._reset == "earliest" else pos for p, pos in self._position.items()}
        return {p: self.log.end_offset(p) - committed.get(p, start[p]) for p in self._position}

    def close(self) -> None:
        self.closed = True
