"""Unit tests of the demo task: tokenizer, arithmetic lines, traffic mix and drift, probes."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from online_distill.tasks.arithmetic import (
    KINDS,
    Problem,
    exact_match,
    is_correct,
    parse_line,
    parse_prompt,
    sample_problem,
)
from online_distill.tasks.probes import probe_set
from online_distill.tasks.tokenizer import build_char_tokenizer, load_tokenizer, save_char_tokenizer
from online_distill.tasks.traffic import DemoTraffic, check_mix


def test_tokenizer_round_trip_through_auto_tokenizer(tmp_path) -> None:
    save_char_tokenizer(tmp_path)
    tok = load_tokenizer(tmp_path)
    text = "47+38=58\n9*12=801\nHello, world! ~{}"
    ids = tok(text).input_ids
    assert ids[0] == tok.bos_token_id
    assert len(ids) == len(text) + 1  # one token per character, plus <bos>
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert build_char_tokenizer()(text).input_ids == ids


def test_tokenizer_unknown_character_maps_to_unk() -> None:
    tok = build_char_tokenizer()
    ids = tok("1é2").input_ids
    assert ids[2] == tok.unk_token_id


def test_problem_answers_are_reversed() -> None:
    assert Problem("add2", 47, 38).line == "47+38=58\n"
    assert Problem("sub2", 50, 47).line == "50-47=3\n"
    assert Problem("mul", 7, 86).line == "7*86=206\n"
    assert Problem("add3", 999, 999).answer == "8991"


@pytest.mark.parametrize("kind", KINDS)
def test_sampled_problems_parse_back_to_their_kind(kind: str) -> None:
    rng = random.Random(0)
    for _ in range(300):
        p = sample_problem(kind, rng)  # type: ignore[arg-type]
        parsed = parse_line(p.line)
        assert parsed is not None and parsed[0] == p and parsed[1] == p.answer
        assert parse_prompt(p.prompt) == p


@pytest.mark.parametrize(
    "line",
    ["", "1+1", "05+3=8", "12-40=82", "1000+1=1001", "12/3=4", "a+b=c", "12+345=753", "3*5=51"],
)
def test_malformed_or_out_of_range_lines_do_not_parse(line: str) -> None:
    assert parse_line(line) is None


def test_exact_match_scorer() -> None:
    assert exact_match("47+38=", "58")
    assert exact_match("47+38=", "58\n12+3=51")
    assert not exact_match("47+38=", "85")
    assert not exact_match("not a prompt", "58")
    assert exact_match("1+1=2\n47+38=", "58")  # few-shot prompt: the last line is scored
    assert is_correct(Problem("mul", 2, 10), " 02 ")


def test_traffic_mix_is_head_heavy_then_drifts() -> None:
    traffic = DemoTraffic(drift_after=5000, seed=3)
    before = Counter(item.problem.kind for item in traffic.take(5000))
    after = Counter(item.problem.kind for item in traffic.take(5000))
    assert 0.88 < before["add2"] / 5000 < 0.92
    for kind in ("add3", "sub2", "mul"):
        assert 0.015 < before[kind] / 5000 < 0.06
    assert 0.57 < after["sub2"] / 5000 < 0.63
    assert 0.27 < after["add2"] / 5000 < 0.33


def test_traffic_is_a_pure_function_of_the_seed() -> None:
    a = [i.text for i in DemoTraffic(seed=7).take(200)]
    b = [i.text for i in DemoTraffic(seed=7).take(200)]
    c = [i.text for i in DemoTraffic(seed=8).take(200)]
    assert a == b and a != c


def test_drift_ramp_interpolates() -> None:
    traffic = DemoTraffic(drift_after=100, drift_ramp=100)
    assert traffic.drift_fraction(99) == 0.0
    assert traffic.drift_fraction(149) == pytest.approx(0.5)
    assert traffic.drift_fraction(500) == 1.0
    mid = traffic.weights_at(149)
    assert mid["add2"] == pytest.approx(0.5 * 0.9 + 0.5 * 0.3)
    assert DemoTraffic(drift_after=0).drift_fraction(10**6) == 0.0


@pytest.mark.parametrize(
    ("mix", "message"),
    [({}, "empty"), ({"div": 1.0}, "unknown kind 'div'"), ({"add2": -1}, ">= 0"),
     ({"add2": 0.0}, "sum to 0"), ({"add2": float("nan")}, ">= 0")],
)
def test_bad_mixes_are_rejected_with_the_reason(mix: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_mix(mix)


def test_probe_sets_are_fixed_and_fresh_draws_differ() -> None:
    head = probe_set("head", size=50)
    assert head == probe_set("head", size=50)
    assert {p.kind for p in head} == {"add2"}
    tail = Counter(p.kind for p in probe_set("tail", size=90))
    assert tail == {"add3": 30, "sub2": 30, "mul": 30}
    assert probe_set("head", size=50, seed=1) != head
    drifted = Counter(p.kind for p in probe_set("post_drift", size=1000))
    assert drifted["sub2"] > drifted["add2"] > drifted["mul"]
    with pytest.raises(ValueError, match="unknown probe set"):
        probe_set("middle", size=5)  # type: ignore[arg-type]
