"""The OpenAI-compatible HTTP teacher against httpx.MockTransport servers (no network): seconds.

Most tests put the project's own completions engine behind the mock transport, so the
backend talks to the real server logic; hand-written answers play vLLM, broken servers and
the ends of completions (EOS, stop strings, length).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from pydantic import ValidationError

from online_distill.config.teacher import TeacherConfig
from online_distill.serving import (
    ApiError,
    CompletionEngine,
    CompletionRequest,
    ServingLimits,
    error_from_pydantic,
    validate_request,
)
from online_distill.teachers import LabelRequest, TeacherBackend
from online_distill.teachers.hf import HFTeacher
from online_distill.teachers.openai_http import (
    OpenAITeacher,
    ScoringUnsupported,
    TeacherHTTPError,
    TeacherResponseError,
    TokenizationMismatch,
)
from online_distill.teachers.openai_parse import reverse_table, token_scores
from tests.unit.test_learner import TOKENIZER, tiny_model

NAME = "teacher-model"
URL = "http://teacher.test/v1"
Handler = Callable[[httpx.Request], httpx.Response]
PROMPTS = ["12+34=", "7*8=", "5-3=", "99+1=", "hello"]


def ids_of(texts: list[str]) -> list[list[int]]:
    return [TOKENIZER(t).input_ids for t in texts]


def make(handler: Handler, **kw: Any) -> OpenAITeacher:
    kw.setdefault("sleep", lambda s: None)
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return OpenAITeacher(URL, NAME, TOKENIZER, client=client, **kw)


def ok(body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json=body)


def engine_server(engine: CompletionEngine, bodies: list[dict[str, Any]] | None = None,
                  refuse: Callable[[dict[str, Any]], str | None] = lambda body: None
                  ) -> Handler:
    """The project's own /v1/completions logic as a transport handler."""
    lock = threading.Lock()

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if bodies is not None:
            bodies.append(body)
        if (why := refuse(body)) is not None:
            return httpx.Response(400, json={"error": {"message": why}})
        try:
            req = CompletionRequest.model_validate(body)
            prompts = validate_request(req, ServingLimits(), NAME)
            with lock:
                return ok(engine.complete(req, prompts))
        except ValidationError as exc:
            err = error_from_pydantic(exc)
        except ApiError as exc:
            err = exc
        return httpx.Response(err.status, json=err.body())

    return handle


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model(11, layers=2, width=48)


@pytest.fixture(scope="module")
def engine(model) -> CompletionEngine:
    return CompletionEngine(model, TOKENIZER, version=1, served_model_name=NAME)


@pytest.fixture(scope="module")
def local(model) -> HFTeacher:
    return HFTeacher(model, device="cpu", tokenizer=TOKENIZER, teacher_id="local")


# ---------------------------------------------------------------------- labeling
def test_is_a_teacher_backend_built_from_config() -> None:
    cfg = TeacherConfig(backend="openai", model=NAME, base_url=URL + "/", max_concurrency=2,
                        server_max_logprobs=5)
    teacher = OpenAITeacher.from_config(cfg, TOKENIZER, score_mode="echo")
    assert isinstance(teacher, TeacherBackend)
    assert teacher.url == URL + "/completions" and teacher.teacher_id == NAME
    assert teacher.score_mode == "echo" and teacher.max_top_k == 5
    teacher.close()


def test_label_bodies_chunks_and_greedy_first(engine) -> None:
    bodies: list[dict[str, Any]] = []
    teacher = make(engine_server(engine, bodies), batch_size=2, stop=["\n"],
                   max_concurrency=1)
    req = LabelRequest(n=2, top_k_logprobs=30, max_new_tokens=5, seed=7, temperature=0.8,
                       top_p=0.9)
    out = teacher.label(ids_of(PROMPTS), req)
    # The first request asks for token ids; online-distill refuses the field, once.
    assert sum("return_tokens_as_token_ids" in b for b in bodies) == 1
    sent = [b for b in bodies if "return_tokens_as_token_ids" not in b]
    assert [b["prompt"] for b in sent] == [PROMPTS[0:2]] * 2 + [PROMPTS[2:4]] * 2 + [
        PROMPTS[4:]] * 2
    greedy, sample = sent[0], sent[1]
    assert greedy == {"model": NAME, "prompt": PROMPTS[:2], "n": 1, "max_tokens": 5,
                      "logprobs": 20, "temperature": 0.0, "top_p": 1.0, "seed": 7,
                      "stop": ["\n"]}
    assert sample == {**greedy, "n": 2, "temperature": 0.8, "top_p": 0.9}
    assert [[pt.decoding for pt in pts] for pts in out] == [["greedy", "sample", "sample"]] * 5
    assert all(pt.k == 20 or pt.num_tokens == 0 for pts in out for pt in pts)


