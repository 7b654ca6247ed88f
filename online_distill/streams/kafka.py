"""kafka-python implementations of `MessageSource` and `MessageSink`.

`KafkaSource` wraps a KafkaConsumer with auto-commit off: offsets are committed only when a
stage calls `commit` (after its outputs are acknowledged; see protocol.py). `KafkaSink`
wraps a KafkaProducer with acks='all'; `flush` raises `SinkError` if any record sent since
the last flush failed. Client settings (security, SASL, TLS) come from `client_kwargs`,
topic creation from `ensure_topics` (both in admin.py, re-exported here). The package
imports this module lazily: `import online_distill.streams` loads no Kafka client.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka import errors as kerrors
from kafka.producer.future import FutureRecordMetadata
from kafka.structs import OffsetAndMetadata

from ..config.kafka import KafkaConfig
from .admin import client_kwargs, ensure_topics, redact_kafka_logs
from .exceptions import (
    BrokerUnreachable,
    CommitError,
    FailureKind,
    SendFailure,
    SinkError,
    SourceError,
    StreamsError,
)
from .offsets import shard_partitions
from .protocol import Delivered, Partition, Record

__all__ = ["KafkaSink", "KafkaSource", "client_kwargs", "ensure_topics"]

log = logging.getLogger(__name__)
redact_kafka_logs()  # kafka-python logs its configuration, password included, at DEBUG


@contextmanager
def unreachable_as_error(bootstrap: str, cfg: KafkaConfig) -> Iterator[None]:
    """kafka-python's "no broker answered" errors at client creation as one
    :class:`BrokerUnreachable` that names the address (a user mistake, not a traceback)."""
    try:
        yield
    except kerrors.KafkaTimeoutError as exc:  # kafka-python 3: "Unable to bootstrap from"
        raise BrokerUnreachable(
            f"no Kafka broker answered at {bootstrap} ({cfg.security_protocol}) within "
            f"{cfg.request_timeout_ms / 1000:g} s (kafka.request_timeout_ms); check "
            "kafka.bootstrap_servers: `online-distill up` prints the address of the broker it "
            "runs ('online-distill up: broker HOST:PORT')") from exc


def _tp(p: Partition) -> TopicPartition:
    return TopicPartition(p.topic, p.partition)


class KafkaSource:
    """A `MessageSource`: one member of the consumer group `<prefix>.<stage>`.

    `manual_assign=True` assigns every partition of `topics` to this consumer at once,
    without group membership (no rebalances, `seek` works right away): for a single reader
    that restores offsets from its own checkpoint, such as the learner. Offsets are still
    committed under the group id, so lag stays visible. Use from one thread only.
    """

    def __init__(
        self,
        cfg: KafkaConfig,
        bootstrap: str,
        stage: str,
        topics: Sequence[str],
        *,
        manual_assign: bool = False,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        """``shard=(rank, n)`` with ``manual_assign``: take only this worker's share of each
        topic's partitions (:func:`online_distill.learner.lockstep.shard_partitions`)."""
        self.group_id = f"{cfg.consumer_group_prefix}.{stage}"
        # Offset, commit and metadata calls wait at most one broker request timeout.
        self._timeout_ms = cfg.request_timeout_ms
        self._reset = cfg.auto_offset_reset
        kwargs = client_kwargs(cfg, bootstrap)
        kwargs["client_id"] = f"{cfg.client_id}.{stage}"
        with unreachable_as_error(bootstrap, cfg):
            self._consumer = self._connect(cfg, kwargs)
            if manual_assign:
                rank, n = shard
                parts = [TopicPartition(t, i) for t in topics
                         for i in shard_partitions(self._partitions_of(t), rank, n)]
                self._consumer.assign(parts)
            else:
                self._consumer.subscribe(list(topics))

    def _connect(self, cfg: KafkaConfig, kwargs: dict[str, object]) -> KafkaConsumer:
        return KafkaConsumer(
            # Finding the cluster waits one request timeout, like every other broker call.
            bootstrap_timeout_ms=cfg.request_timeout_ms,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset=cfg.auto_offset_reset,
            session_timeout_ms=cfg.session_timeout_ms,
            # Three heartbeats per session, the usual ratio; kafka-python's fixed 3 s default
            # would not fit a short session timeout.
            heartbeat_interval_ms=max(100, cfg.session_timeout_ms // 3),
            max_poll_interval_ms=cfg.max_poll_interval_ms,
            max_poll_records=cfg.max_poll_records,
            **kwargs,
        )

    def _partitions_of(self, topic: str) -> list[int]:
        parts = sorted(self._consumer.partitions_for_topic(topic))
        if not parts:
            raise SourceError(f"topic {topic!r} does not exist; create it (ensure_topics) first")
        return parts

    def poll(self, max_records: int | None = None, timeout_s: float = 1.0) -> list[Record]:
        batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        return [
            Record(r.topic, r.partition, r.offset, r.key, r.value or b"", r.timestamp)
            for recs in batches.values()
            for r in recs
        ]

    def commit(self, offsets: Mapping[Partition, int]) -> None:
        if not offsets:
            return
        request = {_tp(p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()}
        try:
            self._consumer.commit(request, timeout_ms=self._timeout_ms)
        except kerrors.KafkaError as e:
            shown = {f"{p.topic}/{p.partition}": o for p, o in offsets.items()}
            raise CommitError(
                f"group {self.group_id}: commit of {shown} failed ({type(e).__name__}: {e}); "
                "the uncommitted records will be delivered again"
            ) from e

    def seek(self, offsets: Mapping[Partition, int]) -> None:
        for tp, (p, o) in zip(self._tps(offsets), offsets.items(), strict=True):
            if o < 0:
                raise SourceError(f"{p}: cannot seek to negative offset {o}")
            self._consumer.seek(tp, o)

    def pause(self, partitions: Iterable[Partition] | None = None) -> None:
        self._consumer.pause(*self._tps(partitions))

    def resume(self, partitions: Iterable[Partition] | None = None) -> None:
        self._consumer.resume(*self._tps(partitions))

    def paused(self) -> frozenset[Partition]:
        return frozenset(Partition(t.topic, t.partition) for t in self._consumer.paused())

    def assignment(self) -> frozenset[Partition]:
        tps = self._consumer.assignment() or set()
        return frozenset(Partition(t.topic, t.partition) for t in tps)

    def position(self) -> dict[Partition, int]:
        out: dict[Partition, int] = {}
        for p in sorted(self.assignment()):
            pos = self._consumer.position(_tp(p), timeout_ms=self._timeout_ms)
            if pos is not None:
                out[p] = pos
        return out

    def lag(self) -> dict[Partition, int]:
        parts = sorted(self.assignment())
        if not parts:
            return {}
        tps = [_tp(p) for p in parts]
        # The end is the larger of ListOffsets' answer and the high watermark of the last
        # fetch: Tansu 0.6 answers ListOffsets with the last batch's base offset + 1, short
        # of the end when that batch holds several records; the fetch's watermark is right.
        listed = self._consumer.end_offsets(tps, timeout_ms=self._timeout_ms)
        ends = {tp: max(listed[tp], self._consumer.highwater(tp) or 0) for tp in tps}
        starts: dict[TopicPartition, int] = {}
        if self._reset == "earliest":  # with no commit, the group starts at the log start
            starts = self._consumer.beginning_offsets(tps, timeout_ms=self._timeout_ms)
        out: dict[Partition, int] = {}
        for p, tp in zip(parts, tps, strict=True):
            base = self._consumer.committed(tp, timeout_ms=self._timeout_ms)
            if base is None:
                base = starts.get(tp)
            if base is None:
                base = self._consumer.position(tp, timeout_ms=self._timeout_ms) or 0
            out[p] = max(0, ends[tp] - base)
        return out

    def close(self) -> None:
        # Bounded: leaving the group waits at most one request timeout on a dead broker.
        self._consumer.close(autocommit=False, timeout_ms=self._timeout_ms)

    def _tps(self, partitions: Iterable[Partition] | None) -> list[TopicPartition]:
        """`partitions` (None: all assigned) as TopicPartitions; SourceError if one is not
        assigned (kafka-python would fail with a bare KeyError or IllegalStateError)."""
        assigned = self.assignment()
        parts = [Partition(*p) for p in (assigned if partitions is None else partitions)]
        unknown = [p for p in parts if p not in assigned]
        if unknown:
            raise SourceError(f"partitions not assigned to this consumer: {unknown}")
        return [_tp(p) for p in parts]


def _kind(error: BaseException) -> FailureKind:
    if isinstance(error, kerrors.MessageSizeTooLargeError):
        return "oversize"
    if isinstance(error, (kerrors.KafkaTimeoutError, kerrors.RequestTimedOutError)):
        return "timeout"
    return "error"


class _Handle:
    """A send handle over a kafka-python future, or a failure known at send time."""

    def __init__(
        self,
        topic: str,
        key: bytes | None,
        future: FutureRecordMetadata | None,
        failure: SendFailure | None = None,
    ) -> None:
        self.topic, self.key, self.future, self.failure = topic, key, future, failure

    def done(self) -> bool:
        return self.future is None or bool(self.future.is_done)

    def outcome(self, waited_s: float) -> SendFailure | None:
        """The failure of this send, if any, once flush has waited `waited_s`."""
        fut = self.future
        if fut is None:
            return self.failure
        if not fut.is_done:
            error = kerrors.KafkaTimeoutError(f"not acknowledged within {waited_s} s")
            return SendFailure(self.topic, self.key, "timeout", error)
        if fut.failed():
            return SendFailure(self.topic, self.key, _kind(fut.exception), fut.exception)
        return None

    def get(self, timeout_s: float) -> Delivered:
        if self.future is None:
            assert self.failure is not None
            raise SinkError([self.failure])
        try:
            md = self.future.get(timeout=timeout_s)
        except kerrors.KafkaError as e:
            raise SinkError([SendFailure(self.topic, self.key, _kind(e), e)]) from e
        return Delivered(md.topic, md.partition, md.offset)


class KafkaSink:
    """A `MessageSink` over a KafkaProducer with acks='all'. Use from one thread only.

    Idempotence follows `cfg.producer_idempotence` (null: on for your cluster, off for the
    embedded Tansu broker, which loses acknowledged records of idempotent producers across a
    crash); with it on, retries never duplicate a record.
    """

    def __init__(self, cfg: KafkaConfig, bootstrap: str, stage: str = "producer") -> None:
        kwargs = client_kwargs(cfg, bootstrap)
        kwargs["client_id"] = f"{cfg.client_id}.{stage}"
        with unreachable_as_error(bootstrap, cfg):
            self._producer = self._connect(cfg, kwargs)
        self._pending: list[_Handle] = []
        self._closed = False

    @staticmethod
    def _connect(cfg: KafkaConfig, kwargs: dict[str, object]) -> KafkaProducer:
        return KafkaProducer(
            # Finding the cluster waits one request timeout, like every other broker call.
            bootstrap_timeout_ms=cfg.request_timeout_ms,
            acks="all",
            linger_ms=cfg.producer_linger_ms,
            max_request_size=cfg.max_message_bytes,
            # send() blocks for topic metadata at most one request timeout (not the 60 s
            # default), so a missing topic fails the send instead of stalling the stage.
            max_block_ms=cfg.request_timeout_ms,
            # Delivery must cover at least one request plus the linger (kafka-python's rule);
            # 120 s (its default) leaves room for retries across a leader change.
            delivery_timeout_ms=max(120000, cfg.request_timeout_ms + cfg.producer_linger_ms),
            enable_idempotence=(bool(cfg.bootstrap_servers) if cfg.producer_idempotence is None
                                else cfg.producer_idempotence),
            **kwargs,
        )

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> _Handle:
        if self._closed:
            failure = SendFailure(topic, key, "closed", StreamsError("the sink is closed"))
            handle = _Handle(topic, key, None, failure)
        else:
            try:
                future = self._producer.send(topic, value=value, key=key)
                handle = _Handle(topic, key, future, None)
            except kerrors.KafkaError as e:  # oversize, metadata timeout: known at once
                handle = _Handle(topic, key, None, SendFailure(topic, key, _kind(e), e))
        self._pending.append(handle)
        return handle

    def flush(self, timeout_s: float) -> None:
        pending, self._pending = self._pending, []
        try:
            self._producer.flush(timeout=timeout_s)
        except kerrors.KafkaTimeoutError:
            pass  # the records not done yet are reported below, as timeouts
        failures = [f for h in pending if (f := h.outcome(timeout_s)) is not None]
        if failures:
            for f in failures[:3]:
                log.warning("send to %s failed: %s", f.topic, f)
            raise SinkError(failures)

    def close(self, timeout_s: float = 10.0) -> None:
        """Send what is queued (waiting at most `timeout_s`: shutdown must not hang on a dead
        broker) and close. Failures are not reported: flush first to see them."""
        if self._closed:
            return
        self._closed = True
        try:
            self._producer.close(timeout=timeout_s)
        except kerrors.KafkaTimeoutError:
            # kafka-python 3.0 raises from close() when records are still unsent, before
            # it force-closes its sender thread; finish that here so no thread is left.
            log.warning("closing the producer with unsent records; they are dropped")
            sender = getattr(self._producer, "_sender", None)
            if sender is not None:
                sender.force_close()
            self._producer._closed = True  # keeps __del__ from trying (and failing) again
