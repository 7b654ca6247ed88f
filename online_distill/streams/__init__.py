"""Message streams between stages: what a stage needs from Kafka, behind small Protocols.

- `protocol.py`: `Record`, `Partition`, `MessageSource`, `MessageSink`, `SendHandle`,
  `next_offsets`, and the offset convention (commit the NEXT offset to read) with the
  produce -> flush -> commit order every stage follows.
- `memory.py`: `MemoryLog`, `MemorySource`, `MemorySink`: fakes for unit tests only.
- `kafka.py`: `KafkaSource`, `KafkaSink` (kafka-python); `admin.py`: `client_kwargs`
  (security/SASL/TLS from the config), `ensure_topics`.
- `embedded.py`: `EmbeddedBroker`, the Tansu child process of the one-machine demo.
- `dead_letter.py`: `DeadLetterWriter`, `decode_or_dead_letter`, `prompt_or_dead_letter`.
- `exceptions.py`: `SinkError`, `CommitError`, `SourceError`, `BrokerError`.

Importing this package loads no Kafka client: `KafkaSource`/`KafkaSink` import kafka-python
on first use, `ensure_topics` and `EmbeddedBroker.start` when called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .admin import client_kwargs, daemon_topics, ensure_topics
from .dead_letter import DeadLetterWriter, decode_or_dead_letter, prompt_or_dead_letter
from .embedded import EmbeddedBroker, tansu_binary
from .exceptions import (
    BrokerError,
    BrokerUnreachable,
    CommitError,
    FailureKind,
    SendFailure,
    SinkError,
    SourceError,
    StreamsError,
)
from .memory import MemoryLog, MemorySink, MemorySource
from .protocol import (
    Delivered,
    MessageSink,
    MessageSource,
    Partition,
    Record,
    SendHandle,
    next_offsets,
)

if TYPE_CHECKING:
    from .kafka import KafkaSink, KafkaSource


def __getattr__(name: str) -> Any:
    # KafkaSource and KafkaSink import kafka-python, so they load on first use.
    if name in ("KafkaSource", "KafkaSink"):
        return getattr(importlib.import_module(".kafka", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BrokerError",
    "BrokerUnreachable",
    "CommitError",
    "DeadLetterWriter",
    "Delivered",
    "EmbeddedBroker",
    "FailureKind",
    "KafkaSink",
    "KafkaSource",
    "MemoryLog",
    "MemorySink",
    "MemorySource",
    "MessageSink",
    "MessageSource",
    "Partition",
    "Record",
    "SendFailure",
    "SendHandle",
    "SinkError",
    "SourceError",
    "StreamsError",
    "client_kwargs",
    "daemon_topics",
    "decode_or_dead_letter",
    "prompt_or_dead_letter",
    "ensure_topics",
    "next_offsets",
    "tansu_binary",
]
