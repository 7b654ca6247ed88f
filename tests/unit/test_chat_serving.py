"""Chat completions and streaming without Ray: the tiny ChatML student, the service, the
SSE chunks and the UTF-8-safe text deltas. Seconds."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from online_distill.messages import Turn
from online_distill.models.chat import render_chat
from online_distill.models.loader import load_model
from online_distill.models.tiny_chat import build_tiny_chat
from online_distill.serving.chat import parse_chat
from online_distill.serving.engine import CompletionEngine
from online_distill.serving.jobs import Job, Progress
from online_distill.serving.schemas import CompletionRequest
from online_distill.serving.service import CompletionService, Streamed, run_items
from online_distill.serving.stream import DeltaText, StreamHead, sse
from online_distill.serving.swap import ModelSlot
from online_distill.serving.validation import ApiError, ServingLimits
from online_distill.weights.store import LocalWeightsStore
from tests.unit.test_learner import TOKENIZER, tiny_model

NAME = "student"
LIMITS = ServingLimits()
HELLO = [{"role": "system", "content": "Be brief."},
         {"role": "user", "content": "What is 3 plus 4? Is it sunny, café €?"}]


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_chat(tmp_path_factory.mktemp("tiny-chat")).student


@pytest.fixture(scope="module")
def engine(chat_dir: Path) -> CompletionEngine:
    model, tok = load_model(chat_dir)
    return CompletionEngine(model, tok, version=1, served_model_name=NAME)


def make_service(root: Path, model: Any, tok: Any, seen: list[Any] | None = None
                 ) -> CompletionService:
    store = LocalWeightsStore(root)
    store.publish(model, tok, learner_step=1)
    store.promote(1)
    slot = ModelSlot(store, NAME)
    slot.refresh()
    return CompletionService(slot, LIMITS, NAME,
                             on_answer=None if seen is None else seen.append)


@pytest.fixture(scope="module")
def svc(engine: CompletionEngine, tmp_path_factory: pytest.TempPathFactory
        ) -> tuple[CompletionService, list[Any]]:
    seen: list[Any] = []
    return make_service(tmp_path_factory.mktemp("w"), engine.model, engine.tokenizer, seen), seen


def call(svc: CompletionService, route: str, body: dict[str, Any]) -> Any:
    """The answer, with a stream's events parsed: (headers, [chunk dicts], raw text)."""
    async def run_batch(job: Job) -> dict[str, Any]:
        out = (await asyncio.to_thread(run_items, svc.slot, [job]))[0]
        if isinstance(out, Exception):
            raise out
        return out

    async def go() -> Any:
        answer = await getattr(svc, route)(json.dumps(body).encode(), run_batch)
        if not isinstance(answer, Streamed):
            return answer
        raw = "".join([e async for e in answer.events])
        return answer.headers, parse_events(raw), raw

    return asyncio.run(go())


def parse_events(raw: str) -> list[Any]:
    assert raw.endswith("data: [DONE]\n\n")
    events = raw.split("\n\n")[:-1]
    assert all(e.startswith("data: ") for e in events)
    return [json.loads(e[6:]) for e in events[:-1]]


# ---------------------------------------------------------------------- text deltas
def test_deltas_hold_back_incomplete_utf8_of_byte_level_tokens(engine) -> None:
    tok = engine.tokenizer
    text = "café € 3 plus 4 ☕ naïve 日本"
    ids = tok(text, add_special_tokens=False).input_ids
    partial = [tok.decode(ids[:k]) for k in range(1, len(ids) + 1)]
    assert any(p.endswith("\ufffd") for p in partial)  # some tokens end inside a character
    delta = DeltaText()
    pieces = [delta.push(p) for p in partial] + [delta.push(partial[-1], final=True)]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_deltas_hold_back_a_possible_stop_string_then_release_it() -> None:
    delta = DeltaText(["STOP", "\n\n"])
    steps = ["ab", "ab S", "ab ST", "ab STA", "ab STAR\n", "ab STAR\nx"]
    pieces = [delta.push(t) for t in steps]
    assert pieces == ["ab", " ", "", "STA", "R", "\nx"]
    assert delta.push("ab STAR\nx y", final=True) == " y"


