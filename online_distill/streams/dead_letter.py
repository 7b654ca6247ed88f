"""Recoverable errors: log where the record was, count it, dead-letter it, go on.

A record a stage cannot handle is wrapped, byte for byte, in a `DeadLetter` message
(origin topic/partition/offset, stage, reason, error type) and produced to the dead-letter
topic through the stage's own sink, so the stage's flush-then-commit covers it: the input
offset is committed only once the dead letter is acknowledged.
"""

from __future__ import annotations

import logging
from collections import Counter

from ..messages import DeadLetter, MessageDecodeError, decode, encode
from ..messages.schema import M
from .protocol import MessageSink, Record, SendHandle

log = logging.getLogger(__name__)

_TRUNCATED_NOTE = " [payload truncated from {n} bytes]"


class DeadLetterWriter:
    """Produces `DeadLetter` messages for one stage to one topic, and counts them."""

    def __init__(
        self, sink: MessageSink, topic: str, stage: str, max_payload_bytes: int | None = None
    ) -> None:
        """`max_payload_bytes`: cut longer payloads (and say so in the reason) so that the
        dead letter itself fits under the producer's size limit; None keeps them whole."""
        self.sink, self.topic, self.stage = sink, topic, stage
        self.max_payload_bytes = max_payload_bytes
        self.count = 0
        """Records dead-lettered by this writer so far."""
        self.by_error_type: Counter[str] = Counter()
        """The same count per error type (a decode reason or an exception class name)."""
        self.by_topic: Counter[tuple[str, str]] = Counter()
        """The same count per (input topic, error type)."""

    def send(self, record: Record, reason: str, error_type: str) -> SendHandle:
        """Log the record's place and `reason` at WARNING, count it, produce its dead letter.

        Delivery failures surface in the sink's next `flush`, like any other output.
        """
        payload = record.value
        limit = self.max_payload_bytes
        if limit is not None and len(payload) > limit:
            reason += _TRUNCATED_NOTE.format(n=len(payload))
            payload = payload[:limit]
        log.warning(
            "%s: dead-lettering %s/%d@%d (%s): %s",
            self.stage,
            record.topic,
            record.partition,
            record.offset,
            error_type,
            reason,
        )
        self.count += 1
        self.by_error_type[error_type] += 1
        self.by_topic[(record.topic, error_type)] += 1
        letter = DeadLetter(
            payload=payload,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=reason,
            stage=self.stage,
            error_type=error_type,
        )
        return self.sink.send(self.topic, encode(letter), key=record.key)


def decode_or_dead_letter(
    record: Record, expected_type: type[M], writer: DeadLetterWriter, max_bytes: int
) -> M | None:
    """The message in `record`, or None after dead-lettering it when it does not decode.

    Only `MessageDecodeError` (bad bytes, wrong type, over `max_bytes`) is treated as
    recoverable; the dead letter's error_type is its reason code ("truncated", ...).
    """
    try:
        return decode(record.value, expected_type, max_bytes)
    except MessageDecodeError as e:
        writer.send(record, str(e), e.reason)
        return None
