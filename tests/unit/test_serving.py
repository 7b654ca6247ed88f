"""The serving engine and request checks on the demo teacher and tiny GPT-2s (no Ray): seconds."""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from online_distill.models.loader import load_model
from online_distill.serving import (
    ApiError,
    CompletionEngine,
    CompletionRequest,
    ServingLimits,
    check_body_size,
    error_from_pydantic,
    sample_token,
    validate_request,
)
from online_distill.tasks.arithmetic import KINDS, Problem, is_correct, sample_problem
from online_distill.tasks.evaluate import complete as evaluator_complete
from online_distill.tasks.models import DEMO_TEACHER_DIR
from tests.unit.test_learner import TOKENIZER, tiny_model

NAME = "student"
LIMITS = ServingLimits()


def request(**kw: Any) -> CompletionRequest:
    body: dict[str, Any] = {"model": NAME, "prompt": "12+34=", "temperature": 0}
    body.update(kw)
    return CompletionRequest.model_validate(body)


def run(engine: CompletionEngine, **kw: Any) -> dict[str, Any]:
    req = request(**kw)
    return engine.complete(req, validate_request(req, LIMITS, NAME))


def texts(completion: dict[str, Any]) -> list[str]:
    return [c["text"] for c in completion["choices"]]


@pytest.fixture(scope="module")
def teacher() -> CompletionEngine:
    model, tokenizer = load_model(DEMO_TEACHER_DIR)
    return CompletionEngine(model, tokenizer, version=3, served_model_name=NAME)


@pytest.fixture(scope="module")
def tiny() -> CompletionEngine:
    """A random model that stops at a newline (high-entropy samples)."""
    return CompletionEngine(tiny_model(7), TOKENIZER, version=1, served_model_name=NAME)


@pytest.fixture(scope="module")
def endless() -> CompletionEngine:
    """A random model with no end-of-sequence token: every row runs to max_tokens."""
    model = tiny_model(8)
    model.generation_config.eos_token_id = None
    return CompletionEngine(model, TOKENIZER, version=1, served_model_name=NAME)


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
    rng = random.Random(5)
    return [sample_problem(KINDS[i % len(KINDS)], rng) for i in range(16)]


# ---------------------------------------------------------------------- greedy decoding
def test_greedy_matches_the_evaluator_and_answers_correctly(teacher, problems) -> None:
    prompts = [p.prompt for p in problems]
    out = run(teacher, prompt=prompts, max_tokens=8)
    expected = evaluator_complete(teacher.model, teacher.tokenizer, prompts)  # HF generate
    assert texts(out) == expected
    assert all(is_correct(p, t) for p, t in zip(problems, texts(out), strict=True))
    assert {c["finish_reason"] for c in out["choices"]} == {"stop"}


def test_greedy_batched_equals_one_by_one(teacher, problems) -> None:
    prompts = [p.prompt for p in problems]  # mixed lengths: left padding in the batch
    batched = texts(run(teacher, prompt=prompts, max_tokens=8))
    alone = [run(teacher, prompt=p, max_tokens=8)["choices"][0]["text"] for p in prompts]
    assert batched == alone
    reqs = [request(prompt=p, max_tokens=8) for p in prompts[:5]]
    many = teacher.complete_many([(r, [r.prompt]) for r in reqs])  # type: ignore[list-item]
    assert [texts(c)[0] for c in many] == alone[:5]


def test_small_batch_chunks_give_the_same_rows(teacher, problems) -> None:
    chunked = CompletionEngine(teacher.model, teacher.tokenizer, 3, NAME, max_batch_rows=3)
    prompts = [p.prompt for p in problems[:7]]
    assert texts(run(chunked, prompt=prompts, n=2)) == texts(run(teacher, prompt=prompts, n=2))


