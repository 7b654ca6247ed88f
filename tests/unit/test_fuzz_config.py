"""Bad YAML configs at scale (issue 10): hypothesis over every field of every config section.

tests/unit/test_config.py checks chosen examples of each error; this module throws hundreds
of generated documents and overrides at `load_config`: values of the wrong type for each
field's annotation, unknown keys (also non-string ones), out-of-range and extreme numbers,
sections that are not mappings, several damaged fields at once on top of deploy/*.yaml, and
arbitrary override text. Each is either a valid config or rejected with a `ConfigError`
whose message names the offending dotted field path (section.field); no other exception
type ever escapes, not even for self-referencing or deeply nested YAML, bytes that are not
UTF-8, or integers of thousands of digits.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from online_distill.config import Config, ConfigError, load_config
from online_distill.config.base import field_types
from online_distill.config.coerce import coerce

REPO = Path(__file__).resolve().parents[2]
DEPLOY = sorted((REPO / "deploy").glob("*.yaml"))
SECTIONS: dict[str, type] = {name: tp for name, tp in field_types(Config).items()
                             if dataclasses.is_dataclass(tp)}
FIELDS: list[tuple[str, Any]] = [
    *((f"{section}.{name}", tp) for section, cls in SECTIONS.items()
      for name, tp in field_types(cls).items()),
    *((name, tp) for name, tp in field_types(Config).items() if name not in SECTIONS)]
"""(dotted path, annotated type) of every config field: sections' fields and top-level."""
NUMERIC = [(path, tp) for path, tp in FIELDS
           if tp in (int, float) or set(typing.get_args(tp)) in ({int, type(None)},)
           or typing.get_origin(tp) is dict]
FIELD_PATH = re.compile(r"\b(?:run_dir|log_level|(?:{})\.\w+)".format("|".join(SECTIONS)))
PROPERTY = settings(deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
COUNTS: dict[str, int] = {}


# --------------------------------------------------------------------------- helpers
@contextmanager
def yaml_file(doc: object) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as root:
        path = Path(root) / "config.yaml"
        path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        yield path


def set_path(doc: dict[str, Any], path: str, value: object) -> None:
    section, _, name = path.partition(".")
    if not name:
        doc[section] = value
        return
    if not isinstance(doc.get(section), dict):
        doc[section] = {}
    doc[section][name] = value


def load(doc: object = None, overrides: list[str] | None = None,
         where: str = "yaml") -> Config | ConfigError:
    """The config, or the ConfigError; any other exception fails the test."""
    COUNTS[where] = COUNTS.get(where, 0) + 1
    try:
        if doc is None:
            return load_config(None, overrides or [])
        with yaml_file(doc) as path:
            return load_config(path, overrides or [])
    except ConfigError as err:
        assert str(err).strip(), "an empty error message"
        return err


def rejects(value: object, tp: Any, path: str) -> bool:
    """True when the loader's own coercion refuses `value` for a field of type `tp`."""
    try:
        coerce(value, tp, path, lenient=True)
    except ConfigError:
        return True
    return False


def names(err: ConfigError, path: str) -> bool:
    """The error names `path` (the field, or an entry of a mapping field / tuple field)."""
    return bool(re.search(rf"(^|\W){re.escape(path)}(\W|$)", str(err)))


UNNAMED = {("serve.max_prompt_chars", "serve.max_body_bytes"),
           ("serve.num_replicas", "ray.num_cpus")}
"""Cross-field checks that blame the other field: their message must still name the
changed one (test_cross_field_errors_name_the_changed_field)."""


def check_named(result: Config | ConfigError, paths: list[str]) -> None:
    """Valid, or a ConfigError naming one of `paths`; a check that spans two fields may name
    the other one of the pair, but then it names the changed one in its explanation."""
    if isinstance(result, Config):
        return
    if any(names(result, p) for p in paths):
        return
    assert FIELD_PATH.search(str(result)), f"no field path in: {result}"
    assert any(p.rpartition(".")[2] in str(result) for p in paths), (paths, str(result))


scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
           | st.sampled_from(["yes", "off", "1e3", "0x10", "1_000", "null", "~", "", "-",
                              "3e-4", "nan", ".inf", "TRUE", "None", "\u00e9\u00e8", "a,b"]))
