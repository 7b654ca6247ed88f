"""Client settings from the config, and creation of the daemon's topics.

`client_kwargs` maps `KafkaConfig` (security protocol, SASL PLAIN/SCRAM, TLS files) to the
keyword arguments every kafka-python client takes. The SASL password is read through
`resolved_sasl_password()` and is never logged; do not log the returned dict.

How the password reaches the actors: they are given the redacted config (the password is in
no actor argument, hence not in Ray's control store or its logs) and read it from the
environment variable named by `kafka.sasl_password_env`. `export_sasl_password` puts it
there in the daemon's process before it starts the local Ray instance, whose processes
inherit that environment.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from typing import Any

from ..config.kafka import KafkaConfig
from .exceptions import StreamsError

log = logging.getLogger(__name__)

SECRET_KEYS = frozenset({"sasl_plain_password", "ssl_password", "sasl_oauth_token_provider"})
"""Client settings whose values never reach a log line."""


class RedactSecrets(logging.Filter):
    """Masks the values of `SECRET_KEYS` in a log record's dict arguments. kafka-python logs
    its whole configuration at DEBUG ("Starting KafkaAdminClient with configuration: %s"),
    password included, so the filter sits on every `kafka.*` logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, dict):
            record.args = _masked(record.args)
        elif isinstance(record.args, tuple):
            record.args = tuple(_masked(a) for a in record.args)
        return True


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "***" if k in SECRET_KEYS and v else v for k, v in value.items()}
    return value


def redact_kafka_logs() -> None:
    """Put `RedactSecrets` on kafka-python's loggers (once each; they exist once `kafka`
    is imported)."""
    names = [n for n in logging.Logger.manager.loggerDict if n == "kafka" or
             n.startswith("kafka.")]
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())


def client_kwargs(cfg: KafkaConfig, bootstrap: str) -> dict[str, Any]:
    """kafka-python keyword arguments to reach the brokers at `bootstrap` ("host:port,...").

    `bootstrap` is passed separately from `cfg.bootstrap_servers` because the embedded
    broker's address is known only once it runs. Raises StreamsError when SASL is on and no
    password is configured (the message says where to put it, never what it is).
    """
    servers = [s.strip() for s in bootstrap.split(",") if s.strip()]
    if not servers:
        raise StreamsError("no bootstrap servers: set kafka.bootstrap_servers to host:port,...")
    kw: dict[str, Any] = {
        "bootstrap_servers": servers,
        "client_id": cfg.client_id,
        "request_timeout_ms": cfg.request_timeout_ms,
        "security_protocol": cfg.security_protocol,
    }
    if cfg.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        password = cfg.resolved_sasl_password()
        if not password:
            raise StreamsError(
                f"kafka.security_protocol={cfg.security_protocol} needs a SASL password: set the "
                f"environment variable {cfg.sasl_password_env} (on every node of an existing "
                "Ray cluster) or kafka.sasl_password"
            )
        # kafka-python uses the sasl_plain_* pair for PLAIN and for both SCRAM mechanisms.
        kw["sasl_mechanism"] = cfg.sasl_mechanism
        kw["sasl_plain_username"] = cfg.sasl_username
        kw["sasl_plain_password"] = password
    if cfg.security_protocol in ("SSL", "SASL_SSL"):
        kw["ssl_check_hostname"] = True
        kw["ssl_cafile"] = cfg.ssl_cafile or None  # None: the system's CA store
        kw["ssl_certfile"] = cfg.ssl_certfile or None
        kw["ssl_keyfile"] = cfg.ssl_keyfile or None
    return kw


def export_sasl_password(cfg: KafkaConfig,
                         environ: MutableMapping[str, str] | None = None) -> bool:
    """Put the SASL password of ``cfg`` into ``environ`` (default: this process's
    environment) under `kafka.sasl_password_env`; True when a password is there now.

    Call it before starting a local Ray instance: its processes, the actors among them,
    inherit this environment, and the actors, given the redacted config, read the password
    from it. (Not Ray's ``runtime_env={"env_vars": ...}``: Ray's runtime-env agent writes the
    whole runtime env, values included, to its log file runtime_env_agent.log.)
    """
    env = os.environ if environ is None else environ
    if cfg.sasl_password:  # the config's password wins, as in resolved_sasl_password
        env[cfg.sasl_password_env] = cfg.sasl_password
    return bool(env.get(cfg.sasl_password_env))


def daemon_topics(cfg: KafkaConfig) -> list[str]:
    """The topics the daemon uses: prompts, labels, feedback, dead-letter."""
    return [cfg.prompts_topic, cfg.labels_topic, cfg.feedback_topic, cfg.dead_letter_topic]


def ensure_topics(
    cfg: KafkaConfig, bootstrap: str, topics: list[str] | None = None, timeout_s: float = 30.0
) -> list[str]:
    """Create the missing ones of `topics` (default: `daemon_topics(cfg)`) with
    `cfg.partitions` and `cfg.replication_factor`, wait until the metadata shows every one
    of them with a leader per partition, and return the names created now.

    Idempotent: existing topics are left as they are (also when another process creates
    them at the same moment). `timeout_s` bounds the first connection and the wait for
    metadata (StreamsError when the brokers cannot be reached in time); a fresh cluster
    elects leaders within seconds, 30 s leaves room for a busy one.
    """
    from kafka import KafkaAdminClient
    from kafka import errors as kerrors

    redact_kafka_logs()

    names = daemon_topics(cfg) if topics is None else list(topics)
    try:
        admin = KafkaAdminClient(**client_kwargs(cfg, bootstrap),
                                 bootstrap_timeout_ms=int(timeout_s * 1000))
    except kerrors.KafkaTimeoutError as e:
        raise StreamsError(
            f"cannot reach the Kafka brokers at {bootstrap} within {timeout_s:g} s "
            f"({type(e).__name__}); check kafka.bootstrap_servers, that the brokers are up, "
            "and kafka.security_protocol / the SASL and TLS settings"
        ) from e
    created: list[str] = []
    try:
        existing = set(admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            spec = {
                n: {"num_partitions": cfg.partitions, "replication_factor": cfg.replication_factor}
                for n in missing
            }
            result = admin.create_topics(spec, timeout_ms=int(timeout_s * 1000), raise_errors=False)
            for t in result["topics"]:
                error = kerrors.for_code(t["error_code"])
                if error is kerrors.NoError:
                    created.append(t["name"])
                elif error is not kerrors.TopicAlreadyExistsError:
                    raise StreamsError(
                        f"cannot create topic {t['name']!r}: {error.__name__}: "
                        f"{t.get('error_message')}; check kafka.partitions and "
                        "kafka.replication_factor against the cluster, or create the topic "
                        "yourself and set kafka.create_topics=false"
                    )
        admin.wait_for_topics(names, timeout_ms=int(timeout_s * 1000))
    finally:
        admin.close()
    if created:
        log.info("created topics %s (%d partitions each)", created, cfg.partitions)
    return created
