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
from ..messages.foreign import decode_prompt
from ..messages.schema import M, PromptMessage
from .protocol import MessageSink, Record, SendHandle

log = logging.getLogger(__name__)

_TRUNCATED_NOTE = " [payload truncated from {n} bytes]"
_MAX_REASON_CHARS = 2000
"""Longer reasons are cut: a reason can quote a field of the bad record (a 1 MB "origin")."""
_RECORD_OVERHEAD = 512
"""Bytes a Kafka producer adds around a record's key and value (batch and record headers),
rounded up generously; a dead letter's value, key and this must fit in max_message_bytes."""


class DeadLetterWriter:
    """Produces `DeadLetter` messages for one stage to one topic, and counts them."""

    def __init__(
        self,
        sink: MessageSink,
        topic: str,
        stage: str,
        max_payload_bytes: int | None = None,
        max_message_bytes: int = 1 << 20,
    ) -> None:
        """`max_payload_bytes`: cut longer payloads (and say so in the reason); None keeps
        them whole when they fit. `max_message_bytes`: the producer's record limit
        (kafka.max_message_bytes): a payload is always cut (and the reason says so) so that
        the dead letter fits under it. Without that, a record near the limit would give a
        dead letter the sink refuses: a fatal error, on every restart, for the same record."""
        self.sink, self.topic, self.stage = sink, topic, stage
        self.max_payload_bytes = max_payload_bytes
        self.max_message_bytes = max_message_bytes
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
        if len(reason) > _MAX_REASON_CHARS:
            reason = f"{reason[:_MAX_REASON_CHARS]}... [{len(reason)} chars]"
        data = self._fit(record, reason, error_type)
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
        return self.sink.send(self.topic, data, key=record.key)

    def _fit(self, record: Record, reason: str, error_type: str) -> bytes:
        """The encoded dead letter, its payload cut to max_payload_bytes and then to fit
        max_message_bytes (with the key and the producer's overhead)."""
        payload = record.value
        keep = len(payload)
        if self.max_payload_bytes is not None:
            keep = min(keep, self.max_payload_bytes)
        note = _TRUNCATED_NOTE.format(n=len(payload))
        while True:
            letter = DeadLetter(
                payload=payload[:keep],
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                reason=reason + (note if keep < len(payload) else ""),
                stage=self.stage,
                error_type=error_type,
            )
            data = encode(letter)
            over = len(data) + len(record.key or b"") + _RECORD_OVERHEAD - self.max_message_bytes
            if over <= 0 or keep == 0:
                return data
            keep = max(0, keep - over - len(note))


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


def prompt_or_dead_letter(record: Record, writer: DeadLetterWriter, max_bytes: int
                          ) -> PromptMessage | None:
    """The prompt in a prompts-topic record (binary, JSON object or plain UTF-8 text: see
    :mod:`online_distill.messages.foreign`), or None after dead-lettering it."""
    try:
        return decode_prompt(record.value, record.key, max_bytes)
    except MessageDecodeError as e:
        writer.send(record, str(e), e.reason)
        return None