junk = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=6) | st.integers(), inner, max_size=3),
                    max_leaves=6)
extremes = st.sampled_from([0, -1, 1, -(10**12), 10**12, 2**63, -(2**63), 10**30, 0.0, -0.0,
                            1e-300, -1e-300, 1e300, -1e300, 0.5, -0.5, 1.0000001, 0.9999999,
                            65535, 65536, 1024, 1023]) | st.integers() | st.floats(
                                allow_nan=False, allow_infinity=False)
fields = st.sampled_from(FIELDS)
base_docs = st.sampled_from([{}, *(yaml.safe_load(p.read_text()) or {} for p in DEPLOY)])


# --------------------------------------------------------------------------- properties
@given(fields, junk, st.sampled_from(["empty", "deploy"]), base_docs)
@settings(PROPERTY, max_examples=300)
def test_wrong_type_for_any_field_names_the_field(field: tuple[str, Any], value: object,
                                                  start: str, base: dict[str, Any]) -> None:
    path, tp = field
    assume(rejects(value, tp, path))
    doc = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    if start == "empty":
        doc = {}
    set_path(doc, path, value)
    result = load(doc)
    assert isinstance(result, ConfigError), f"{path} = {value!r} was accepted"
    assert result.path == path or result.path.startswith((path + ".", path + "[")), (
        path, result.path, str(result))
    assert names(result, result.path) and "expected" in str(result)


@given(st.sampled_from(NUMERIC), extremes)
@settings(PROPERTY, max_examples=300)
def test_out_of_range_numbers_are_accepted_or_name_the_field(field: tuple[str, Any],
                                                             value: object) -> None:
    path, tp = field
    if typing.get_origin(tp) is dict:  # a mapping field: one extreme entry
        key = "add2" if path.startswith("demo.") else "x"
        value = {key: value}
    check_named(load(set_doc(path, value)), [path])


def set_doc(path: str, value: object) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    set_path(doc, path, value)
    return doc


identifiers = st.from_regex(r"[a-z_][a-z0-9_]{0,15}", fullmatch=True)


@given(st.sampled_from([*SECTIONS, ""]), identifiers | st.integers() | st.booleans())
@settings(PROPERTY, max_examples=150)
def test_unknown_keys_are_named_with_their_section(section: str, key: object) -> None:
    known = set(field_types(SECTIONS[section]) if section else field_types(Config))
    assume(str(key) not in known)
    doc: dict[Any, Any] = {section: {key: 1}} if section else {key: 1}
    result = load(doc)
    assert isinstance(result, ConfigError)
    want = f"{section}.{key}" if section else str(key)
    assert result.path == want and "unknown config field" in str(result), str(result)


@given(st.sampled_from(list(SECTIONS)), junk.filter(lambda v: not isinstance(v, dict)
                                                    and v is not None))
@settings(PROPERTY, max_examples=60)
def test_a_section_that_is_not_a_mapping_is_named(section: str, value: object) -> None:
    result = load({section: value})
    assert isinstance(result, ConfigError) and result.path == section, str(result)


@given(base_docs, st.lists(st.tuples(fields, junk | extremes), min_size=1, max_size=5))
@settings(PROPERTY, max_examples=150)
def test_several_bad_fields_at_once_name_one_of_them(
        base: dict[str, Any], changes: list[tuple[tuple[str, Any], object]]) -> None:
    doc = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    final = {path: (tp, value) for (path, tp), value in changes}  # the last one counts
    for path, (_, value) in final.items():
        set_path(doc, path, value)
    result = load(doc)
    if any(rejects(value, tp, path) for path, (tp, value) in final.items()):
        assert isinstance(result, ConfigError), f"{changes} were accepted"
    check_named(result, list(final))


