"""Security without Ray or a broker: nothing is unpickled, secrets stay out of output and
logs, everything binds loopback by default, Kafka SASL/SSL settings reach the clients, and
the Serve app's limits come from the config. (Admin auth: test_admin.py; through real
Serve: tests/integration/test_security.py; the teacher's API key: test_openai_teacher.py.)
"""

from __future__ import annotations

import ast
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from online_distill.cli import main as cli
from online_distill.config import Config, ConfigError, load_config
from online_distill.config.base import field_types, is_secret
from online_distill.config.kafka import KafkaConfig
from online_distill.report.snapshot import Restarting
from online_distill.streams import StreamsError

REPO = Path(__file__).resolve().parents[2]
DEMO_YAML = REPO / "deploy" / "demo.yaml"
SECRET = "kafka-pw-s3cret-0192837465"
API_KEY = "sk-teacher-key-5647382910"
LOOPBACK = "127.0.0.1"


# ---------------------------------------------------------------- (a) nothing is unpickled
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve"}


def unsafe_loads(source: str) -> list[str]:
    """Lines of ``source`` that import a pickle module or deserialise with pickle."""
    found: list[str] = []
    torch_load_names: set[str] = set()  # names bound to torch.load by `from torch import`
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in PICKLE_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in PICKLE_MODULES:
                found.append(f"{node.lineno}: from {node.module} import")
            if node.module == "torch":
                torch_load_names |= {a.asname or a.name for a in node.names if a.name == "load"}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        keywords = {k.arg: k.value for k in node.keywords}
        if name.endswith("torch.load") or name in torch_load_names:
            # Even weights_only=True runs an (allow-listed) unpickler; checkpoints are
            # safetensors plus JSON, so nothing needs torch.load at all.
            found.append(f"{node.lineno}: {name}(...)")
        elif name.endswith(("read_pickle", "yaml.load", "yaml.unsafe_load", "yaml.full_load")):
            found.append(f"{node.lineno}: {name}(...)")
        allow = keywords.get("allow_pickle")
        if isinstance(allow, ast.Constant) and allow.value is True:
            found.append(f"{node.lineno}: {name}(..., allow_pickle=True)")
    return found


def test_the_scan_finds_what_it_looks_for() -> None:
    bad = ("import pickle\nfrom cloudpickle import loads\nimport torch\nfrom torch import load\n"
           "torch.load('x')\ntorch.load('x', weights_only=False)\nload('x')\n"
           "np.load('x', allow_pickle=True)\nyaml.load(s)\npd.read_pickle('x')\n")
    assert len(unsafe_loads(bad)) == 8
    assert unsafe_loads("import torch\ntorch.load('x', weights_only=True)\n") == [
        "2: torch.load(...)"]
    ok = ("import torch\nimport yaml\nsafetensors.torch.load_file('x')\nyaml.safe_load(s)\n"
          "np.load('x')\nmodel.load_state_dict(s)\njson.loads(s)\n")
    assert unsafe_loads(ok) == []


def test_no_pickle_and_no_torch_load() -> None:
    files = sorted([*(REPO / "online_distill").rglob("*.py"), *(REPO / "actors").rglob("*.py")])
    assert len(files) > 50
    found = {str(f.relative_to(REPO)): hits for f in files
             if (hits := unsafe_loads(f.read_text(encoding="utf-8")))}
    assert found == {}, "deserialise with safetensors or typed messages, never pickle"


NOT_MODELS = ("Tokenizer", "TokenizerFast", "Config", "GenerationConfig", "Processor",
              "FeatureExtractor", "ImageProcessor")
"""Receivers of ``from_pretrained`` that read JSON and vocabularies, never weights."""