def test_labels_are_the_servers_raw_distribution(engine, model) -> None:
    teacher = make(engine_server(engine))
    prompt_ids = ids_of(PROMPTS)
    out = teacher.label(prompt_ids, LabelRequest(n=2, top_k_logprobs=6, max_new_tokens=6,
                                                 seed=1, temperature=1.5))
    for p, pts in zip(prompt_ids, out, strict=True):
        for pt in pts:
            if not pt.num_tokens:
                continue
            cont = list(pt.token_ids)
            assert pt.text == TOKENIZER.decode(cont, skip_special_tokens=True)
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([p + cont])).logits[0]  # (T, V)
            logp = torch.log_softmax(logits.float(), -1)[len(p) - 1 : -1]  # (L, V)
            top = logp.topk(6, dim=-1)  # (L, 6)
            assert np.array_equal(pt.topk_ids_array(np.int64), top.indices.numpy())
            assert pt.topk_logprobs_array() == pytest.approx(top.values.numpy(), abs=1e-4)
            tail = np.log1p(-np.exp(top.values.double().numpy()).sum(-1))
            assert pt.tail_logmass_array() == pytest.approx(tail, abs=1e-4)
            chosen = logp.gather(-1, torch.tensor(cont)[:, None]).squeeze(-1)
            assert pt.sampled_logprobs_array() == pytest.approx(chosen.numpy(), abs=1e-4)


def vllm_choice(index: int, ids: list[int], tops: list[dict[int, float]],
                finish: str = "length", **extra: Any) -> dict[str, Any]:
    return {"index": index, "text": "", "finish_reason": finish, **extra, "logprobs": {
        "tokens": [f"token_id:{i}" for i in ids],
        "token_logprobs": [top[i] for i, top in zip(ids, tops, strict=True)],
        "top_logprobs": [{f"token_id:{i}": v for i, v in top.items()} for top in tops],
        "text_offset": list(range(len(ids)))}}