def test_response_has_openai_shape(teacher) -> None:
    out = run(teacher, prompt="12+34=")
    assert out["id"].startswith("cmpl-") and len(out["id"]) > 10
    assert out["object"] == "text_completion" and out["model"] == NAME
    assert out["version"] == 3 and out["system_fingerprint"] == "v3"
    assert isinstance(out["created"], int)
    assert out["choices"] == [{"index": 0, "text": "64", "logprobs": None,
                               "finish_reason": "stop"}]
    # <bos> + 6 prompt characters; "6", "4" and the newline (EOS) generated.
    assert out["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def test_models_lists_the_served_model(teacher) -> None:
    listing = teacher.models()
    assert listing["object"] == "list"
    (card,) = listing["data"]
    assert card["id"] == NAME and card["object"] == "model"
    assert card["owned_by"] == "online-distill" and card["version"] == 3


# ---------------------------------------------------------------------- sampling
def test_same_seed_same_text_batched_or_not(tiny, teacher) -> None:
    for engine in (tiny, teacher):
        kw: dict[str, Any] = {"prompt": ["1+", "23*4"], "n": 3, "temperature": 1.0,
                              "top_p": 0.9, "seed": 11, "max_tokens": 10}
        alone = texts(run(engine, **kw))
        assert texts(run(engine, **kw)) == alone
        others = [request(prompt="999+999=", temperature=0.7, max_tokens=6),
                  request(**kw),
                  request(prompt=["a much longer prompt", "x"], temperature=1.3, seed=2, n=2)]
        many = engine.complete_many([(r, validate_request(r, LIMITS, NAME)) for r in others])
        assert texts(many[1]) == alone


def test_different_seeds_differ(tiny) -> None:
    outs = {texts(run(tiny, prompt="1+", temperature=1.0, seed=s, max_tokens=8))[0]
            for s in range(6)}
    assert len(outs) >= 4
    rows = texts(run(tiny, prompt="1+", temperature=1.0, seed=0, n=4, max_tokens=8))
    assert len(set(rows)) >= 3  # seed + row index: the n rows differ too


def test_unseeded_requests_differ(tiny) -> None:
    outs = {texts(run(tiny, prompt="1+", temperature=1.0, max_tokens=8))[0] for _ in range(4)}
    assert len(outs) >= 3


def test_tiny_top_p_is_greedy(tiny) -> None:
    greedy = texts(run(tiny, prompt="1+", max_tokens=8))
    assert texts(run(tiny, prompt="1+", temperature=1.5, top_p=1e-6, seed=3,
                     max_tokens=8)) == greedy


@pytest.mark.parametrize(
    ("temperature", "top_p", "expected"),
    [(1.0, 1.0, [0.6, 0.3, 0.1]), (1.0, 0.7, [2 / 3, 1 / 3, 0.0]), (1.0, 0.55, [1.0, 0, 0]),
     (0.5, 1.0, [0.36 / 0.46, 0.09 / 0.46, 0.01 / 0.46])],
)
def test_sample_token_draws_from_the_tempered_nucleus(temperature, top_p, expected) -> None:
    logits = torch.tensor([0.6, 0.3, 0.1]).log()  # (V,)
    gen = torch.Generator().manual_seed(0)
    draws = [sample_token(logits, temperature, top_p, gen) for _ in range(3000)]
    freq = [draws.count(i) / len(draws) for i in range(3)]
    assert freq == pytest.approx(expected, abs=0.03)
    if expected[2] == 0:
        assert 2 not in draws


# ---------------------------------------------------------------------- logprobs
@pytest.mark.parametrize("k", [0, 1, 5])
def test_logprobs_shape_and_greedy_token_is_the_top(endless, k) -> None:
    out = run(endless, prompt=["1+2=", "hello"], logprobs=k, max_tokens=6)
    for choice, prompt in zip(out["choices"], ["1+2=", "hello"], strict=True):
        lp = choice["logprobs"]
        n = len(lp["tokens"])
        assert n == 6 == len(lp["token_logprobs"]) == len(lp["top_logprobs"])
        assert n == len(lp["text_offset"])
        assert "".join(lp["tokens"]) == choice["text"]
        assert lp["text_offset"][0] == len(prompt)
        offsets = lp["text_offset"]
        assert [b - a for a, b in zip(offsets[:-1], offsets[1:], strict=True)] == [
            len(t) for t in lp["tokens"][:-1]]
        for token, chosen, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"],
                                      strict=True):
            assert chosen <= 0 and len(top) == k
            if k:
                assert top[token] == pytest.approx(chosen)
                assert chosen == pytest.approx(max(top.values()))


