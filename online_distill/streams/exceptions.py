"""The errors of the streams package: one base class, one subclass per thing that fails.

Stages catch `SinkError` (do not commit, retry or dead-letter what failed) and
`CommitError` (the records will be delivered again; log it and go on). `BrokerError` is
fatal: the embedded broker could not start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FailureKind = Literal["oversize", "timeout", "closed", "error"]
"""Why a send failed: a small fixed set, fit for a metrics label."""


class StreamsError(Exception):
    """Base class of every error this package raises on purpose."""


@dataclass(frozen=True)
class SendFailure:
    """One record a sink could not deliver."""

    topic: str
    """Topic it was sent to."""
    key: bytes | None
    """Its key (values are not kept: they can be large)."""
    kind: FailureKind
    """oversize: larger than the producer/broker limit (dead-letter it, do not retry);
    timeout: not acknowledged in time (retry); closed: the sink was closed; error: other."""
    error: BaseException
    """The underlying exception."""

    def __str__(self) -> str:
        return f"{self.topic}: {self.kind}: {type(self.error).__name__}: {self.error}"


class SinkError(StreamsError):
    """At least one send since the last flush failed; the caller must not commit its input.

    `failures` lists every failed record (in send order); the message names the topics and
    the first causes.
    """

    failures: tuple[SendFailure, ...]

    def __init__(self, failures: tuple[SendFailure, ...] | list[SendFailure]) -> None:
        self.failures = tuple(failures)
        shown = "; ".join(str(f) for f in self.failures[:3])
        more = f" (and {len(self.failures) - 3} more)" if len(self.failures) > 3 else ""
        super().__init__(f"{len(self.failures)} send(s) failed: {shown}{more}")


class SourceError(StreamsError):
    """A source operation failed (seek or pause on a partition not assigned, a closed source)."""


class CommitError(SourceError):
    """An offset commit failed, typically because a rebalance moved the partition away.

    Nothing is lost: the uncommitted records are delivered again (at-least-once) to whoever
    owns the partition now. Log it and go on.
    """


class BrokerError(StreamsError):
    """The embedded broker could not be found, started, or reached."""


class BrokerUnreachable(StreamsError):
    """No broker answered at the bootstrap address when a client was created (a wrong
    address, a broker not running, a firewall): the message names the address."""
