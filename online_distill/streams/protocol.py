"""What a stage needs from a message broker: records, a source, a sink. No Kafka import.

Offsets follow the Kafka convention everywhere in this package: a *committed* offset, a
*position* and an offset given to `seek` are all the offset of the NEXT record to read,
i.e. the last processed record's offset + 1. Committing ``{p: 10}`` says "records 0..9 of p
are done"; a restarted consumer of the same group reads record 10 first. Committing a
record's own offset (an off-by-one) would deliver it once more after every restart;
`next_offsets` computes the right values from the records a stage has finished.

The commit order of a stage (written out again where each stage does it):

1. poll records from the source;
2. process them and `send` the outputs to the sink;
3. `flush` the sink, which raises `SinkError` if any output was not acknowledged;
4. only then `commit` the source offsets (`next_offsets` of the processed records).

A crash between any two steps loses nothing: uncommitted input is read again
(at-least-once; messages carry ids for de-duplication).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol


class Partition(NamedTuple):
    """One partition of one topic: the key of every offset map."""

    topic: str
    partition: int


@dataclass(frozen=True)
class Record:
    """One record read from a source, exactly as the broker returned it."""

    topic: str
    partition: int
    offset: int
    """Its own offset; the offset to commit once it is processed is `offset + 1`."""
    key: bytes | None
    value: bytes
    """The payload; a Kafka tombstone (null value) reads as b""."""
    timestamp_ms: int
    """Broker or producer timestamp, unix milliseconds; -1 when unknown."""

    @property
    def where(self) -> Partition:
        """The partition this record came from."""
        return Partition(self.topic, self.partition)


def next_offsets(records: Iterable[Record]) -> dict[Partition, int]:
    """The offsets to commit after processing `records`: per partition, max offset + 1."""
    out: dict[Partition, int] = {}
    for r in records:
        out[r.where] = max(out.get(r.where, 0), r.offset + 1)
    return out


@dataclass(frozen=True)
class Delivered:
    """Where the broker stored a sent record."""

    topic: str
    partition: int
    offset: int


class SendHandle(Protocol):
    """The result of one `MessageSink.send`, available once the broker acknowledged it."""

    def done(self) -> bool:
        """True once the record was acknowledged or failed."""
        ...

    def get(self, timeout_s: float) -> Delivered:
        """Wait up to `timeout_s` for the acknowledgement; raise SinkError if it failed."""
        ...


class MessageSource(Protocol):
    """Records from a set of topics, read by one member of a consumer group.

    Nothing is committed automatically: the stage commits explicit offsets (the NEXT
    offset to read, see the module docstring) after its outputs are acknowledged.
    """

    def poll(self, max_records: int | None = None, timeout_s: float = 1.0) -> list[Record]:
        """Up to `max_records` records (None: the configured maximum), waiting at most
        `timeout_s` when none is ready (default 1 s: long enough not to spin, short enough
        for a stage loop to notice shutdown); [] when none arrived. Records of one partition
        come in offset order. Call it regularly: it also keeps group membership alive."""
        ...

    def commit(self, offsets: Mapping[Partition, int]) -> None:
        """Commit, per partition, the offset of the next record to read (last done + 1).
        Raises CommitError when the broker refuses (e.g. the partition moved away)."""
        ...

    def seek(self, offsets: Mapping[Partition, int]) -> None:
        """Make the next poll read each given partition from the given offset."""
        ...

    def pause(self, partitions: Iterable[Partition] | None = None) -> None:
        """Stop returning records of these partitions (None: all assigned) until resumed,
        while poll keeps the membership alive: back-pressure without leaving the group."""
        ...

    def resume(self, partitions: Iterable[Partition] | None = None) -> None:
        """Undo `pause` for these partitions (None: all)."""
        ...

    def paused(self) -> frozenset[Partition]:
        """Partitions paused now."""
        ...

    def assignment(self) -> frozenset[Partition]:
        """Partitions this member currently reads; empty before the first assignment."""
        ...

    def position(self) -> dict[Partition, int]:
        """Per assigned partition, the offset of the next record poll will return."""
        ...

    def lag(self) -> dict[Partition, int]:
        """Per assigned partition, how many records the group has not committed yet: end
        offset minus committed offset; with no commit yet, minus where the group starts
        (the log start for auto_offset_reset=earliest, the current position for latest).
        Exact once the partition has been fetched from (the end comes with each fetch)."""
        ...

    def close(self) -> None:
        """Leave the group and release connections; commits nothing."""
        ...


class MessageSink(Protocol):
    """Sends records to topics; `flush` says whether all of them were acknowledged."""

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> SendHandle:
        """Queue one record. Never raises for a delivery problem: that surfaces in `flush`
        (and in the handle)."""
        ...

    def flush(self, timeout_s: float) -> None:
        """Wait until every record sent since the last flush is acknowledged or failed;
        raise SinkError listing the failures (including those not done in `timeout_s`).
        Each flush reports a failure once."""
        ...

    def close(self) -> None:
        """Flush what is queued (best effort) and release connections."""
        ...