def test_logprobs_are_the_raw_distribution_whatever_the_sampling(tiny) -> None:
    prompt = "7*8"
    out = run(tiny, prompt=prompt, temperature=0.4, top_p=0.5, seed=1, logprobs=3,
              max_tokens=5)
    lp = out["choices"][0]["logprobs"]
    prompt_ids = TOKENIZER(prompt).input_ids
    cont = [TOKENIZER.convert_tokens_to_ids(t) for t in lp["tokens"]]
    with torch.no_grad():
        logits = tiny.model(input_ids=torch.tensor([prompt_ids + cont])).logits[0]  # (T, V)
    logp = torch.log_softmax(logits.float(), dim=-1)[len(prompt_ids) - 1 : -1]  # (L, V)
    expected = logp.gather(-1, torch.tensor(cont)[:, None]).squeeze(-1)  # (L,)
    assert lp["token_logprobs"] == pytest.approx(expected.tolist(), abs=1e-4)
    top = logp.topk(3, dim=-1).values  # (L, 3)
    for row, dct in zip(top.tolist(), lp["top_logprobs"], strict=True):
        assert sorted(dct.values(), reverse=True) == pytest.approx(row, abs=1e-4)


# ---------------------------------------------------------------------- echo
def direct_logp(engine: CompletionEngine, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = engine.model(input_ids=torch.tensor([ids])).logits[0]  # (T, V)
    return torch.log_softmax(logits.float(), dim=-1)  # (T, V)


def test_echo_scores_the_prompt_like_a_direct_forward(tiny) -> None:
    prompt = "12+34=5"
    out = run(tiny, prompt=prompt, echo=True, max_tokens=0, logprobs=3)
    (choice,) = out["choices"]
    assert choice["text"] == prompt and choice["finish_reason"] == "length"
    ids = TOKENIZER(prompt).input_ids
    assert out["usage"] == {"prompt_tokens": len(ids), "completion_tokens": 0,
                            "total_tokens": len(ids)}
    lp = choice["logprobs"]
    assert lp["tokens"] == ["<bos>", *prompt]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert lp["text_offset"] == [0, *range(len(prompt))]  # <bos> takes no text
    logp = direct_logp(tiny, ids)[:-1]  # (P - 1, V): position t predicts token t + 1
    expected = logp.gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1)
    assert lp["token_logprobs"][1:] == pytest.approx(expected.tolist(), abs=1e-5)
    top = logp.topk(3, dim=-1)  # (P - 1, 3)
    for values, tids, dct in zip(top.values.tolist(), top.indices.tolist(),
                                 lp["top_logprobs"][1:], strict=True):
        assert dct == pytest.approx({TOKENIZER.decode([i]): v for i, v in
                                     zip(tids, values, strict=True)}, abs=1e-5)


def test_echo_puts_the_prompt_before_an_unchanged_completion(endless) -> None:
    plain = run(endless, prompt=["ab", "1+2="], max_tokens=4, logprobs=2, n=2)
    echo = run(endless, prompt=["ab", "1+2="], max_tokens=4, logprobs=2, n=2, echo=True)
    assert echo["usage"] == plain["usage"]
    for p, c in zip(plain["choices"], echo["choices"], strict=True):
        prompt = "ab" if p["index"] < 2 else "1+2="
        assert c["index"] == p["index"] and c["text"] == prompt + p["text"]
        head = len(prompt) + 1  # <bos> and the prompt's characters
        for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
            assert c["logprobs"][key][head:] == p["logprobs"][key]
        assert c["logprobs"]["token_logprobs"][0] is None
        assert "".join(c["logprobs"]["tokens"][1:]) == c["text"]
    bare = run(endless, prompt="ab", max_tokens=2, echo=True)["choices"][0]
    assert bare["logprobs"] is None and bare["text"].startswith("ab") and len(bare["text"]) == 4


def test_echo_batched_with_other_requests_changes_nothing(teacher) -> None:
    reqs = [request(prompt="12+34=", max_tokens=4, logprobs=1),
            request(prompt=["5+5=", "7*8="], echo=True, max_tokens=0, logprobs=2),
            request(prompt="99+1=", echo=True, max_tokens=5)]
    many = teacher.complete_many([(r, validate_request(r, LIMITS, NAME)) for r in reqs])
    alone = [teacher.complete(r, validate_request(r, LIMITS, NAME)) for r in reqs]
    assert [m["choices"] for m in many] == [a["choices"] for a in alone]
    assert texts(many[1]) == ["5+5=", "7*8="]
    assert texts(many[2]) == ["99+1=001"]  # the demo writes answers' digits reversed