override_text = st.text(max_size=20) | st.sampled_from(
    ["", "=", "==", "[", "{", "}", "[1, 2", "{a: 1", "- a", "!!binary aGk=", "&a [*b]",
     "\x00", "\ud7ff", "1e999", "-1e999", ".nan", "0x1F", "0o17", "2001-12-14", "a: b",
     "'unclosed", '"x', "| x", "> x", "%YAML 1.2", "--- x", "... x", "@x", "`x", "? x"])


@given(fields, override_text)
@settings(PROPERTY, max_examples=300)
def test_any_override_text_is_accepted_or_names_the_field(field: tuple[str, Any],
                                                          text: str) -> None:
    path, _ = field
    check_named(load(overrides=[f"{path}={text}"], where="overrides"), [path])


@given(st.text(max_size=40))
@settings(PROPERTY, max_examples=100)
def test_malformed_override_keys_raise_config_errors(text: str) -> None:
    result = load(overrides=[text], where="overrides")
    assert isinstance(result, (Config, ConfigError))


@given(st.text(max_size=200))
@settings(PROPERTY, max_examples=100)
def test_arbitrary_yaml_text_is_a_config_or_a_config_error(text: str) -> None:
    COUNTS["yaml text"] = COUNTS.get("yaml text", 0) + 1
    try:
        with tempfile.TemporaryDirectory() as root:
            path = Path(root) / "c.yaml"
            path.write_text(text, encoding="utf-8")
            load_config(path, [])
    except ConfigError as err:
        assert str(err).strip()


def test_every_field_is_fuzzed() -> None:
    """The field list is complete: every section's fields plus the top-level ones."""
    n = sum(len(field_types(cls)) for cls in SECTIONS.values())
    assert len(FIELDS) == n + len(field_types(Config)) - len(SECTIONS) > 100
    assert len(NUMERIC) > 50


# --------------------------------------------------------------------------- known crashes
KNOWN_CRASHES = {
    "recursive_alias_in_a_field": (b"teacher:\n  stop: &a [*a]\n", RecursionError),
    "recursive_alias_as_a_section": (b"learner: &a {lr: *a}\n", RecursionError),
    "deeply_nested_flow_list": (b"teacher:\n  stop: " + b"[" * 5000 + b"]" * 5000 + b"\n",
                                RecursionError),
    "not_utf8": (b"learner:\n  lr: \xff\xfe\n", UnicodeDecodeError),
    "integer_over_4300_digits": (b"learner:\n  lr: " + b"9" * 5000 + b"\n", ValueError),
}
KNOWN_OVERRIDE_CRASHES = ["teacher.stop=&a [*a]", "learner.betas=&a [*a, *a]",
                          "demo.traffic_mix=&a {add2: *a}", "learner.lr=" + "9" * 5000]


@pytest.mark.parametrize("name", list(KNOWN_CRASHES))
def test_hostile_yaml_is_a_config_error(name: str) -> None:
    data, _ = KNOWN_CRASHES[name]
    with tempfile.TemporaryDirectory() as root:
        path = Path(root) / "c.yaml"
        path.write_bytes(data)
        with pytest.raises(ConfigError):
            load_config(path, [])


@pytest.mark.parametrize("changed,blamed", sorted(UNNAMED))
def test_cross_field_errors_name_the_changed_field(changed: str, blamed: str) -> None:
    result = load(set_doc(changed, 10**12))
    assert isinstance(result, ConfigError) and result.path == blamed
    assert changed.rpartition(".")[2] in str(result), str(result)


@pytest.mark.parametrize("override", KNOWN_OVERRIDE_CRASHES)
def test_hostile_override_is_a_config_error(override: str) -> None:
    with pytest.raises(ConfigError):
        load_config(None, [override])


def test_zz_config_fuzz_count() -> None:
    total = sum(COUNTS.values())
    print(f"fuzzed configs: {total} ({COUNTS})")
    if total:
        assert total >= 500