def test_final_push_releases_whatever_is_left() -> None:
    delta = DeltaText(["</s>"])
    assert delta.push("ok </") == "ok "
    assert delta.push("ok </", final=True) == "</"
    invalid = DeltaText()
    assert invalid.push("x\ufffd") == "x"
    assert invalid.push("x\ufffd", final=True) == "\ufffd"  # as the unstreamed text has it


# ---------------------------------------------------------------------- chunk shapes
def test_sse_lines_and_openai_chunk_shapes() -> None:
    assert sse({"a": "é"}) == 'data: {"a":"é"}\n\n'
    chat = StreamHead("chat", NAME, 3, include_usage=True)
    role = chat.chunk([chat.choice(0, "", None, role=True)])
    assert role["object"] == "chat.completion.chunk" and role["id"].startswith("chatcmpl-")
    assert role["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                "logprobs": None, "finish_reason": None}]
    assert role["usage"] is None and role["system_fingerprint"] == "v3"
    end = chat.chunk([chat.choice(1, None, "cancelled")])
    assert end["choices"][0]["delta"] == {} and end["choices"][0]["finish_reason"] == "length"
    text = StreamHead("completion", NAME, 3, include_usage=False)
    piece = text.chunk([text.choice(0, "hi", None)])
    assert piece["object"] == "text_completion" and "usage" not in piece
    assert piece["choices"] == [{"index": 0, "text": "hi", "logprobs": None,
                                 "finish_reason": None}]


# ---------------------------------------------------------------------- chat validation
@pytest.mark.parametrize(
    "changes,param,code",
    [
        ({"messages": []}, "messages", "invalid_messages"),
        ({"messages": "hi"}, "messages", "invalid_messages"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]},
         "messages[1].role", "invalid_role"),
        ({"messages": [{"role": "user", "content": ["part"]}]}, "messages[0].content",
         "invalid_content"),
        ({"messages": [{"role": "user"}]}, "messages[0].content", "invalid_content"),
        ({"messages": [5]}, "messages[0]", "invalid_message"),
        ({"messages": [{"role": "user", "content": "x" * 2049}]}, "messages", "prompt_too_long"),
        ({"max_tokens": 65}, "max_tokens", "max_tokens_out_of_range"),
        ({"max_completion_tokens": 0}, "max_completion_tokens", "max_tokens_out_of_range"),
        ({"max_tokens": 3, "max_completion_tokens": 4}, "max_completion_tokens",
         "conflicting_max_tokens"),
        ({"top_logprobs": 2}, "top_logprobs", "top_logprobs_without_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "top_logprobs_out_of_range"),
        ({"stream": True, "logprobs": True}, "logprobs", "stream_logprobs_unsupported"),
        ({"stream_options": {"include_usage": True}}, "stream_options",
         "stream_options_without_stream"),
        ({"n": 9}, "n", "n_out_of_range"),
        ({"temperature": 3}, "temperature", "temperature_out_of_range"),
        ({"tools": []}, "tools", "unknown_field"),
        ({"logit_bias": {"5": 1.0}}, "logit_bias", "unsupported_parameter"),
    ],
)
def test_bad_chat_requests_name_the_field(changes, param, code) -> None:
    body = {"model": NAME, "messages": HELLO, **changes}
    with pytest.raises(ApiError) as info:
        parse_chat(body, LIMITS, NAME)
    err = info.value
    assert (err.status, err.param, err.code) == (400, param, code), err
    assert err.message.endswith(tuple("abcdefghijklmnopqrstuvwxyz0123456789)]}'\"")), err