# ---------------------------------------------------------------------- stopping
def test_stop_string_cuts_text_and_tokens(teacher) -> None:
    out = run(teacher, prompt="123+456=", stop=["7", "zz"], logprobs=2)  # greedy text "975"
    (choice,) = out["choices"]
    assert choice["text"] == "9" and choice["finish_reason"] == "stop"
    assert choice["logprobs"]["tokens"] == ["9"]
    assert len(choice["logprobs"]["token_logprobs"]) == 1


def test_multi_token_stop_string_is_cut_before_its_start(endless) -> None:
    full = texts(run(endless, prompt="abc", max_tokens=8))[0]
    out = run(endless, prompt="abc", max_tokens=8, stop=full[3:5], logprobs=1)
    (choice,) = out["choices"]
    cut = full.find(full[3:5])
    assert choice["text"] == full[:cut] and choice["finish_reason"] == "stop"
    assert "".join(choice["logprobs"]["tokens"]) == full[:cut]


def test_max_tokens_ends_with_length(teacher, endless) -> None:
    out = run(teacher, prompt="123+456=", max_tokens=2)
    assert texts(out) == ["97"] and out["choices"][0]["finish_reason"] == "length"
    assert out["usage"]["completion_tokens"] == 2
    out = run(endless, prompt="x", max_tokens=5, logprobs=0)
    assert out["choices"][0]["finish_reason"] == "length"
    assert len(out["choices"][0]["logprobs"]["tokens"]) == 5
    assert out["usage"]["completion_tokens"] == 5


def test_rows_stop_independently(teacher) -> None:
    out = run(teacher, prompt=["3+4=", "999+999="], max_tokens=8)  # "7\n" and "8991\n"
    assert texts(out) == ["7", "8991"]
    assert out["usage"]["completion_tokens"] == 2 + 5


def test_n_and_prompt_lists_in_openai_order(teacher) -> None:
    prompts = ["1+2=", "30+4=", "7*86="]
    out = run(teacher, prompt=prompts, n=3)
    assert [c["index"] for c in out["choices"]] == list(range(9))
    assert texts(out) == ["3"] * 3 + ["43"] * 3 + ["206"] * 3
    prompt_tokens = sum(len(p) + 1 for p in prompts)  # each prompt once, <bos> included
    completion_tokens = 3 * (2 + 3 + 4)  # answers plus the newline EOS
    assert out["usage"] == {"prompt_tokens": prompt_tokens,
                            "completion_tokens": completion_tokens,
                            "total_tokens": prompt_tokens + completion_tokens}


def test_context_overflow_is_a_clear_400(teacher) -> None:
    prompt = "1+" * 60  # 121 tokens with <bos>; the demo context is 128
    with pytest.raises(ApiError) as info:
        run(teacher, prompt=prompt, max_tokens=16)
    err = info.value
    assert err.status == 400 and err.code == "context_length_exceeded"
    assert "128" in err.message and "at most 7" in err.message


# ---------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("changes", "param", "needles"),
    [
        ({"max_tokens": 500}, "max_tokens", ["500", "64", "at most 64"]),
        ({"max_tokens": 0}, "max_tokens", ["at least 1"]),
        ({"prompt": []}, "prompt", ["empty"]),
        ({"prompt": ["1+1="] * 65}, "prompt", ["65", "64"]),
        ({"prompt": "9" * 3000}, "prompt", ["3000", "2048"]),
        ({"prompt": ["ok", "9" * 2049]}, "prompt", ["prompt[1]", "2049", "2048"]),
        ({"n": 0}, "n", ["1..8"]),
        ({"n": 9}, "n", ["n=9", "1..8"]),
        ({"logprobs": 21}, "logprobs", ["21", "0..20"]),
        ({"logprobs": -1}, "logprobs", ["0..20"]),
        ({"temperature": 2.5}, "temperature", ["2.5", "[0, 2]"]),
        ({"temperature": -0.1}, "temperature", ["[0, 2]"]),
        ({"top_p": 0.0}, "top_p", ["(0, 1]"]),
        ({"top_p": 1.5}, "top_p", ["(0, 1]"]),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", ["5", "at most 4"]),
        ({"stop": ["a", ""]}, "stop", ["empty string"]),
        ({"stop": ""}, "stop", ["empty string"]),
        ({"stream": True, "logprobs": 2}, "logprobs", ["not streamed", "stream=false"]),
        ({"stream": True, "echo": True}, "echo", ["not streamed", "stream=false"]),
        ({"stream_options": {"include_usage": True}}, "stream_options", ["stream=true"]),
        ({"echo": True, "max_tokens": -1}, "max_tokens", ["at least 0"]),
        ({"presence_penalty": 0.5}, "presence_penalty", ["0.5", "not supported"]),
        ({"frequency_penalty": -1}, "frequency_penalty", ["not supported"]),
        ({"best_of": 3}, "best_of", ["best_of=3"]),
        ({"logit_bias": {"50": 5}}, "logit_bias", ["logit_bias"]),
        ({"suffix": "x"}, "suffix", ["suffix"]),
    ],
)
def test_bad_requests_are_400s_that_say_the_limit(changes, param, needles) -> None:
    with pytest.raises(ApiError) as info:
        validate_request(request(**changes), LIMITS, NAME)
    err = info.value
    assert err.status == 400 and err.param == param
    for needle in needles:
        assert needle in err.message, err.message
    body = err.body()["error"]
    assert body == {"message": err.message, "type": "invalid_request_error", "param": param,
                    "code": err.code}