def test_token_id_strings_choice_order_and_tails() -> None:
    bodies: list[dict[str, Any]] = []
    half, full = math.log(0.5), [math.log(0.6), math.log(0.4)]

    def vllm(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        # Choices out of order; the sampled token (id 9) rides along as a k + 1-th entry;
        # -9999 stands for -inf; the second prompt's top-2 cover everything.
        choices = [
            vllm_choice(1, [7], [{7: full[0], 8: full[1], 9: -9999.0}]),
            vllm_choice(0, [9, 4], [{5: half, 6: math.log(0.3), 9: math.log(0.05)},
                                    {4: 1e-7, 5: -20.0}]),
        ]
        return ok({"choices": choices})

    teacher = make(vllm)
    (a,), (b,) = teacher.label(ids_of(["1+", "2+"]), LabelRequest(
        n=1, decoding="greedy", top_k_logprobs=2, max_new_tokens=2))
    assert bodies[0]["return_tokens_as_token_ids"] is True
    assert a.token_ids == (9, 4) and a.topk_ids == ((5, 6), (4, 5))
    assert a.topk_logprobs_array() == pytest.approx(np.array([[half, math.log(0.3)], [0.0, -20.0]]),
                                                    abs=1e-6)
    assert a.sampled_logprobs_array() == pytest.approx([math.log(0.05), 0.0], abs=1e-6)
    assert a.tail_logmass[0] == pytest.approx(math.log(0.2), abs=1e-6)
    assert a.tail_logmass[1] == -math.inf  # 1 + e^-20: within 1e-6 of all the mass
    assert b.token_ids == (7,) and b.topk_ids == ((7, 8),) and b.tail_logmass == (-math.inf,)
    assert a.text == TOKENIZER.decode([9, 4])


def test_token_scores_tail_and_single_k() -> None:
    rows = [[(3, math.log(0.5)), (1, math.log(0.25)), (2, math.log(0.125))],
            [(4, math.log(0.9)), (5, math.log(0.1))]]
    sc = token_scores(rows, [math.log(0.5), math.log(0.1)], k=5)
    assert sc.topk_ids.shape == (2, 2)  # the shortest row sets one k for the PT
    assert sc.tail_logmass[0] == pytest.approx(math.log(0.25))
    assert sc.tail_logmass[1] == -math.inf
    assert sc.token_logprobs.dtype == np.float32
    empty = token_scores([], [], k=5)  # a PT that ended at once: T = 0, k = 0
    assert empty.topk_ids.shape == (0, 0) and empty.tail_logmass.shape == (0,)
    with pytest.raises(TeacherResponseError, match="no usable top_logprobs"):
        token_scores([[], [(1, -1.0)]], [-1.0, -1.0], k=3)


def test_reverse_table_keeps_the_lowest_id_and_warns(caplog) -> None:
    class Pieces:  # three ids, two of which decode to the same text
        def __len__(self) -> int:
            return 3

        def batch_decode(self, seqs: list[list[int]]) -> list[str]:
            return ["\ufffd", "a", "\ufffd"]

    with caplog.at_level(logging.WARNING):
        table = reverse_table(Pieces())  # type: ignore[arg-type]
    assert table == {"\ufffd": 0, "a": 1}
    assert "1 token ids decode to a text another id has" in caplog.text


def test_unknown_token_text_is_a_clear_error() -> None:
    choice = {"index": 0, "text": "é", "logprobs": {"tokens": ["é"], "token_logprobs": [-0.1],
                                                   "top_logprobs": [{"é": -0.1}]}}
    teacher = make(lambda r: ok({"choices": [choice]}))
    with pytest.raises(TeacherResponseError, match="no token of the shared tokenizer"):
        teacher.label(ids_of(["a"]), LabelRequest(n=1, decoding="greedy"))


# ---------------------------------------------------------------------- end of sequence
EOS = TOKENIZER.eos_token_id
TOP = {5: math.log(0.5), 6: math.log(0.3), 7: math.log(0.1)}


def label_one(choice: dict[str, Any], max_new_tokens: int = 8, **kw: Any) -> Any:
    """The single greedy PT a teacher makes of a server answering ``choice``."""
    teacher = make(lambda r: ok({"choices": [choice]}), **kw)
    ((pt,),) = teacher.label(ids_of(["1+"]), LabelRequest(
        n=1, decoding="greedy", top_k_logprobs=3, max_new_tokens=max_new_tokens))
    return pt


def test_eos_is_appended_when_the_model_stopped_without_stop_strings() -> None:
    pt = label_one(vllm_choice(0, [5, 6], [TOP, {6: -0.1, 5: -3.0, 7: -4.0}], "stop"))
    assert pt.token_ids == (5, 6, EOS) and pt.k == 3
    assert pt.topk_ids[-1][0] == EOS and len(set(pt.topk_ids[-1])) == 3
    assert pt.topk_logprobs[-1] == (0.0, -math.inf, -math.inf)
    assert pt.tail_logmass[-1] == -math.inf and pt.sampled_logprobs[-1] == 0.0
    assert pt.topk_ids[:2] == ((5, 6, 7), (6, 5, 7))  # the server's rows are untouched
    assert pt.text == TOKENIZER.decode([5, 6])  # EOS adds no text
    empty = label_one(vllm_choice(0, [], [], "stop"))  # stopped at once: EOS alone
    assert empty.token_ids == (EOS,) and empty.k == 3 and empty.topk_ids[0][0] == EOS
    # vLLM names the cause: stop_reason None is EOS, even with stop strings configured.
    vllm = label_one(vllm_choice(0, [5], [TOP], "stop", stop_reason=None), stop=["\n"])
    assert vllm.token_ids == (5, EOS)


def test_eos_is_not_appended_after_length_or_at_a_stop_string() -> None:
    assert label_one(vllm_choice(0, [5, 6], [TOP, TOP], "length")).token_ids == (5, 6)
    # A stop string cut the text: stop strings configured and nothing says it was EOS,
    # or vLLM's stop_reason names the string.
    assert label_one(vllm_choice(0, [5], [TOP], "stop"), stop=["\n"]).token_ids == (5,)
    assert label_one(vllm_choice(0, [5], [TOP], "stop", stop_reason="\n"),
                     stop=["\n"]).token_ids == (5,)
    # The EOS would not fit max_new_tokens (a server that did not count it): left out.
    assert label_one(vllm_choice(0, [5, 6], [TOP, TOP], "stop"),
                     max_new_tokens=2).token_ids == (5, 6)


def test_eos_the_server_returned_is_used_as_is() -> None:
    top = {EOS: math.log(0.7), 5: math.log(0.2), 6: math.log(0.05)}
    pt = label_one(vllm_choice(0, [5, EOS], [TOP, top], "stop", stop_reason=None))
    assert pt.token_ids == (5, EOS) and pt.topk_ids[-1] == (EOS, 5, 6)
    assert pt.sampled_logprobs[-1] == pytest.approx(math.log(0.7))


def test_no_eos_without_an_eos_token_id() -> None:
    tokenizer = copy.deepcopy(TOKENIZER)
    tokenizer.eos_token = None
    choice = vllm_choice(0, [5], [TOP], "stop")
    teacher = OpenAITeacher(URL, NAME, tokenizer, sleep=lambda s: None, client=httpx.Client(
        transport=httpx.MockTransport(lambda r: ok({"choices": [choice]}))))
    ((pt,),) = teacher.label(ids_of(["1+"]), LabelRequest(n=1, decoding="greedy"))
    assert pt.token_ids == (5,)


def test_eos_after_the_serve_engine_stopped(engine, model) -> None:
    """The project's engine leaves EOS out of tokens and logprobs: the teacher appends it."""
    req = LabelRequest(n=1, include_greedy=False, top_k_logprobs=4, max_new_tokens=6, seed=3,
                       temperature=1.5)
    ((free,),) = make(engine_server(engine)).label(ids_of(["12+34="]), req)
    ids = list(free.token_ids)
    j = next(t for t in range(1, len(ids)) if ids[t] not in ids[:t])
    assert EOS not in ids[: j + 1]
    stopping = copy.deepcopy(model)  # the same model, ending where it drew ids[j]
    stopping.generation_config.eos_token_id = [ids[j]]
    teacher = make(engine_server(CompletionEngine(stopping, TOKENIZER, version=1,
                                                  served_model_name=NAME)))
    ((pt,),) = teacher.label(ids_of(["12+34="]), req)
    assert pt.token_ids == (*ids[:j], EOS)
    assert pt.topk_ids[:j] == free.topk_ids[:j] and pt.topk_logprobs[j][0] == 0.0


# ---------------------------------------------------------------------- HTTP behaviour
def test_retries_503_and_timeouts_with_backoff_and_retry_after() -> None:
    answers: list[Any] = [httpx.Response(503, headers={"Retry-After": "7"}, text="busy"),
                          httpx.Response(503, json={"error": {"message": "overloaded"}}),
                          httpx.ReadTimeout("slow"), ok({"choices": []})]

    def flaky(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    sleeps: list[float] = []
    teacher = make(flaky, sleep=sleeps.append, retry_backoff_s=0.5, max_retries=3)
    assert teacher._post({"model": NAME}) == {"choices": []}
    assert sleeps == [7.0, 1.0, 2.0]  # Retry-After, then 0.5 * 2**attempt
    always = make(lambda r: httpx.Response(502, text="bad gateway"), max_retries=2)
    with pytest.raises(TeacherHTTPError, match="gave up after 3 attempts") as info:
        always._post({"model": NAME})
    assert info.value.status == 502 and info.value.retryable
    down = make(lambda r: (_ for _ in ()).throw(httpx.ConnectError("refused")), max_retries=1)
    with pytest.raises(TeacherHTTPError, match="ConnectError"):
        down._post({})


def test_a_400_is_not_retried_and_carries_the_servers_message() -> None:
    calls: list[int] = []

    def strict(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(400, json={"error": {"message": "n=99 is outside 1..8"}})

    sleeps: list[float] = []
    teacher = make(strict, sleep=sleeps.append)
    with pytest.raises(TeacherHTTPError) as info:
        teacher.label(ids_of(["1+1="]), LabelRequest(n=99, include_greedy=False))
    assert info.value.status == 400 and not info.value.retryable
    assert "n=99 is outside 1..8" in str(info.value) and URL in str(info.value)
    assert calls == [1] and sleeps == []


def test_api_key_from_env_is_sent_and_never_logged(monkeypatch, caplog) -> None:
    secret = "sk-test-0123456789"
    monkeypatch.setenv("TEACHER_TEST_KEY", secret)
    seen: list[str | None] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        if len(seen) == 1:  # a server that quotes the key back in its error
            return httpx.Response(503, json={"error": {"message": f"key {secret} throttled"}})
        return httpx.Response(401, json={"error": {"message": f"bad key {secret}"}})

    teacher = make(server, api_key_env="TEACHER_TEST_KEY")
    with caplog.at_level(logging.DEBUG), pytest.raises(TeacherHTTPError) as info:
        teacher._post({"model": NAME})
    assert seen == [f"Bearer {secret}"] * 2
    assert secret not in str(info.value) and "$TEACHER_TEST_KEY" in str(info.value)
    assert caplog.records and all(secret not in r.getMessage() for r in caplog.records)
    assert secret not in repr(vars(info.value))
    make(lambda r: seen.append(r.headers.get("authorization")) or ok({}),  # type: ignore[func-returns-value]
         api_key_env="TEACHER_TEST_KEY", api_key="sk-given")._post({})
    assert seen[-1] == "Bearer sk-given"  # an explicit key wins over the environment
    monkeypatch.delenv("TEACHER_TEST_KEY")
    make(lambda r: seen.append(r.headers.get("authorization")) or ok({}),  # type: ignore[func-returns-value]
         api_key_env="TEACHER_TEST_KEY")._post({})
    assert seen[-1] is None


def test_concurrency_is_capped_at_max_concurrency(engine) -> None:
    inner = engine_server(engine)
    lock, state = threading.Lock(), {"now": 0, "max": 0}

    def slow(request: httpx.Request) -> httpx.Response:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.05)
        try:
            return inner(request)
        finally:
            with lock:
                state["now"] -= 1

    teacher = make(slow, batch_size=1, max_concurrency=3)
    out = teacher.label(ids_of(PROMPTS * 2), LabelRequest(n=1, include_greedy=False,
                                                          max_new_tokens=2))
    assert len(out) == 10 and state["max"] == 3


# ---------------------------------------------------------------------- scoring
def pairs() -> tuple[list[list[int]], list[list[int]]]:
    prompts = ids_of(["12+34=", "7*8=", "hi"])
    conts = [TOKENIZER("46\n", add_special_tokens=False).input_ids,
             TOKENIZER("65", add_special_tokens=False).input_ids,
             TOKENIZER(" there<eos>", add_special_tokens=False).input_ids]
    return prompts, conts


def assert_same_scores(got, want) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g.topk_ids, w.topk_ids)
        for key in ("topk_logprobs", "tail_logmass", "token_logprobs"):
            assert getattr(g, key) == pytest.approx(getattr(w, key), abs=1e-4), key


def test_score_via_echo_matches_the_local_teacher(engine, local) -> None:
    bodies: list[dict[str, Any]] = []
    teacher = make(engine_server(engine, bodies), batch_size=2)
    prompts, conts = pairs()
    assert_same_scores(teacher.score(prompts, conts, 5), local.score(prompts, conts, 5))
    echo = [b for b in bodies if "return_tokens_as_token_ids" not in b]
    assert sorted(b["prompt"] for b in echo) == [["12+34=46\n", "7*8=65"], ["hi there<eos>"]]
    assert all(b["echo"] and b["max_tokens"] == 0 and b["logprobs"] == 5 for b in echo)


def test_score_retries_echo_with_one_token_when_zero_is_refused(engine, local) -> None:
    def no_zero(body: dict[str, Any]) -> str | None:
        return "max_tokens must be at least 1" if body.get("max_tokens") == 0 else None

    bodies: list[dict[str, Any]] = []
    teacher = make(engine_server(engine, bodies, no_zero))
    prompts, conts = pairs()
    assert_same_scores(teacher.score(prompts, conts, 4), local.score(prompts, conts, 4))
    assert bodies[-1]["max_tokens"] == 1 and bodies[-1]["echo"]


def test_score_falls_back_to_vllm_prompt_logprobs(model, local) -> None:
    def vllm(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body.get("echo"):
            return httpx.Response(400, json={"object": "error", "message":
                                             "echo is not supported with prompt embeds"})
        choices = []
        for i, text in enumerate(body["prompt"]):
            ids = TOKENIZER(text).input_ids
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0], -1)
            entries: list[dict[str, Any] | None] = [None]
            for t in range(1, len(ids)):
                top = logp[t - 1].topk(body["prompt_logprobs"])
                step = {str(j): {"logprob": v, "rank": r + 1, "decoded_token": "?"}
                        for r, (v, j) in enumerate(zip(top.values.tolist(),
                                                       top.indices.tolist(), strict=True))}
                step[str(ids[t])] = {"logprob": float(logp[t - 1, ids[t]]), "rank": 0}
                entries.append(step)
            choices.append({"index": i, "text": "x", "prompt_logprobs": entries})
        return ok({"choices": choices})

    teacher = make(vllm)
    prompts, conts = pairs()
    assert_same_scores(teacher.score(prompts, conts, 3), local.score(prompts, conts, 3))
    assert teacher._score_via == "prompt_logprobs"