def test_chat_settings_map_to_the_engine_request() -> None:
    _, turns, req = parse_chat({"model": NAME, "messages": HELLO, "max_completion_tokens": 5,
                                "logprobs": True, "top_logprobs": 3, "n": 2, "seed": 1,
                                "stop": "\n"}, LIMITS, NAME)
    assert turns[1] == Turn(role="user", content=HELLO[1]["content"])
    assert (req.max_tokens, req.logprobs, req.n, req.seed, req.stop) == (5, 3, 2, 1, "\n")
    _, _, req = parse_chat({"model": NAME, "messages": HELLO, "logprobs": True}, LIMITS, NAME)
    assert req.logprobs == 0 and req.max_tokens == LIMITS.max_tokens_cap
    with pytest.raises(ApiError) as info:
        parse_chat({"model": "gpt-4o", "messages": HELLO}, LIMITS, NAME)
    assert info.value.status == 404


# ---------------------------------------------------------------------- the chat route
def test_chat_answers_in_openai_shape_with_logprobs(svc) -> None:
    service, _ = svc
    status, body, headers = call(service, "chat", {
        "model": NAME, "messages": HELLO, "temperature": 0, "max_tokens": 6, "logprobs": True,
        "top_logprobs": 2})
    assert status == 200 and headers["X-Model-Version"] == "1"
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length")
    content = choice["logprobs"]["content"]
    assert len(content) <= 6 and len(content[0]["top_logprobs"]) == 2
    first = content[0]
    assert first["logprob"] == max(t["logprob"] for t in first["top_logprobs"])
    assert first["bytes"] == list(first["token"].encode())
    assert body["usage"]["prompt_tokens"] > 10  # the rendered template, not the raw text


def test_chat_stops_at_the_end_of_turn_token_which_is_not_content(chat_dir) -> None:
    model, tok = load_model(chat_dir)
    model.generation_config.eos_token_id = None  # only the tokenizer's eos is left
    end = tok.eos_token_id
    assert tok.convert_ids_to_tokens(end) == "<|im_end|>"

    def prefer_end(_module: Any, _inputs: Any, logits: Any) -> Any:
        logits[..., end] += 1e4  # the model ends its turn at once
        return logits

    model.lm_head.register_forward_hook(prefer_end)
    engine = CompletionEngine(model, tok, version=1, served_model_name=NAME)
    _, _, req = parse_chat({"model": NAME, "messages": HELLO, "temperature": 0,
                            "max_tokens": 8}, LIMITS, NAME)
    rendered = render_chat(tok, HELLO)
    chat, text = engine.complete_many([Job(req, [rendered], chat=True),
                                       Job(req, [rendered], chat=False)])
    assert chat["choices"][0]["text"] == ""
    assert chat["choices"][0]["finish_reason"] == "stop"
    assert chat["usage"]["completion_tokens"] == 1
    # A text prompt is no chat turn: without an eos in the model's generation config the
    # end-of-turn token does not end it (and, special, it is never in the text).
    assert text["choices"][0]["finish_reason"] == "length"
    assert text["choices"][0]["text"] == ""
    assert text["usage"]["completion_tokens"] == 8


@pytest.mark.parametrize("n", [1, 2])
def test_streamed_chat_adds_up_to_the_unstreamed_answer(svc, n) -> None:
    service, _ = svc
    body = {"model": NAME, "messages": HELLO, "temperature": 0, "max_tokens": 12, "n": n}
    _, whole, _ = call(service, "chat", body)
    headers, chunks, _ = call(service, "chat", {**body, "stream": True,
                                                "stream_options": {"include_usage": True}})
    assert headers["X-Model-Version"] == "1"
    for i in range(n):
        mine = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["index"] == i]
        assert mine[0]["delta"] == {"role": "assistant", "content": ""}
        text = "".join(c["delta"].get("content", "") for c in mine)
        assert text == whole["choices"][i]["message"]["content"]
        assert mine[-1]["finish_reason"] == whole["choices"][i]["finish_reason"]
        assert all(c["finish_reason"] is None for c in mine[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}


def test_streamed_completion_adds_up_and_honours_stop_strings(svc) -> None:
    service, _ = svc
    base = {"model": NAME, "prompt": "What is 3 plus 4?", "temperature": 0, "max_tokens": 12}
    _, whole, _ = call(service, "complete", base)
    text = whole["choices"][0]["text"]
    for body in (base, {**base, "stop": [text[3:5] or "x"]}):
        _, plain, _ = call(service, "complete", body)
        _, chunks, raw = call(service, "complete", {**body, "stream": True})
        assert "usage" not in raw
        streamed = "".join(c["choices"][0]["text"] for c in chunks)
        assert streamed == plain["choices"][0]["text"]
        assert chunks[-1]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]


