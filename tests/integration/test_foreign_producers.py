"""A service that knows nothing of online-distill writes prompts with a plain kafka-python
producer (JSON objects and plain strings); the teacher stage labels every one of them.

Real parts: the embedded Tansu broker, kafka-python on both sides, the shipped demo teacher.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from online_distill.config.kafka import KafkaConfig
from online_distill.messages.foreign import content_id
from online_distill.streams import EmbeddedBroker, ensure_topics
from tests.integration.labeling import label_until

pytestmark = pytest.mark.integration

DEADLINE_S = 300.0
"""A bound on labeling 40 prompts (about 2 s here), only reached when the loop is broken."""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_dir=tmp_path) as b:
        yield b


def test_json_objects_and_plain_strings_from_a_plain_producer_are_all_labeled(
        broker: EmbeddedBroker) -> None:
    from kafka import KafkaProducer

    u = uuid.uuid4().hex[:10]
    cfg = KafkaConfig(prompts_topic=f"prompts-{u}", labels_topic=f"labels-{u}",
                      feedback_topic=f"feedback-{u}", dead_letter_topic=f"dead-{u}",
                      consumer_group_prefix=f"test-{u}", session_timeout_ms=6000)
    ensure_topics(cfg, broker.bootstrap)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    want: set[str] = set()
    for i in range(20):  # JSON with an id, JSON keyed by the record, plain text unkeyed
        if i % 3 == 0:
            producer.send(cfg.prompts_topic, json.dumps({"id": f"j{i}", "text": f"{i}+1="})
                          .encode())
            want.add(f"j{i}")
        elif i % 3 == 1:
            producer.send(cfg.prompts_topic, json.dumps({"text": f"{i}+2="}).encode(),
                          key=f"k{i}".encode())
            want.add(f"k{i}")
        else:
            producer.send(cfg.prompts_topic, f"{i}+3=".encode())
            want.add(content_id(f"{i}+3="))
    for i in range(20):  # plain strings, keyed
        producer.send(cfg.prompts_topic, f"{i}+{i}=".encode(), key=f"s{i}".encode())
        want.add(f"s{i}")
    producer.flush(30)
    producer.close()

    got, stage = label_until(cfg, broker.bootstrap, lambda got: set(got) == want,
                             DEADLINE_S)
    assert set(got) == want, (f"labeled {len(got)} of {len(want)}; missing "
                              f"{sorted(want - set(got))[:5]}; stats {stage.stats}")
    assert stage.stats.dead_lettered == 0
    assert got["j0"].prompt_text == "0+1=" and got["s5"].prompt_text == "5+5="
