"""Schemathesis against the real Serve app's OpenAPI document (issue 10: bad input at scale).

Ray Serve runs the real app (actors/serve.py) over a weights store holding the tiny chat
student (a random Llama with a ChatML template: :mod:`online_distill.models.tiny_chat`),
promoted, as in test_serving.py. Schemathesis loads ``/openapi.json`` and generates requests
for every operation the document lists, valid ones (half of those for the completions and
chat completions operations name the served model and stay in the server's ranges, so that
they reach the model; those are not streamed: streams are test_chat_stream.py's) and
invalid ones (wrong types, missing and unknown fields, extreme numbers, odd
strings, bodies that are not JSON), and sends each one over HTTP. Checks on every response:

- ``not_a_server_error``: never a 5xx;
- every 4xx carries OpenAI's error body, ``{"error": {"message", "type", ...}}``, with a
  message that is not empty;
- schemathesis' conformance checks: the status code, content type and body are the ones
  the document declares, and schema-violating requests are refused with a 4xx.

The admin operations (``/admin/*``) need a bearer token: the replicas get one through
``serve.admin_token_env``; the generated requests carry no Authorization header or a
generated one (any scheme, any token but the right one), so each must get 401 or 403 and
change nothing. ``test_zz_schemathesis_summary`` prints what ran.
"""

from __future__ import annotations

import math
import os
import secrets
import time
from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.test_serving import NAME as MODEL
from tests.integration.test_serving import free_port

pytestmark = pytest.mark.integration
TOKEN_ENV = "OD_SCHEMATHESIS_ADMIN_TOKEN"
EXAMPLES = 300
"""Hypothesis examples per operation and mode (operations without input have one
example; the admin ones vary the Authorization header)."""
CALLS: Counter[str] = Counter()
CHECKED: Counter[str] = Counter()
"""Responses the custom checks looked at (so a check that never runs cannot pass)."""
STATUSES: Counter[str] = Counter()


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The real Serve app on a free port, serving the tiny chat student as version 1."""
    import ray
    from online_distill.actors.serve import start_serving, stop_serving

    from online_distill.config import load_config
    from online_distill.models.loader import load_model
    from online_distill.models.tiny_chat import build_tiny_chat
    from online_distill.weights.store import store_for

    root = tmp_path_factory.mktemp("schemathesis")
    cfg = load_config(None, [f"gate.weights_dir={root / 'weights'}", f"serve.port={free_port()}",
                             "serve.num_replicas=1", "serve.num_cpus=0.5",
                             "serve.max_tokens_cap=16", f"serve.admin_token_env={TOKEN_ENV}",
                             "metrics.enabled=false"])
    store = store_for(cfg)
    model, tok = load_model(build_tiny_chat(root / "tiny-chat").student)
    store.publish(model, tok, learner_step=0)
    store.promote(1)
    # The replicas inherit the environment: admin requests are enabled, with a token no
    # generated request knows.
    os.environ[TOKEN_ENV] = secrets.token_hex(16)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        url = start_serving(cfg)
        yield url, store
    finally:
        stop_serving()
        ray.shutdown()
        os.environ.pop(TOKEN_ENV, None)


@schemathesis.check
def openai_error_body(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 4xx answer is OpenAI's error shape with a message saying what is wrong."""
    if not 400 <= response.status_code < 500:
        return None
    body = response.json()
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict), f"a {response.status_code} without an 'error' object: {body}"
    message = error.get("message")
    assert isinstance(message, str) and message.strip(), f"no message: {body}"
    assert isinstance(error.get("type"), str) and error["type"], f"no type: {body}"
    CHECKED["4xx with an OpenAI error body"] += 1
    return True


@schemathesis.check
def admin_needs_the_token(ctx: Any, response: Any, case: Any) -> bool | None:
    """Without the token an admin operation answers 401 (no credentials) or 403 (wrong)."""
    if not case.operation.path.startswith("/admin"):
        return None
    assert response.status_code in (401, 403), (
        f"{case.operation.label} without the token answered {response.status_code}")
    CHECKED["admin refused without the token"] += 1
    return True


CHECKS = [not_a_server_error, openai_error_body, admin_needs_the_token,
          status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]


def has_input(op: Any) -> bool:
    return any(len(getattr(op, part)) for part in ("body", "query", "headers",
                                                   "path_parameters", "cookies"))


NEUTRAL_ONLY = ("stream", "stream_options", "presence_penalty", "frequency_penalty",
                "best_of", "logit_bias", "suffix")
"""OpenAI fields the server accepts at their neutral values only (400 otherwise), and the
stream switch (a stream is not the JSON body the conformance checks read)."""
GENERATION = ("/v1/completions", "/v1/chat/completions")


