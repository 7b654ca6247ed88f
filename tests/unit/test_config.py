"""Unit tests of online_distill.config: defaults, docs, YAML, overrides, errors, help."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from online_distill.config import (
    DEMO_KINDS,
    Config,
    ConfigError,
    DemoConfig,
    KafkaConfig,
    LearnerConfig,
    TeacherConfig,
    config_from_dict,
    config_to_dict,
    describe_config,
    field_docs,
    load_config,
)
from tests.unit.rebuild import rebuilt

REPO = Path(__file__).resolve().parents[2]
DEMO_YAML = REPO / "deploy" / "demo.yaml"


def config_classes() -> list[type]:
    """Config and every section class it holds."""
    classes: list[type] = [Config]
    for f in dataclasses.fields(Config):
        value = getattr(Config(), f.name)
        if dataclasses.is_dataclass(value):
            classes.append(type(value))
    return classes


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(overrides: list[str], path: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


# --- defaults and docs ------------------------------------------------------------------


def test_defaults_build() -> None:
    cfg = load_config()
    assert cfg == Config()
    assert cfg.learner.lr == 3e-4 and cfg.learner.betas == (0.9, 0.95)
    assert cfg.kafka.bootstrap_servers == "" and cfg.kafka.embedded
    assert cfg.demo.traffic_mix == {"add2": 0.9, "add3": 0.04, "sub2": 0.03, "mul": 0.03}
    assert set(cfg.demo.traffic_mix) <= set(DEMO_KINDS)
    assert len(config_classes()) == 12  # root + one per section (drift included)


@pytest.mark.parametrize("cls", config_classes(), ids=lambda c: c.__name__)
def test_every_field_has_a_docstring(cls: type) -> None:
    """The CI check vLLM has: a field without a docstring under it fails the build."""
    docs = field_docs(cls)
    missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name, "").strip()]
    assert not missing, f"{cls.__name__} fields without a docstring: {missing}"
    assert cls.__doc__, f"{cls.__name__} has no class docstring"


def test_field_docs_reads_only_string_right_after_a_field() -> None:
    @dataclasses.dataclass(frozen=True)
    class Sample:
        documented: int = 1
        """Its help,
        on two lines."""

        undocumented: int = 2
        # a comment is not a docstring

    assert field_docs(Sample) == {"documented": "Its help,\non two lines."}


def test_configs_are_frozen_and_cross_ray() -> None:
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.learner.lr = 1.0  # type: ignore[misc]
    assert rebuilt(cfg) == cfg


def test_direct_construction_normalizes_and_checks_types() -> None:
    learner = LearnerConfig(betas=[0.8, 0.99], lr=1)  # type: ignore[arg-type]
    assert learner.betas == (0.8, 0.99) and isinstance(learner.lr, float)
    with pytest.raises(ConfigError, match=r"temperature = '1': expected float"):
        TeacherConfig(temperature="1")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^lr = -1.0: must be > 0 \(a typical value is 3e-4\)$"):
        LearnerConfig(lr=-1.0)


# --- YAML and overrides -----------------------------------------------------------------


def test_yaml_load(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path,
        """
learner:
  lr: 1e-3          # YAML 1.1 reads this as a string; the loader makes it a float
  betas: [0.8, 0.99]
  max_steps: 10
kafka:
  bootstrap_servers: broker:9092
demo:
  traffic_mix: {add2: 1}
critics:
  similarity: off   # a YAML bool, given back as the choice 'off'