def test_a_server_that_cannot_score_says_which_config_avoids_scoring(engine) -> None:
    def old_server(body: dict[str, Any]) -> str | None:
        if body.get("echo"):
            return "echo=true is not supported by this server; send echo=false"
        return None

    teacher = make(engine_server(engine, refuse=old_server))
    prompts, conts = pairs()
    with pytest.raises(ScoringUnsupported) as info:
        teacher.score(prompts, conts, 3)
    for needle in ("learner.onpolicy_lambda=0", "learner.joint_teaching=false", "ood.score"):
        assert needle in str(info.value)
    calls: list[int] = []
    sampled = make(lambda r: calls.append(1) or ok({}),  # type: ignore[func-returns-value]
                   score_mode="sampled")
    with pytest.raises(ScoringUnsupported, match="labels only"):
        sampled.score(prompts, conts, 3)
    assert calls == []


def test_sequences_that_do_not_round_trip_are_refused() -> None:
    teacher = make(lambda r: ok({}))
    with pytest.raises(TokenizationMismatch, match="sequence 1 does not survive"):
        # The second prompt lacks the <bos> the tokenizer puts before any text.
        teacher.score([TOKENIZER("1+").input_ids, [5, 6]], [[7], [7]], 3)


# ---------------------------------------------------------------------- conversations (chat)
CONV = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1="}]


