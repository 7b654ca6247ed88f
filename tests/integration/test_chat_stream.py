"""Chat completions and streaming on the real Ray Serve app, with the official openai client.

The served student is the tiny random Llama with a ChatML template
(:func:`online_distill.models.tiny_chat.build_tiny_chat`), published and promoted as in
test_serving.py. Streamed deltas add up to the unstreamed answer at temperature 0 on both
routes, with the usage in the last chunk; a client that leaves mid-stream does not hold up
the next request; the demo model (no chat template) answers the chat route with a 400.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
import ray

from online_distill.config import load_config
from online_distill.models.loader import load_model
from online_distill.models.tiny_chat import build_tiny_chat
from online_distill.tasks.models import DEMO_TEACHER_DIR
from online_distill.weights.store import store_for
from tests.integration.test_serving import NAME, free_port

pytestmark = pytest.mark.integration
DEADLINE_S = 60.0
"""Bounds on conditions that hold in a second or two; only reached when broken."""
MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is 12 plus 30? Also, is it rainy today?"}]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    from online_distill.actors.serve import start_serving, stop_serving

    root = tmp_path_factory.mktemp("chat-serve")
    paths = build_tiny_chat(root / "tiny")
    cfg = load_config(None, [f"gate.weights_dir={root / 'weights'}", f"serve.port={free_port()}",
                             "serve.num_replicas=1", "serve.num_cpus=0.5",
                             "serve.max_tokens_cap=200", "serve.swap_delay_s=0",
                             "serve.poll_interval_s=0.1", "metrics.enabled=false"])
    store = store_for(cfg)
    student, tok = load_model(paths.student)
    store.publish(student, tok, learner_step=0)
    store.promote(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield start_serving(cfg), store
    finally:
        stop_serving()
        ray.shutdown()


def client(url: str):
    from openai import OpenAI

    return OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=DEADLINE_S)


def test_streamed_chat_adds_up_to_the_unstreamed_answer(served) -> None:
    url, _ = served
    openai = client(url)
    whole = openai.chat.completions.create(model=NAME, messages=MESSAGES,  # type: ignore[arg-type]
                                           temperature=0, max_tokens=12)
    assert whole.object == "chat.completion" and whole.choices[0].message.role == "assistant"
    chunks = list(openai.chat.completions.create(
        model=NAME, messages=MESSAGES, temperature=0, max_tokens=12,  # type: ignore[arg-type]
        stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == whole.choices[0].finish_reason and set(finish[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    # With logprobs, unstreamed: one entry per generated token, each with its alternatives.
    lp = openai.chat.completions.create(model=NAME, messages=MESSAGES,  # type: ignore[arg-type]
                                        temperature=0, max_completion_tokens=5, logprobs=True,
                                        top_logprobs=3).choices[0].logprobs
    assert lp is not None and lp.content and len(lp.content[0].top_logprobs) == 3


def test_streamed_completion_adds_up_to_the_unstreamed_answer(served) -> None:
    url, _ = served
    openai = client(url)
    plain = openai.completions.create(model=NAME, prompt="Is it sunny today?", temperature=0,
                                      max_tokens=12, n=2)
    chunks = list(openai.completions.create(
        model=NAME, prompt="Is it sunny today?", temperature=0, max_tokens=12, n=2,
        stream=True, stream_options={"include_usage": True}))
    for i in range(2):
        text = "".join(c.choices[0].text for c in chunks
                       if c.choices and c.choices[0].index == i)
        assert text == plain.choices[i].text
    assert chunks[-1].usage == plain.usage


def test_stream_headers_and_events_on_the_wire(served) -> None:
    url, _ = served
    body = {"model": NAME, "messages": MESSAGES, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body,
                      timeout=DEADLINE_S) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-model-version"] == "1"
        raw = r.read().decode()
    events = raw.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["version"] for c in chunks} == {1}


def test_a_client_leaving_mid_stream_does_not_hold_up_the_next(served) -> None:
    url, _ = served
    body = {"model": NAME, "messages": MESSAGES, "max_tokens": 200, "n": 8, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body,
                      timeout=DEADLINE_S) as r:
        got: list[str] = []
        for line in r.iter_lines():
            if line.startswith("data: "):
                got.append(line)
            if len(got) == 2:
                break
    assert len(got) == 2  # left after two chunks: the stream is closed
    done: dict[str, object] = {}
    start = time.monotonic()
    with httpx.Client(timeout=DEADLINE_S) as http:
        r = http.post(f"{url}/v1/chat/completions", json={
            "model": NAME, "messages": MESSAGES, "max_tokens": 3})
        done["status"] = r.status_code
    assert done["status"] == 200 and time.monotonic() - start < DEADLINE_S


def test_bad_chat_requests_get_openai_errors(served) -> None:
    url, _ = served
    with httpx.Client(base_url=url, timeout=DEADLINE_S) as http:
        bad = [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]
        r = http.post("/v1/chat/completions", json={"model": NAME, "messages": bad})
        assert r.status_code == 400 and r.json()["error"]["param"] == "messages[1].role"
        assert r.headers["x-model-version"] == "1"
        r = http.post("/v1/chat/completions", json={"model": NAME, "messages": []})
        assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
        r = http.post("/v1/chat/completions", json={"model": NAME, "messages": [
            {"role": "user", "content": "rain " * 300}], "max_tokens": 100})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "context_length_exceeded"
        doc = http.get("/openapi.json").json()
        assert "/v1/chat/completions" in doc["paths"]


def test_zz_a_student_without_chat_template_refuses_the_chat_route(served) -> None:
    """Last: promotes the demo model (no chat template) over the chat student."""
    url, store = served
    model, tok = load_model(DEMO_TEACHER_DIR)
    version = store.publish(model, tok, learner_step=1).version
    store.promote(version)
    deadline = time.monotonic() + DEADLINE_S
    with httpx.Client(base_url=url, timeout=DEADLINE_S) as http:
        while http.get("/healthz").json()["version"] != version:
            assert time.monotonic() < deadline, f"version {version} not served in time"
            time.sleep(0.2)
        r = http.post("/v1/chat/completions", json={"model": NAME, "messages": MESSAGES})
        assert r.status_code == 400 and r.headers["x-model-version"] == str(version)
        error = r.json()["error"]
        assert error["code"] == "no_chat_template" and "chat template" in error["message"]
        r = http.post("/v1/completions", json={"model": NAME, "prompt": "12+34=",
                                               "max_tokens": 4, "temperature": 0,
                                               "stream": True})
        assert r.status_code == 200 and "data: [DONE]" in r.text