ood:
log_level: DEBUG
""",
    )
    cfg = load_config(path)
    assert cfg.learner.lr == 1e-3 and cfg.learner.betas == (0.8, 0.99)
    assert cfg.learner.max_steps == 10
    assert cfg.kafka.bootstrap_servers == "broker:9092" and not cfg.kafka.embedded
    assert cfg.demo.traffic_mix == {"add2": 1.0}
    assert cfg.critics.similarity == "off"
    assert cfg.ood == Config().ood
    assert cfg.log_level == "DEBUG"


def test_empty_yaml_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write_yaml(tmp_path, "# nothing\n")) == Config()


@pytest.mark.parametrize(
    ("override", "section", "name", "expected"),
    [
        ("learner.lr=1e-3", "learner", "lr", 1e-3),
        ("learner.lr=3.0e-4", "learner", "lr", 3e-4),
        ("learner.batch_size=64", "learner", "batch_size", 64),
        ("learner.warmup_steps=1e2", "learner", "warmup_steps", 100),
        ("serve.enabled=false", "serve", "enabled", False),
        ("serve.enabled=no", "serve", "enabled", False),
        ("ood.enabled=True", "ood", "enabled", True),
        ("kafka.bootstrap_servers=host:9092", "kafka", "bootstrap_servers", "host:9092"),
        ("kafka.bootstrap_servers=a:9092,b:9092", "kafka", "bootstrap_servers", "a:9092,b:9092"),
        ("ray.address=", "ray", "address", ""),
        ("serve.served_model_name=1.10", "serve", "served_model_name", "1.10"),
        ("teacher.backend=vllm", "teacher", "backend", "vllm"),
        ("critics.similarity=off", "critics", "similarity", "off"),
        ("learner.lr_schedule=cosine", "learner", "lr_schedule", "cosine"),
        ("learner.betas=[0.8, 0.99]", "learner", "betas", (0.8, 0.99)),
        ("learner.betas=0.8,0.99", "learner", "betas", (0.8, 0.99)),
        ("teacher.stop=[x, y]", "teacher", "stop", ("x", "y")),
        ("teacher.stop=[]", "teacher", "stop", ()),
        ("learner.max_steps=100", "learner", "max_steps", 100),
        ("learner.max_steps=null", "learner", "max_steps", None),
        ("demo.traffic_mix={add2: 1, mul: 1}", "demo", "traffic_mix", {"add2": 1.0, "mul": 1.0}),
        (
            "demo.traffic_mix.add2=0.5",
            "demo",
            "traffic_mix",
            {"add2": 0.5, "add3": 0.04, "sub2": 0.03, "mul": 0.03},
        ),
    ],
)
def test_override_each_type(override: str, section: str, name: str, expected: Any) -> None:
    value = getattr(getattr(load_config(None, [override]), section), name)
    assert value == expected and type(value) is type(expected)


def test_top_level_override_and_single_string() -> None:
    assert load_config(None, ["log_level=DEBUG", "run_dir=/tmp/x"]).run_dir == "/tmp/x"
    assert load_config(None, "log_level=WARNING").log_level == "WARNING"


def test_overrides_beat_yaml_and_apply_in_order(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "learner: {lr: 0.1}\ndemo: {traffic_mix: {add2: 1, mul: 1}}\n")
    cfg = load_config(path, ["learner.lr=0.2", "learner.lr=0.3", "demo.traffic_mix.sub2=2"])
    assert cfg.learner.lr == 0.3
    assert cfg.demo.traffic_mix == {"add2": 1.0, "mul": 1.0, "sub2": 2.0}


def test_sasl_settings_with_a_real_cluster() -> None:
    cfg = load_config(
        None,
        [
            "kafka.bootstrap_servers=k1:9093",
            "kafka.security_protocol=SASL_SSL",
            "kafka.sasl_mechanism=SCRAM-SHA-512",
            "kafka.sasl_username=od",
        ],
    )
    assert cfg.kafka.security_protocol == "SASL_SSL"
    assert cfg.kafka.sasl_mechanism == "SCRAM-SHA-512"


def test_password_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONLINE_DISTILL_KAFKA_PASSWORD", "from-env")
    assert KafkaConfig().resolved_sasl_password() == "from-env"
    assert KafkaConfig(sasl_password="inline").resolved_sasl_password() == "inline"


@settings(max_examples=50, deadline=None)
@given(st.floats(min_value=1e-9, max_value=1e3, allow_nan=False, allow_infinity=False))
def test_float_override_round_trips(lr: float) -> None:
    assert load_config(None, [f"learner.lr={lr!r}"]).learner.lr == lr


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "suggestion"),
    [
        ("learner.lrr=1", "learner.lr"),
        ("lerner.lr=1", "learner.lr"),
        ("kafka.lr=1", "learner.lr"),
        ("learner.max_new_tokens=8", "teacher.max_new_tokens"),
        ("kafk.partitions=4", "kafka.partitions"),
        ("lerner=1", "learner"),
        ("log_levle=DEBUG", "log_level"),
    ],
)
def test_unknown_key_suggests(override: str, suggestion: str) -> None:
    message = error_of([override])
    assert "unknown config field" in message
    assert f"did you mean '{suggestion}'?" in message


def test_unknown_key_in_yaml(tmp_path: Path) -> None:
    message = error_of([], write_yaml(tmp_path, "learner:\n  lrr: 0.1\n"))
    assert message.startswith("learner.lrr: unknown config field (did you mean 'learner.lr'?)")
    message = error_of([], write_yaml(tmp_path, "teachers:\n  model: x\n"))
    assert "did you mean 'teacher'?" in message


def test_range_error_names_dotted_field_and_fix() -> None:
    expected = "learner.lr = -1.0: must be > 0 (a typical value is 3e-4)"
    assert error_of(["learner.lr=-1.0"]) == expected
    assert error_of(["teacher.top_p=0"]).startswith("teacher.top_p = 0.0: must be > 0 and <= 1")
    assert error_of(["ood.tail_quantile=1"]).startswith("ood.tail_quantile = 1.0: must be > 0")
    assert "demo.traffic_mix.add2 = -1.0: weights must be >= 0" in error_of(
        ["demo.traffic_mix.add2=-1"]
    )


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("learner.batch_size=abc", "learner.batch_size = 'abc': expected int"),
        ("learner.batch_size=1.5", "learner.batch_size = 1.5: expected int"),
        ("learner.lr=fast", "learner.lr = 'fast': expected float"),
        ("serve.enabled=maybe", "serve.enabled = 'maybe': expected true or false"),
        ("learner.betas=[0.9]", "learner.betas = [0.9]: expected a list of 2 values"),
        ("learner.max_steps=lots", "learner.max_steps = 'lots': expected int or null"),
        ("demo.traffic_mix=3", "demo.traffic_mix = 3: expected a mapping of str to float"),
        (
            "kafka.security_protocol=plaintext",
            "expected one of 'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT', 'SASL_SSL' "
            "(did you mean 'PLAINTEXT'?)",
        ),
        ("learner.loss=jsdd", "learner.loss = 'jsdd': expected one of"),
        ("learner.lr=.inf", "learner.lr = inf: expected float (a finite number)"),
    ],
)
def test_wrong_type_names_field_value_and_type(override: str, expected: str) -> None:
    assert expected in error_of([override])


def test_wrong_type_in_yaml_hints_at_quoting(tmp_path: Path) -> None:
    message = error_of([], write_yaml(tmp_path, "teacher:\n  model: 123\n"))
    assert message.startswith("teacher.model = 123: expected str (quote the value")


@pytest.mark.parametrize("override", ["learner.lr", "=3", "learner..lr=1", "a.b.c.d=1", ""])
def test_malformed_override_explains_syntax(override: str) -> None:
    message = error_of([override])
    assert message.startswith("malformed override") and "section.field=value" in message


def test_override_on_section_or_non_mapping_field() -> None:
    assert "is a section" in error_of(["learner=1"])
    assert "'learner.lr' is not a mapping" in error_of(["learner.lr.x=1"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a\n- b\n", "must be a mapping of section names"),
        ("just text\n", "must be a mapping of section names"),
        ("learner: [1, 2]\n", "learner = [1, 2]: expected a mapping of field: value"),
        ("learner: {lr: [\n", "is not valid YAML"),
    ],
)
def test_bad_yaml_shapes(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error_of([], write_yaml(tmp_path, text))


def test_missing_file() -> None:
    assert "cannot read config file" in error_of([], Path("/nonexistent/od.yaml"))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["serve.port=9100"], "metrics.port = 9100: serve.port uses the same port"),
        (["teacher.num_actors=3"], "teacher.num_actors = 3: only kafka.partitions = 2"),
        (["teacher.num_cpus=2"], "ray.num_cpus = 2: the actors reserve 2.75 CPUs"),
        (["gate.weights_dir=runs/demo/checkpoints"], "gate.weights_dir = 'runs/demo/checkpoints'"),
        (["learner.max_seq_len=16"], "must exceed teacher.max_new_tokens = 16"),
        (["kafka.security_protocol=SSL"], "the embedded broker speaks PLAINTEXT only"),
        (
            ["kafka.bootstrap_servers=k:9092", "kafka.security_protocol=SASL_SSL"],
            "kafka.sasl_username = '': must be set when security_protocol is SASL_SSL",
        ),
        (
            ["learner.loss=sequence_ce", "learner.onpolicy_lambda=0.5"],
            "learner.onpolicy_lambda = 0.5: on-policy distillation needs a word-level loss",
        ),
        (["teacher.decoding=greedy"], "teacher.n_pseudo_targets = 4: greedy decoding gives one PT"),
        (["kafka.labels_topic=od.prompts"], "kafka.labels_topic = 'od.prompts': every stage"),
        (["learner.workers=3", "learner.num_cpus=0.25"],
         "learner.workers = 3: each learner worker reads its own labels partitions"),
        (["ood.enabled=true", "ood.score=nll_gap", "teacher.backend=vllm"],
         "ood.score = 'nll_gap': nll_gap needs the teacher's logits in-process"),
        (["teacher.tokenizer=gpt2"], "teacher.tokenizer = 'gpt2': only backend=openai"),
        (["teacher.backend=openai"], "teacher.model = '': backend=openai needs the served"),
    ],
)
def test_cross_field_checks(overrides: list[str], expected: str) -> None:
    assert expected in error_of(overrides)


def test_cross_field_checks_pass_when_consistent() -> None:
    cfg = load_config(
        None,
        [
            "serve.enabled=false",
            "serve.port=9100",
            "metrics.port=0",
            "ray.num_cpus=0",
            "teacher.num_cpus=2",
        ],
    )
    assert cfg.metrics.port == 0 and cfg.reserved_cpus() == 2.5


@pytest.mark.parametrize(
    ("mix", "expected"),
    [
        ({}, "traffic_mix = {}: must name at least one kind"),
        ({"add4": 1.0}, "traffic_mix.add4 = 1.0: unknown demo kind 'add4'"),
        ({"add2": 0.0}, "weights must sum to more than 0"),
    ],
)
def test_demo_mix_validation(mix: dict[str, float], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        DemoConfig(traffic_mix=mix)
    assert expected in str(info.value)


def test_config_error_survives_crossing_ray() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["learner.lr=-1"])
    assert str(rebuilt(info.value)) == str(info.value)


# --- the shipped file, dumps and help ---------------------------------------------------


def test_deploy_demo_yaml_loads_and_names_every_section() -> None:
    cfg = load_config(DEMO_YAML)
    raw = yaml.safe_load(DEMO_YAML.read_text(encoding="utf-8"))
    assert set(raw) == {f.name for f in dataclasses.fields(Config)}
    assert cfg.kafka.embedded and cfg.demo.enabled
    assert "learner.lr = 0.0003" not in describe_config(cfg)  # sanity: format is indented


def test_config_to_dict_round_trips(tmp_path: Path) -> None:
    cfg = load_config(
        DEMO_YAML,
        [
            "learner.betas=[0.8, 0.9]",
            "teacher.stop=[';']",
            "learner.max_steps=7",
            "demo.traffic_mix.mul=0.5",
            "kafka.sasl_password=s3cret",
        ],
    )
    data = config_to_dict(cfg)
    dumped = yaml.safe_dump(data)  # plain YAML types only
    assert load_config(write_yaml(tmp_path, dumped)) == cfg
    assert config_from_dict(data) == cfg
    assert config_to_dict(Config()) == config_to_dict(load_config())


def test_secret_is_masked(tmp_path: Path) -> None:
    cfg = load_config(None, ["kafka.sasl_password=hunter2"])
    text = describe_config(cfg)
    assert "hunter2" not in text
    assert "sasl_password = '***'" in text
    assert config_to_dict(cfg, redact=True)["kafka"]["sasl_password"] == "***"
    assert config_to_dict(cfg)["kafka"]["sasl_password"] == "hunter2"
    bad_type = write_yaml(tmp_path, "kafka:\n  sasl_password: [hunter2]\n")
    assert (
        error_of([], bad_type) == "kafka.sasl_password = '***': expected str (quote the "
        "value in YAML to keep it as text)"
    )


def test_describe_mentions_every_field_and_its_help() -> None:
    cfg = Config()
    text = describe_config(cfg)
    for cls in config_classes():
        for name, doc in field_docs(cls).items():
            assert f"{name} = " in text or f"[{name}]" in text, name
            assert " ".join(doc.split())[:60] in text, f"{cls.__name__}.{name} help missing"
    assert "[one of: 'hf', 'vllm', 'openai']" in text
    assert not [line for line in text.splitlines() if line.lstrip().startswith("* ")]


def test_describe_marks_changed_values_with_default() -> None:
    text = describe_config(load_config(None, ["learner.lr=0.001", "demo.traffic_mix.add2=0.5"]))
    lr_line = next(line for line in text.splitlines() if "lr = " in line and "min_lr" not in line)
    assert lr_line.lstrip().startswith("* lr = 0.001") and "(default: 0.0003)" in lr_line
    mix_line = next(line for line in text.splitlines() if "traffic_mix = " in line)
    assert mix_line.lstrip().startswith("* traffic_mix = {add2: 0.5")