def served_model(case: Any, in_range: bool) -> Any:
    """For half the cases: the served model's name, the neutral-only fields left out and
    the numbers folded into the server's ranges, so that the request reaches the model
    (prompt, stop, seed and echo stay as generated)."""
    body = case.body
    if not in_range or not isinstance(body, dict):
        return case
    body["model"] = MODEL
    for key in NEUTRAL_ONLY:
        body.pop(key, None)
    fold = {"max_tokens": lambda v: abs(v) % 9 or 1, "n": lambda v: 1 + abs(v) % 3,
            "max_completion_tokens": lambda v: abs(v) % 9 or 1,
            "logprobs": lambda v: abs(v) % 6, "top_logprobs": lambda v: abs(v) % 6,
            "temperature": lambda v: abs(v) % 2 if math.isfinite(v) else 1.0,
            "top_p": lambda v: 1.0 - abs(v) % 1 if math.isfinite(v) else 1.0}
    for key, f in fold.items():
        value = body.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            body[key] = f(value)
    return case


latin1 = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                 max_size=80)
authorization = st.none() | (latin1 | st.builds(
    lambda scheme, token: f"{scheme} {token}",
    st.sampled_from(["Bearer", "bearer", "Basic", "Token", "Bearer  "]), latin1)).map(str.strip)
"""Authorization headers an admin request may carry without knowing the token (header
values are Latin-1 without surrounding blanks: the client refuses others)."""


def operations(url: str) -> list[Any]:
    """Every operation of the app's OpenAPI document."""
    api = schemathesis.openapi.from_url(f"{url}/openapi.json", wait_for_schema=60)
    return [result.ok() for result in api.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_survives_generated_requests(app_url: Any, mode: GenerationMode
                                                     ) -> None:
    """Each operation, with requests that fit its schema (positive) and that break it
    (negative); the failures of all operations are reported together."""
    url, store = app_url
    failures: dict[str, BaseException] = {}
    for op in operations(url):
        if mode is GenerationMode.NEGATIVE and not has_input(op):
            continue  # nothing to break: no body, no parameters
        cases = op.as_strategy(generation_mode=mode)
        if mode is GenerationMode.POSITIVE and op.path in GENERATION:
            # Half the valid requests name the served model, so that they reach the model
            # (a random name gets the 404 at once).
            cases = st.tuples(cases, st.booleans()).map(lambda c: served_model(*c))

        admin = op.path.startswith("/admin")

        @given(case=cases, auth=authorization if admin else st.none())
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: Any, auth: str | None) -> None:
            headers = None if auth is None else {"Authorization": auth}
            response = case.call(headers=headers, timeout=120)
            CALLS[f"{case.operation.label} ({mode.value})"] += 1
            code = ""
            if 400 <= response.status_code < 500:
                error = response.json().get("error") if response.content else None
                code = f" {error.get('code')}" if isinstance(error, dict) else ""
            STATUSES[f"{case.operation.label} {response.status_code}{code}"] += 1
            case.validate_response(response, checks=CHECKS, headers=headers)
            assert store.promoted() == 1, "an unauthorised admin request changed the version"

        try:
            run()
        except Exception as exc:  # noqa: BLE001 - reported below, with the other operations
            failures[op.label] = exc
    assert not failures, "\n\n".join(f"{label}: {exc}" for label, exc in failures.items())


@pytest.mark.parametrize("method,path", [("GET", "/v1/completions"), ("POST", "/v1/models"),
                                         ("GET", "/v1/nothing-here")])
def test_unlisted_routes_and_methods_answer_in_the_openai_error_shape(
        app_url: Any, method: str, path: str) -> None:
    import httpx

    url, _ = app_url
    r = httpx.request(method, f"{url}{path}", timeout=30)
    assert r.status_code in (404, 405), r.text
    assert isinstance(r.json().get("error"), dict), r.text


def test_zz_schemathesis_summary(app_url: Any) -> None:
    """What ran: requests per operation and the status codes they got; the server is up."""
    import httpx

    url, _ = app_url
    print(f"\nschemathesis {schemathesis.__version__}: {sum(CALLS.values())} requests")
    for label, n in sorted(CALLS.items()):
        print(f"  {label}: {n} requests")
    for key, n in sorted(STATUSES.items()):
        print(f"    {key}: {n}")
    start = time.time()
    health = httpx.get(f"{url}/healthz", timeout=30)
    assert health.status_code == 200, health.text
    assert not any(key.split(" ")[2].startswith("5") for key in STATUSES)
    four = sum(n for key, n in STATUSES.items() if key.split(" ")[2].startswith("4"))
    assert CHECKED["4xx with an OpenAI error body"] == four > 0, (CHECKED, four)
    print(f"  checked: {dict(CHECKED)}")
    print(f"  /healthz after the run: {health.status_code} in {time.time() - start:.2f}s")
