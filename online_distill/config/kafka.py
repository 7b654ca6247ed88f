"""Kafka: the broker, the topics between stages, security and client tuning."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from .base import SECRET, check_nonempty, check_range, fail
from .coerce import normalize_fields

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True, kw_only=True)
class KafkaConfig:
    """Where the Kafka-protocol broker is and how every stage talks to it."""

    bootstrap_servers: str = ""
    """Comma-separated host:port list of an existing Kafka cluster. Empty: the daemon starts
    the embedded Tansu broker as a child process (the one-machine demo)."""

    embedded_storage: str = "memory://"
    """Storage of the embedded broker: memory:// (lost on exit) or an s3://bucket URL on any
    S3-compatible store (durable). Ignored when bootstrap_servers is set."""

    embedded_port: int = 0
    """Port the embedded broker listens on (loopback); 0 picks a free port."""

    producer_idempotence: bool | None = None
    """Idempotent producers (no duplicate on a retried send). null: on for your cluster
    (bootstrap_servers set), off for the embedded Tansu broker: Tansu 0.6 acknowledges a
    retried idempotent batch after a crash without having kept it (measured: 10 and 23
    acknowledged records lost over three SIGKILLs, 0 with idempotence off; see
    bench/RESULTS.md). Off costs only duplicates, which the learner drops by prompt id."""

    create_topics: bool = True
    """Create missing topics at start with `partitions` and `replication_factor`. Turn off on
    clusters where topics are managed by an administrator."""

    prompts_topic: str = "od.prompts"
    """Topic of unlabeled prompts (producers and OOD feedback write, teachers read)."""

    labels_topic: str = "od.labels"
    """Topic of teacher pseudo-targets with top-k log-probabilities (the distilled dataset)."""

    feedback_topic: str = "od.feedback"
    """Topic of synthetic prompts that the OOD-feedback actor writes (new inputs like the tail
    examples); the teacher labels them like traffic prompts, within teacher budget."""

    dead_letter_topic: str = "od.dead-letters"
    """Topic that receives messages a stage could not process, with the error attached."""

    partitions: int = 2
    """Partitions per created topic; bounds how many teacher actors can share one topic."""

    replication_factor: int = 1
    """Replicas per created topic; use 3 on a production cluster."""

    security_protocol: SecurityProtocol = "PLAINTEXT"
    """How clients connect: plain TCP, TLS, SASL authentication, or SASL over TLS."""

    sasl_mechanism: SaslMechanism = "PLAIN"
    """SASL mechanism, used with SASL_PLAINTEXT and SASL_SSL."""

    sasl_username: str = ""
    """SASL user name, used with SASL_PLAINTEXT and SASL_SSL."""

    sasl_password: str = field(default="", repr=False, metadata=SECRET)
    """SASL password. Prefer leaving it empty and setting the environment variable named by
    sasl_password_env; never printed by `online-distill config` nor in a repr. The actors
    get the config with it redacted ('***', read back as empty) and read the password from
    the environment variable named by sasl_password_env."""

    sasl_password_env: str = "ONLINE_DISTILL_KAFKA_PASSWORD"
    """Environment variable read for the SASL password when sasl_password is empty. The
    daemon sets it from sasl_password for the local Ray instance it starts; on an existing
    Ray cluster (ray.address) set it on every node."""

    ssl_cafile: str = ""
    """PEM file of the CA that signed the brokers' certificates; empty uses the system CAs."""

    ssl_certfile: str = ""
    """PEM client certificate for mutual TLS; set together with ssl_keyfile."""

    ssl_keyfile: str = ""
    """PEM private key of ssl_certfile for mutual TLS."""

    client_id: str = "online-distill"
    """Client id sent to the brokers (shows in broker logs and quotas)."""

    consumer_group_prefix: str = "online-distill"
    """Prefix of consumer group names; each stage uses `<prefix>.<stage>`. Change it to run
    two independent daemons on one cluster."""

    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    """Where a consumer group with no committed offset starts: the oldest kept message or
    only new ones."""

    session_timeout_ms: int = 10000
    """Consumer group session timeout: a consumer silent this long is dropped from its group."""

    max_poll_interval_ms: int = 300000
    """Longest allowed gap between polls before the consumer leaves its group. Stages hand
    model work off and keep polling, so this is a safety net, not a budget."""

    max_poll_records: int = 256
    """Most records one poll returns."""

    max_message_bytes: int = 1048576
    """Largest message a producer sends; larger messages go to the dead-letter topic."""

    producer_linger_ms: int = 5
    """How long a producer waits to fill a batch; trades latency for throughput."""

    request_timeout_ms: int = 30000
    """How long a client waits for a broker reply before retrying or failing."""

    def __post_init__(self) -> None:
        normalize_fields(self)
        for name in ("prompts_topic", "labels_topic", "feedback_topic", "dead_letter_topic"):
            check_nonempty(self, name, "name a Kafka topic, e.g. 'od.prompts'")
        topics = [
            self.prompts_topic,
            self.labels_topic,
            self.feedback_topic,
            self.dead_letter_topic,
        ]
        for name in ("labels_topic", "feedback_topic", "dead_letter_topic"):
            if topics.count(getattr(self, name)) > 1:
                fail(
                    name,
                    getattr(self, name),
                    "every stage needs its own topic; use a "
                    "name not used by the other *_topic fields",
                )
        if not self.embedded_storage.startswith(("memory://", "s3://")):
            fail(
                "embedded_storage",
                self.embedded_storage,
                "must start with memory:// or s3:// (the embedded broker supports only these)",
            )
        if not self.bootstrap_servers and self.security_protocol != "PLAINTEXT":
            fail(
                "security_protocol",
                self.security_protocol,
                "the embedded broker speaks PLAINTEXT only; set bootstrap_servers to your "
                "cluster or use security_protocol=PLAINTEXT",
            )
        if self.security_protocol.startswith("SASL") and not self.sasl_username:
            fail(
                "sasl_username",
                self.sasl_username,
                f"must be set when security_protocol is {self.security_protocol}",
            )
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            fail(
                "ssl_keyfile",
                self.ssl_keyfile,
                "ssl_certfile and ssl_keyfile must be set together (mutual TLS) or both empty",
            )
        check_range(self, "embedded_port", ge=0, le=65535, fix="0 picks a free port")
        check_range(self, "partitions", ge=1, fix="a typical value is 2-12")
        check_range(self, "replication_factor", ge=1, fix="1 on one broker, 3 in production")
        check_range(self, "session_timeout_ms", ge=1000, fix="a typical value is 10000")
        check_range(
            self,
            "max_poll_interval_ms",
            ge=self.session_timeout_ms,
            fix="must be at least session_timeout_ms; a typical value is 300000",
        )
        check_range(self, "max_poll_records", ge=1, fix="a typical value is 256")
        check_range(self, "max_message_bytes", ge=1024, fix="a typical value is 1048576")
        check_range(self, "producer_linger_ms", ge=0, fix="a typical value is 5")
        check_range(self, "request_timeout_ms", ge=1000, fix="a typical value is 30000")

    @property
    def embedded(self) -> bool:
        """True when the daemon must start its own broker (no bootstrap_servers given)."""
        return not self.bootstrap_servers

    def resolved_sasl_password(self) -> str:
        """sasl_password, or the environment variable named by sasl_password_env when empty."""
        return self.sasl_password or os.environ.get(self.sasl_password_env, "")