def unsafe_from_pretrained(source: str) -> list[str]:
    """Lines of ``source`` that call ``<model class>.from_pretrained(...)`` without
    ``use_safetensors=True``: without it, a folder holding only ``pytorch_model.bin`` is
    unpickled (which runs whatever code the file carries)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "from_pretrained"):
            continue
        receiver = ast.unparse(node.func.value)
        if receiver.endswith(NOT_MODELS):
            continue
        safe = {k.arg: k.value for k in node.keywords}.get("use_safetensors")
        if not (isinstance(safe, ast.Constant) and safe.value is True):
            found.append(f"{node.lineno}: {receiver}.from_pretrained(...)")
    return found


def test_the_from_pretrained_scan_finds_what_it_looks_for() -> None:
    bad = ("AutoModelForCausalLM.from_pretrained(p)\n"
           "GPT2LMHeadModel.from_pretrained(p, use_safetensors=False)\n"
           "transformers.AutoModel.from_pretrained(p, **kw)\n")
    assert unsafe_from_pretrained(bad) == [
        "1: AutoModelForCausalLM.from_pretrained(...)",
        "2: GPT2LMHeadModel.from_pretrained(...)",
        "3: transformers.AutoModel.from_pretrained(...)"]
    ok = ("AutoModelForCausalLM.from_pretrained(p, use_safetensors=True)\n"
          "AutoTokenizer.from_pretrained(p)\nGPT2TokenizerFast.from_pretrained(p)\n"
          "AutoConfig.from_pretrained(p)\nGenerationConfig.from_pretrained(p)\n")
    assert unsafe_from_pretrained(ok) == []


def test_every_model_from_pretrained_reads_safetensors_only() -> None:
    """The one loader (online_distill/models/loader.py) passes use_safetensors=True; every
    other model load in the project, tests and benchmarks included, goes through it or
    passes it too."""
    files = sorted(p for top in ("online_distill", "actors", "tests", "bench")
                   for p in (REPO / top).rglob("*.py"))
    found = {str(f.relative_to(REPO)): hits for f in files
             if (hits := unsafe_from_pretrained(f.read_text(encoding="utf-8")))}
    assert "online_distill/models/loader.py" not in found
    assert found == {}, "load models with online_distill.models.loader.load_causal_lm"


# ---------------------------------------------------------------- (b) secrets never logged
SASL = ["kafka.bootstrap_servers=k1:9093", "kafka.security_protocol=SASL_SSL",
        "kafka.sasl_username=od", f"kafka.sasl_password={SECRET}",
        "teacher.backend=openai", "teacher.model=big", "teacher.base_url=http://t:8000/v1",
        "teacher.api_key_env=OD_TEST_TEACHER_KEY"]


def assert_secrets_absent(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text and API_KEY not in text


def test_online_distill_config_masks_the_secrets(monkeypatch, capsys, caplog) -> None:
    monkeypatch.setenv("OD_TEST_TEACHER_KEY", API_KEY)
    with caplog.at_level(logging.DEBUG):
        assert cli.main(["config", *SASL]) == 0
        out = capsys.readouterr()
        assert "sasl_password = '***'" in out.out
        assert cli.main(["config", *SASL, "learner.lr=-1"]) == 2  # an error beside it
        bad = capsys.readouterr()
        assert "learner.lr" in bad.err
    assert_secrets_absent(out.out, out.err, bad.out, bad.err, caplog.text)


def test_up_start_up_output_and_logs_hold_no_secret(monkeypatch, capsys, caplog) -> None:
    """`up` at log_level=DEBUG: the loop's start-up lines show no secret, and kafka-python,
    which logs its client configuration (the SASL password included) at DEBUG, stays at
    WARNING or above."""
    from online_distill.cli import up
    from online_distill.streams.admin import client_kwargs

    monkeypatch.setenv("OD_TEST_TEACHER_KEY", API_KEY)
    monkeypatch.setenv("ONLINE_DISTILL_ADMIN_TOKEN", "adm-" + SECRET)

    def fake_run_up(cfg: Config, demo_traffic: bool, duration_s: float) -> up.UpSummary:
        log = logging.getLogger("online_distill.up")
        log.debug("starting with %s", cfg.kafka.bootstrap_servers)
        # What kafka-python's KafkaAdminClient logs first (kafka/admin/client.py):
        logging.getLogger("kafka.admin.client").debug(
            "Starting KafkaAdminClient with configuration: %s",
            client_kwargs(cfg.kafka, cfg.kafka.bootstrap_servers))
        return up.UpSummary(prompts_sent=0, labeled=0, learner=Restarting("not started"),
                            gate=Restarting("not started"), student_version=None, student={},
                            seconds=0.0)

    monkeypatch.setattr(up, "run_up", fake_run_up)
    kafka_logger = logging.getLogger("kafka")
    level = kafka_logger.level
    try:
        with caplog.at_level(logging.DEBUG):
            assert cli.main(["up", "--no-demo-traffic", "--duration", "0", "log_level=DEBUG",
                             *SASL]) == 0
    finally:
        kafka_logger.setLevel(level)
    out = capsys.readouterr()
    assert "starting with k1:9093" in caplog.text  # DEBUG records are captured
    assert_secrets_absent(out.out, out.err, caplog.text)
    assert "adm-" + SECRET not in out.out + out.err + caplog.text


def test_serve_replicas_get_the_config_without_the_kafka_password() -> None:
    from online_distill.actors.serve import student_app

    app = student_app(load_config(None, SASL), "k1:9093")
    plain, bootstrap = app._bound_deployment.init_args  # what Serve hands each replica
    assert plain["kafka"]["sasl_password"] == "***" and bootstrap == "k1:9093"
    assert SECRET not in repr(plain)


def secret_fields(cls: type, prefix: str = "") -> dict[str, dataclasses.Field[Any]]:
    """Every field declared `metadata=SECRET` in the config, by dotted path."""
    out: dict[str, dataclasses.Field[Any]] = {}
    for f in dataclasses.fields(cls):
        tp = field_types(cls)[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            out |= secret_fields(tp, f"{prefix}{f.name}.")
        elif is_secret(f):
            out[prefix + f.name] = f
    return out


def test_every_secret_field_stays_out_of_reprs() -> None:
    fields = secret_fields(Config)
    assert "kafka.sasl_password" in fields
    assert [path for path, f in fields.items() if f.repr] == [], "declare secrets repr=False"
    cfg = load_config(None, SASL)
    assert cfg.kafka.sasl_password == SECRET
    assert_secrets_absent(repr(cfg), str(cfg), repr(cfg.kafka), f"{cfg.kafka!r}")


def test_a_redacted_config_reads_the_password_from_the_environment(monkeypatch) -> None:
    """What every actor gets: '***' in place of the password, read back as unset, so the
    Kafka clients take the password from the variable kafka.sasl_password_env names."""
    from online_distill.config import config_from_dict, config_to_dict
    from online_distill.streams.admin import client_kwargs

    cfg = load_config(None, SASL)
    plain = config_to_dict(cfg, redact=True)
    assert plain["kafka"]["sasl_password"] == "***" and SECRET not in repr(plain)
    actor_cfg = config_from_dict(plain)
    assert actor_cfg.kafka.sasl_password == ""
    monkeypatch.delenv(cfg.kafka.sasl_password_env, raising=False)
    with pytest.raises(StreamsError, match=cfg.kafka.sasl_password_env):
        client_kwargs(actor_cfg.kafka, "k1:9093")
    monkeypatch.setenv(cfg.kafka.sasl_password_env, SECRET)
    assert client_kwargs(actor_cfg.kafka, "k1:9093")["sasl_plain_password"] == SECRET
    assert config_to_dict(config_from_dict(config_to_dict(cfg)))["kafka"]["sasl_password"] \
        == SECRET  # unredacted, the round trip keeps it


def test_export_sasl_password_puts_the_configured_one_in_the_environment() -> None:
    from online_distill.streams.admin import export_sasl_password

    env: dict[str, str] = {}
    k = load_config(None, SASL).kafka
    assert export_sasl_password(k, env) and env == {k.sasl_password_env: SECRET}
    env = {k.sasl_password_env: "from-env"}
    assert export_sasl_password(KafkaConfig(), env) and env == {k.sasl_password_env: "from-env"}
    assert not export_sasl_password(KafkaConfig(), {})


def test_the_supervisor_exports_the_password_and_hands_actors_the_redacted_config(
        monkeypatch) -> None:
    import ray
    from online_distill.actors import supervisor

    cfg = load_config(None, [*SASL, "kafka.create_topics=false", "metrics.enabled=false"])
    monkeypatch.delenv(cfg.kafka.sasl_password_env, raising=False)
    seen: dict[str, Any] = {}

    class FakeActor:
        @staticmethod
        def options(**kwargs: Any) -> FakeActor:
            seen["options"] = kwargs
            return FakeActor()

        def remote(self, plain: dict[str, Any], *args: Any) -> None:
            seen["plain"] = plain
            raise _Stop

    def fake_init(**kwargs: Any) -> None:  # what Ray's processes would inherit
        seen["env at ray.init"] = os.environ.get(cfg.kafka.sasl_password_env)

    monkeypatch.setattr(ray, "is_initialized", lambda: "env at ray.init" in seen)
    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(supervisor, "TeacherActor", FakeActor)
    with pytest.raises(_Stop):
        supervisor.Supervisor(cfg).start()
    assert seen["env at ray.init"] == SECRET
    assert seen["plain"]["kafka"]["sasl_password"] == "***"
    assert_secrets_absent(repr(seen["plain"]), repr(seen["options"]))


def test_a_yaml_syntax_error_does_not_print_the_secret(tmp_path, capsys) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f'kafka:\n  sasl_password: "{SECRET}\n  sasl_username: od\n')
    assert cli.main(["config", "--file", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not valid YAML" in err
    assert_secrets_absent(err)


# ---------------------------------------------------------------- (c) loopback by default
def test_everything_binds_loopback_by_default() -> None:
    for cfg in (Config(), load_config(DEMO_YAML)):  # the defaults and the embedded demo
        assert (cfg.serve.host, cfg.metrics.host, cfg.ray.dashboard_host) == (LOOPBACK,) * 3
        assert cfg.ray.include_dashboard is False
        assert cfg.serve.admin_token_env == "ONLINE_DISTILL_ADMIN_TOKEN"


class _Stop(Exception):
    pass


def test_ray_and_serve_are_started_on_the_configured_interfaces(monkeypatch) -> None:
    import ray
    from online_distill.actors import serve as serve_app
    from online_distill.actors.supervisor import Supervisor
    from ray import serve

    seen: dict[str, Any] = {}

    def fake_init(**kwargs: Any) -> None:
        seen["ray.init"] = kwargs
        raise _Stop

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    cfg = load_config(None, ["kafka.bootstrap_servers=k1:9092", "kafka.create_topics=false"])
    with pytest.raises(_Stop):
        Supervisor(cfg).start()
    assert seen["ray.init"]["include_dashboard"] is False
    assert seen["ray.init"]["dashboard_host"] == LOOPBACK
    monkeypatch.setattr(serve, "start", lambda **kw: seen.setdefault("serve.start", kw))
    monkeypatch.setattr(serve, "run", lambda app, **kw: seen.setdefault("serve.run", kw))
    assert serve_app.start_serving(cfg) == f"http://{LOOPBACK}:8000"
    assert seen["serve.start"]["http_options"]["host"] == LOOPBACK


# ---------------------------------------------------------------- limits of the public API
def test_the_serve_app_takes_its_limits_from_the_config() -> None:
    from online_distill.actors.serve import limits_of, student_app

    cfg = load_config(None, ["serve.max_concurrency=7", "serve.max_tokens_cap=9",
                             "serve.max_prompt_chars=100", "serve.max_body_bytes=1000",
                             "serve.max_queued_requests=40"])
    deployment = student_app(cfg)._bound_deployment
    assert (deployment.max_ongoing_requests, deployment.max_queued_requests) == (7, 40)
    with pytest.raises(ConfigError, match="max_queued_requests"):
        load_config(None, ["serve.max_queued_requests=0"])
    limits = limits_of(cfg)
    assert (limits.max_tokens_cap, limits.max_prompt_chars, limits.max_body_bytes) == (
        9, 100, 1000)


# ---------------------------------------------------------------- (d) Kafka SASL/SSL honoured
def test_every_kafka_client_gets_the_sasl_ssl_settings(monkeypatch) -> None:
    """client_kwargs itself is tested in test_streams_memory.py; here: the consumer, the
    producer and the admin client are built with its settings."""
    import kafka

    from online_distill.streams import admin
    from online_distill.streams import kafka as streams_kafka

    built: dict[str, dict[str, Any]] = {}

    def recorder(name: str):  # type: ignore[no-untyped-def]
        def build(*args: Any, **kwargs: Any) -> None:
            built[name] = kwargs
            raise _Stop

        return build

    monkeypatch.setattr(streams_kafka, "KafkaConsumer", recorder("consumer"))
    monkeypatch.setattr(streams_kafka, "KafkaProducer", recorder("producer"))
    monkeypatch.setattr(kafka, "KafkaAdminClient", recorder("admin"))
    monkeypatch.setenv("OD_TEST_KAFKA_PW", SECRET)
    cfg = KafkaConfig(bootstrap_servers="k1:9093", security_protocol="SASL_SSL",
                      sasl_mechanism="SCRAM-SHA-256", sasl_username="od",
                      sasl_password_env="OD_TEST_KAFKA_PW", ssl_cafile="/etc/od/ca.pem",
                      ssl_certfile="/etc/od/client.pem", ssl_keyfile="/etc/od/client.key")
    for build in (lambda: streams_kafka.KafkaSource(cfg, "k1:9093", "teacher", ["p"]),
                  lambda: streams_kafka.KafkaSink(cfg, "k1:9093"),
                  lambda: admin.ensure_topics(cfg, "k1:9093")):
        with pytest.raises(_Stop):
            build()
    assert set(built) == {"consumer", "producer", "admin"}
    for name, kw in built.items():
        assert kw["security_protocol"] == "SASL_SSL", name
        assert kw["sasl_mechanism"] == "SCRAM-SHA-256", name
        assert (kw["sasl_plain_username"], kw["sasl_plain_password"]) == ("od", SECRET), name
        assert (kw["ssl_cafile"], kw["ssl_certfile"], kw["ssl_keyfile"]) == (
            "/etc/od/ca.pem", "/etc/od/client.pem", "/etc/od/client.key"), name
        assert kw["ssl_check_hostname"] is True, name


def test_kafka_pythons_debug_log_of_its_configuration_hides_the_password(
        monkeypatch, caplog) -> None:
    """kafka-python's admin client logs its whole configuration at DEBUG; a real client,
    pointed at a port where nothing listens, with the password set."""
    import logging

    from online_distill.streams import admin

    monkeypatch.setenv("OD_TEST_KAFKA_PW", SECRET)
    cfg = KafkaConfig(bootstrap_servers="127.0.0.1:1", security_protocol="SASL_PLAINTEXT",
                      sasl_mechanism="PLAIN", sasl_username="od",
                      sasl_password_env="OD_TEST_KAFKA_PW", request_timeout_ms=1000)
    from online_distill.streams import StreamsError

    with caplog.at_level(logging.DEBUG, logger="kafka"), \
            pytest.raises(StreamsError, match="cannot reach the Kafka brokers at 127.0.0.1:1"):
        admin.ensure_topics(cfg, "127.0.0.1:1", timeout_s=0.5)
    assert "Starting KafkaAdminClient with configuration" in caplog.text
    assert "'sasl_plain_password': '***'" in caplog.text
    assert SECRET not in caplog.text