def test_max_tokens_over_cap_message() -> None:
    with pytest.raises(ApiError) as info:
        validate_request(request(max_tokens=500), LIMITS, NAME)
    assert info.value.message == ("max_tokens=500 is over this server's cap of 64; "
                                  "ask for at most 64 tokens")
    assert info.value.code == "max_tokens_over_cap"


def test_neutral_values_and_user_are_accepted() -> None:
    req = request(prompt=["a", "b"], presence_penalty=0, frequency_penalty=0.0, best_of=1,
                  logit_bias={}, suffix=None, user="anyone", stop="\n", n=8, logprobs=20,
                  max_tokens=64, temperature=2, top_p=1)
    assert validate_request(req, LIMITS, NAME) == ["a", "b"]
    assert validate_request(request(prompt="x"), LIMITS, NAME) == ["x"]


def test_other_model_name_is_a_404_naming_the_served_model() -> None:
    with pytest.raises(ApiError) as info:
        validate_request(request(model="gpt-4"), LIMITS, NAME)
    err = info.value
    assert err.status == 404 and err.code == "model_not_found" and err.param == "model"
    assert "gpt-4" in err.message and repr(NAME) in err.message


def test_unknown_field_is_rejected_by_name() -> None:
    with pytest.raises(ValidationError) as info:
        CompletionRequest.model_validate({"model": NAME, "prompt": "x", "tools": []})
    err = error_from_pydantic(info.value)
    assert err.status == 400 and err.param == "tools" and err.code == "unknown_field"
    assert "tools" in err.message and "remove it" in err.message


@pytest.mark.parametrize(
    ("body", "param", "needles"),
    [
        ({"model": NAME, "prompt": 5}, "prompt",
         ["prompt: Input should be a valid string", "str | list[str]", "got 5"]),
        ({"model": NAME, "prompt": [1, 2]}, "prompt", ["prompt:", "list[str]"]),
        ({"prompt": "x"}, "model", ["model: Field required"]),
        ({"model": NAME, "prompt": "x", "n": "many", "temperature": "hot"}, "temperature",
         ["n: Input should be a valid integer", "temperature: Input should be a valid number"]),
    ],
)
def test_pydantic_errors_become_one_clear_400(body, param, needles) -> None:
    with pytest.raises(ValidationError) as info:
        CompletionRequest.model_validate(body)
    err = error_from_pydantic(info.value)
    assert err.status == 400 and err.param == param
    for needle in needles:
        assert needle in err.message, err.message


def test_fastapi_style_error_lists_drop_the_body_prefix() -> None:
    errors = [{"type": "string_type", "loc": ("body", "prompt", "str"),
               "msg": "Input should be a valid string", "input": 5},
              {"type": "list_type", "loc": ("body", "prompt", "list[str]"),
               "msg": "Input should be a valid list", "input": 5}]
    err = error_from_pydantic(errors)
    assert err.param == "prompt" and err.message.count("prompt:") == 1
    err = error_from_pydantic([{"type": "json_invalid", "loc": ("body", 7),
                                "msg": "JSON decode error", "input": {}}])
    assert err.status == 400 and "request body" in err.message


def test_body_size_limit_is_a_413() -> None:
    check_body_size(65536, LIMITS)
    with pytest.raises(ApiError) as info:
        check_body_size(70000, LIMITS)
    assert info.value.status == 413 and "65536" in info.value.message
