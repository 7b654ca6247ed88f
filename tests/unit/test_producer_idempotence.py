"""Which producers are idempotent: yours by default, never the embedded Tansu broker's
(it loses acknowledged records of idempotent producers across a crash; bench/RESULTS.md)."""

from __future__ import annotations

from typing import Any

import pytest

from online_distill.config.kafka import KafkaConfig
from online_distill.streams import kafka as streams_kafka


@pytest.mark.parametrize(("bootstrap_servers", "setting", "expected"), [
    ("", None, False),           # the embedded broker
    ("k1:9092", None, True),     # your cluster
    ("k1:9092", False, False),   # a Tansu of your own
    ("", True, True),            # asked for explicitly
])
def test_idempotence_follows_the_setting(monkeypatch, bootstrap_servers: str,
                                         setting: bool | None, expected: bool) -> None:
    built: dict[str, Any] = {}
    monkeypatch.setattr(streams_kafka, "KafkaProducer", lambda **kw: built.update(kw))
    cfg = KafkaConfig(bootstrap_servers=bootstrap_servers, producer_idempotence=setting)
    streams_kafka.KafkaSink(cfg, "127.0.0.1:9092")
    assert built["enable_idempotence"] is expected and built["acks"] == "all"