def chat_entry(token: str, lp: float, top: dict[str, float], raw: bytes | None = None
               ) -> dict[str, Any]:
    """One ``logprobs.content`` entry as OpenAI sends it (bytes: the token's UTF-8)."""
    def b(t: str, r: bytes | None = None) -> list[int]:
        return list(r if r is not None else t.encode())
    return {"token": token, "logprob": lp, "bytes": b(token, raw),
            "top_logprobs": [{"token": t, "logprob": v, "bytes": b(t)} for t, v in top.items()]}


def chat_choice(index: int, entries: list[dict[str, Any]], finish: str = "stop",
                **extra: Any) -> dict[str, Any]:
    return {"index": index, "finish_reason": finish, **extra,
            "message": {"role": "assistant", "content": "".join(e["token"] for e in entries)},
            "logprobs": {"content": entries}}


def chat_server(answer: Callable[[dict[str, Any]], list[dict[str, Any]]],
                bodies: list[tuple[str, dict[str, Any]]],
                refuse: tuple[str, ...] = ("return_tokens_as_token_ids",),
                text: Handler | None = None) -> Handler:
    """A hosted-API-like server: chat answers from ``answer(body)``; fields in ``refuse``
    are refused with a 400 naming them; completions go to ``text``."""
    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append((request.url.path, body))
        for field in refuse:
            if field in body:
                return httpx.Response(400, json={"error": {
                    "message": f"Unrecognized request argument supplied: {field}"}})
        if request.url.path.endswith("/chat/completions"):
            return ok({"object": "chat.completion", "choices": answer(body)})
        assert text is not None, "a text prompt reached a chat-only server"
        return text(request)

    return handle


