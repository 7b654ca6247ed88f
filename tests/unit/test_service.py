"""The HTTP-facing service without Ray: every answer has a status, a body and the version."""

from __future__ import annotations

import asyncio
import json

import pytest

from online_distill.serving.service import CompletionService, run_items
from online_distill.serving.swap import ModelSlot
from online_distill.serving.validation import ServingLimits
from online_distill.weights.store import LocalWeightsStore
from tests.unit.test_learner import TOKENIZER, tiny_model

NAME = "student"


def service(tmp_path, promote: bool = True) -> CompletionService:
    store = LocalWeightsStore(tmp_path)
    store.publish(tiny_model(3), TOKENIZER, learner_step=1)
    if promote:
        store.promote(1)
    slot = ModelSlot(store, NAME)
    slot.refresh()
    return CompletionService(slot, ServingLimits(max_body_bytes=200), NAME)


def call(svc: CompletionService, body: bytes):
    async def run_batch(item):
        out = run_items(svc.slot, [item])[0]
        if isinstance(out, Exception):
            raise out
        return out

    return asyncio.run(svc.complete(body, run_batch))


def test_answers_carry_the_version_and_errors_say_what_to_fix(tmp_path) -> None:
    svc = service(tmp_path)
    ok = json.dumps({"model": NAME, "prompt": "ab", "max_tokens": 3, "temperature": 0})
    status, body, headers = call(svc, ok.encode())
    assert status == 200 and body["version"] == 1 and headers["X-Model-Version"] == "1"
    assert body["usage"]["completion_tokens"] <= 3
    status, body, headers = call(svc, b"x" * 201)
    assert status == 413 and "200 bytes" in body["error"]["message"]
    assert headers["X-Model-Version"] == "1"
    status, body, _ = call(svc, b"[1, 2]")
    assert status == 400 and body["error"]["code"] == "invalid_body"
    status, body, _ = call(svc, b'{"model": "student", "prompt": "a", "max_tokens": "many"}')
    assert status == 400 and body["error"]["param"] == "max_tokens"
    assert svc.models()[1]["data"][0]["id"] == NAME and svc.health()[0] == 200


def test_nothing_promoted_is_a_clear_503(tmp_path) -> None:
    svc = service(tmp_path, promote=False)
    status, body, headers = call(svc, b'{"model": "student", "prompt": "a"}')
    assert status == 503 and "no student version has been promoted" in body["error"]["message"]
    assert headers["X-Model-Version"] == "none" and svc.health()[0] == 503


def test_echo_with_zero_max_tokens_scores_the_prompt(tmp_path) -> None:
    svc = service(tmp_path)
    body = {"model": NAME, "prompt": "ab", "max_tokens": 0, "echo": True, "logprobs": 1}
    status, out, _ = call(svc, json.dumps(body).encode())
    assert status == 200 and out["choices"][0]["text"] == "ab"
    assert out["choices"][0]["logprobs"]["token_logprobs"][0] is None
    assert len(out["choices"][0]["logprobs"]["tokens"]) == 3  # <bos>, "a", "b"
    status, out, _ = call(svc, json.dumps({**body, "echo": False}).encode())
    assert status == 400 and out["error"]["param"] == "max_tokens"


def test_an_oversize_body_is_refused_before_it_is_read_whole() -> None:
    from online_distill.serving.validation import ApiError, read_bounded

    read: list[int] = []

    async def chunks(n: int, size: int):
        for _ in range(n):
            read.append(size)
            yield b"x" * size

    def run(coro):
        return asyncio.run(coro)

    # Declared too large: refused before a byte is read.
    with pytest.raises(ApiError) as err:
        run(read_bounded(chunks(100, 1000), "100000", 4096))
    assert err.value.status == 413 and "100000 bytes" in str(err.value) and read == []
    # Chunked (no Content-Length): refused once past the limit, the rest never read.
    with pytest.raises(ApiError) as err:
        run(read_bounded(chunks(100, 1000), None, 4096))
    assert err.value.status == 413 and "over 4096 bytes" in str(err.value)
    assert sum(read) == 5000
    # Within the limit: the whole body.
    assert run(read_bounded(chunks(4, 1000), "4000", 4096)) == b"x" * 4000