def test_capture_sees_the_conversation_of_a_chat_request(svc) -> None:
    service, seen = svc
    seen.clear()
    call(service, "chat", {"model": NAME, "messages": HELLO, "max_tokens": 2})
    call(service, "chat", {"model": NAME, "messages": HELLO, "max_tokens": 2, "stream": True})
    call(service, "complete", {"model": NAME, "prompt": "plain", "max_tokens": 2})
    turns = tuple(Turn(role=m["role"], content=m["content"]) for m in HELLO)
    assert seen == [[turns], [turns], ["plain"]]


def test_a_student_without_chat_template_refuses_chat_with_a_400(tmp_path) -> None:
    service = make_service(tmp_path, tiny_model(3), TOKENIZER)
    status, body, headers = call(service, "chat", {"model": NAME, "messages": HELLO})
    assert status == 400 and headers["X-Model-Version"] == "1"
    assert body["error"]["code"] == "no_chat_template"
    assert "chat template" in body["error"]["message"]
    assert body["error"]["param"] == "messages"


def test_a_conversation_over_the_context_is_a_400_naming_messages(chat_dir, tmp_path) -> None:
    model, tok = load_model(chat_dir)
    service = make_service(tmp_path, model, tok)
    long = [{"role": "user", "content": "sunny tea " * 200}]
    status, body, _ = call(service, "chat", {"model": NAME, "messages": long, "max_tokens": 4})
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"
    assert body["error"]["param"] == "messages" and "conversation" in body["error"]["message"]


# ---------------------------------------------------------------------- cancellation
def test_a_cancelled_job_stops_at_the_next_step(engine) -> None:
    heard: list[Progress] = []
    job = Job(CompletionRequest(model=NAME, prompt="x", max_tokens=60, temperature=0), ["x"])

    def listen(progress: Progress) -> None:
        heard.append(progress)
        if len(heard) == 3:
            job.cancel.set()

    job.listener = listen
    other = (CompletionRequest(model=NAME, prompt="y", max_tokens=5, temperature=0), ["y"])
    _, rest = engine.complete_many([job, other])
    assert heard[-1].rows[0].finish == "cancelled" and heard[-1].rows[0].generated == 2
    assert rest["usage"]["completion_tokens"] <= 5  # the other request is unaffected
    assert len(heard) <= 4


def test_a_stream_abandoned_by_its_client_cancels_its_job(svc) -> None:
    service, _ = svc
    job_seen: list[Job] = []
    started = threading.Event()

    async def run_batch(job: Job) -> dict[str, Any]:
        job_seen.append(job)
        started.set()
        return (await asyncio.to_thread(run_items, service.slot, [job]))[0]  # type: ignore[return-value]

    async def go() -> None:
        body = {"model": NAME, "prompt": "x", "max_tokens": 60, "temperature": 0,
                "stream": True}
        answer = await service.complete(json.dumps(body).encode(), run_batch)
        assert isinstance(answer, Streamed)
        await answer.events.__anext__()
        await answer.close()  # what the server does when the client goes away

    asyncio.run(go())
    assert started.is_set() and job_seen[0].cancel.is_set()