def two_tokens(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Each choice says "2" then "\\n" and stops (the model ended its turn)."""
    top2 = {"2": math.log(0.7), "3": math.log(0.2), "4": math.log(0.05)}
    top_nl = {"\n": math.log(0.9), "2": math.log(0.05), "5": math.log(0.01)}
    return [chat_choice(i, [chat_entry("2", top2["2"], top2),
                            chat_entry("\n", top_nl["\n"], top_nl)])
            for i in range(body["n"])]


def completions(request: httpx.Request) -> httpx.Response:
    """Every completion is token 5 (length)."""
    body = json.loads(request.content)
    count = len(body["prompt"]) * body["n"]
    return ok({"choices": [{**vllm_choice(i, [5], [TOP]), "logprobs": {
        "tokens": ["5"], "token_logprobs": [TOP[5]], "top_logprobs": [{"5": TOP[5]}]}}
        for i in range(count)]})


def test_conversations_go_to_chat_completions_and_text_to_completions() -> None:
    bodies: list[tuple[str, dict[str, Any]]] = []
    teacher = make(chat_server(two_tokens, bodies, text=completions), max_top_k=30,
                   max_concurrency=1)
    req = LabelRequest(n=3, top_k_logprobs=25, max_new_tokens=6, seed=4, temperature=0.7,
                       top_p=0.95)
    out = teacher.label(ids_of(["12+34=", "1+1=", "7*8="]), req,
                        conversations=[None, CONV, None])
    chat = [b for path, b in bodies if path == "/v1/chat/completions"
            and "return_tokens_as_token_ids" not in b]
    text = [b for path, b in bodies if path == "/v1/completions"
            and "return_tokens_as_token_ids" not in b]
    assert [b["prompt"] for b in text] == [["12+34=", "7*8="]] * 2  # text prompts batched
    assert [b["logprobs"] for b in text] == [25, 25]
    greedy, sample = chat
    assert greedy == {"model": NAME, "messages": CONV, "n": 1, "logprobs": True,
                      "top_logprobs": 20, "max_completion_tokens": 6, "temperature": 0.0,
                      "top_p": 1.0, "seed": 4}  # top-k capped at 20, the hosted limit
    assert sample == {**greedy, "n": 3, "temperature": 0.7, "top_p": 0.95}
    assert [[pt.decoding for pt in pts] for pts in out] == [["greedy"] + ["sample"] * 3] * 3
    pt = out[1][0]
    # Token texts map back to the shared tokenizer's ids; the end of turn appends EOS.
    two, nl = TOKENIZER.convert_tokens_to_ids(["2", "\n"])
    assert pt.token_ids == (two, nl, EOS) and pt.k == 3
    assert pt.topk_ids[0] == tuple(TOKENIZER.convert_tokens_to_ids(["2", "3", "4"]))
    assert pt.topk_logprobs_array()[0] == pytest.approx(np.log([0.7, 0.2, 0.05]), abs=1e-6)
    assert pt.tail_logmass[0] == pytest.approx(math.log(0.05), abs=1e-6)
    assert pt.sampled_logprobs_array()[:2] == pytest.approx(np.log([0.7, 0.9]), abs=1e-6)
    assert pt.topk_ids[2][0] == EOS and pt.topk_logprobs[2][0] == 0.0
    assert pt.text == "2\n"


def test_chat_ends_length_and_stop_strings_without_eos() -> None:
    def answer(finish: str, **extra: Any) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
        return lambda body: [{**c, "finish_reason": finish, **extra} for c in two_tokens(body)]

    def label(handler: Handler, **kw: Any) -> Any:
        ((pt,),) = make(handler, **kw).label(ids_of(["1+1="]), LabelRequest(
            n=1, decoding="greedy", top_k_logprobs=3, max_new_tokens=8),
            conversations=[CONV])
        return pt

    bodies: list[tuple[str, dict[str, Any]]] = []
    assert label(chat_server(answer("length"), bodies)).token_ids[-1] != EOS
    assert label(chat_server(answer("stop"), bodies), stop=["\n\n"]).num_tokens == 2
    assert label(chat_server(answer("stop", stop_reason=None), bodies),
                 stop=["\n\n"]).token_ids[-1] == EOS  # vLLM: stop_reason None is EOS
    assert [b["stop"] for _, b in bodies if "stop" in b][-1] == ["\n\n"]


def test_chat_bytes_name_byte_level_pieces_exactly(tmp_path) -> None:
    """Byte-level BPE: a piece of a multi-byte character is U+FFFD as text; its ``bytes``
    name it exactly (the hosted API's answer shape)."""
    from online_distill.models.loader import load_tokenizer
    from online_distill.models.tiny_chat import build_tokenizer

    build_tokenizer().save_pretrained(tmp_path)
    tokenizer = load_tokenizer(str(tmp_path))
    ids = tokenizer("é ✓", add_special_tokens=False).input_ids
    # The tokenizer learned ASCII text only: é and ✓ are one piece per UTF-8 byte.
    by_piece = [bytes([b]) for b in "é ✓".encode()]
    assert len(by_piece) == len(ids) == 6
    assert tokenizer.decode(ids[:1]) == "\ufffd" == tokenizer.decode(ids[1:2])
    entries = [chat_entry("\ufffd" if len(r) == 1 and r[0] >= 0x80 else r.decode(), -0.1,
                          {}, raw=r) for r in by_piece]
    for e, r in zip(entries, by_piece, strict=True):  # the top-1 is the token itself
        e["top_logprobs"] = [{"token": e["token"], "logprob": -0.1, "bytes": list(r)}]
    handler = chat_server(lambda body: [chat_choice(0, entries, "length")], [])
    teacher = OpenAITeacher(URL, NAME, tokenizer, sleep=lambda s: None,
                            client=httpx.Client(transport=httpx.MockTransport(handler)))
    ((pt,),) = teacher.label([[1]], LabelRequest(n=1, decoding="greedy", top_k_logprobs=1,
                                                 max_new_tokens=8), conversations=[CONV])
    assert list(pt.token_ids) == ids and pt.text == "é ✓"


def test_chat_token_ids_from_vllm_and_the_max_tokens_fallback() -> None:
    bodies: list[tuple[str, dict[str, Any]]] = []

    def vllm(body: dict[str, Any]) -> list[dict[str, Any]]:
        top = [{"token": "token_id:7", "logprob": -0.2, "bytes": None},
               {"token": "token_id:8", "logprob": -2.0, "bytes": None}]
        entry = {"token": "token_id:7", "logprob": -0.2, "bytes": None, "top_logprobs": top}
        return [chat_choice(0, [entry], "stop", stop_reason=None)]

    teacher = make(chat_server(vllm, bodies, refuse=("max_completion_tokens",)))
    req = LabelRequest(n=1, decoding="greedy", top_k_logprobs=2, max_new_tokens=4)
    for _ in range(2):
        ((pt,),) = teacher.label(ids_of(["1+"]), req, conversations=[CONV])
        assert pt.token_ids == (7, EOS) and pt.topk_ids[0] == (7, 8)
    # The refusal is remembered: later requests send max_tokens at once.
    sent = [sorted(k for k in b if k.startswith("max_")) for _, b in bodies]
    assert sent == [["max_completion_tokens"], ["max_tokens"], ["max_tokens"]]
    assert all(b["return_tokens_as_token_ids"] for _, b in bodies)


def test_chat_without_logprobs_is_a_clear_error_and_uncapped_answers_are_cut(caplog) -> None:
    bare = {"index": 0, "finish_reason": "stop", "logprobs": None,
            "message": {"role": "assistant", "content": "2"}}
    teacher = make(chat_server(lambda body: [bare], []))
    req = LabelRequest(n=1, decoding="greedy", top_k_logprobs=3, max_new_tokens=1)
    with pytest.raises(TeacherResponseError, match="no logprobs.content.*top_logprobs"):
        teacher.label(ids_of(["1+"]), req, conversations=[CONV])
    empty = {**bare, "message": {"role": "assistant", "content": ""},
             "logprobs": {"content": None}}  # ended at once: EOS alone
    ((pt,),) = make(chat_server(lambda body: [empty], [])).label(
        ids_of(["1+"]), LabelRequest(n=1, decoding="greedy", top_k_logprobs=3,
                                     max_new_tokens=4), conversations=[CONV])
    assert pt.token_ids == (EOS,)
    with caplog.at_level(logging.WARNING):  # a server that ignored the budget: cut, no EOS
        ((cut,),) = make(chat_server(two_tokens, [])).label(
            ids_of(["1+"]), req, conversations=[CONV])
    assert cut.num_tokens == 1 and "ignores the field" in caplog.text
    with pytest.raises(ValueError, match="one entry per prompt"):
        teacher.label(ids_of(["1+", "2+"]), req, conversations=[CONV])
