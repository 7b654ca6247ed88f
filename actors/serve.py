"""The Ray Serve application: the promoted student behind an OpenAI-compatible API.

Routes (FastAPI, so ``/openapi.json`` and ``/docs`` are served too):
``POST /v1/completions``, ``POST /v1/chat/completions`` (both streamed as server-sent events
with ``"stream": true``), ``GET /v1/models``, ``GET /healthz``, and the admin routes
``POST /admin/promote`` ``{"version": V}``, ``POST /admin/rollback`` ``{"version": V|null}``
and ``GET /admin/versions``, which all need ``Authorization: Bearer <token>`` with the token
in the environment variable named by ``serve.admin_token_env`` (401 without it, 403 for a
wrong one or while the variable is unset; :mod:`online_distill.serving.admin`). Any replica
answers them: the weights store is a shared directory. Each replica watches the
weights store's PROMOTED pointer itself (a Serve handle call reaches one replica, so a
broadcast would miss the others) and hot-swaps in place (:mod:`online_distill.serving.swap`).
Concurrent requests, streamed or not, chat or not, are decoded together by ``@serve.batch``;
a stream hears every decode step, and a client that disconnects cancels its rows at the
next step (Serve cancels the request; the stream's ``finally`` sets the job's flag). Each
replica counts its
requests by status code and their latency and pushes its metrics to the metrics hub as
``serve-<replica id>``. (The routes count them; an HTTP middleware on the ingress app saw no
requests in our tests. Requests to unknown routes are not counted.)

No ``from __future__ import annotations`` here: Serve's ingress re-creates the route
methods, and FastAPI must see the real ``Request`` class in their signatures.
"""

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from online_distill.actors.metrics import start_pusher
from prometheus_client import CollectorRegistry
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from online_distill.config import Config, config_from_dict
from online_distill.metrics import ServeMetrics
from online_distill.serving.admin import ADMIN_MAX_BODY_BYTES, AdminService
from online_distill.serving.capture import PromptCapture
from online_distill.serving.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    ErrorBody,
    ModelList,
)
from online_distill.serving.service import Answer, CompletionService, Item, Streamed, run_items
from online_distill.serving.swap import ModelSlot, Watcher
from online_distill.serving.validation import ApiError, ServingLimits, read_bounded
from online_distill.weights.store import store_for

APP_NAME = "online-distill"
app = FastAPI(
    title="online-distill student",
    description="The always-fresh distilled student, served with an OpenAI-compatible "
                "subset of the completions API. Every response names the served version "
                "(the `version` field and the `X-Model-Version` header).",
)


@app.exception_handler(StarletteHTTPException)
def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Unknown routes (404) and wrong methods (405) answer in OpenAI's error shape too."""
    what = {404: f"no route {request.url.path}; the API has /v1/completions, "
                 "/v1/chat/completions, /v1/models, /healthz and /admin/*",
            405: f"{request.method} is not allowed on {request.url.path}"}.get(
        exc.status_code, str(exc.detail))
    err = ApiError(exc.status_code, what, code="not_found" if exc.status_code == 404
                   else "method_not_allowed" if exc.status_code == 405 else "http_error")
    return JSONResponse(err.body(), status_code=exc.status_code,
                        headers=dict(exc.headers or {}))


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in ((400, "invalid request (the message says what to change)"),
                       (404, "unknown model name"), (413, "request body too large"),
                       (503, "no student version promoted yet"))
}
_ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in ((400, "invalid request (the message says what to change)"),
                       (401, "no 'Authorization: Bearer <token>' header"),
                       (403, "wrong token, or admin disabled (serve.admin_token_env unset)"),
                       (404, "version not kept"), (409, "nothing to roll back to"),
                       (413, "request body too large"))
}
def _inlined(model: type) -> dict[str, Any]:
    """A request model's JSON schema with its ``$defs`` inlined: the document places it
    under a path, where ``#/$defs/...`` references would not resolve."""
    schema = model.model_json_schema()  # type: ignore[attr-defined]
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        return [inline(v) for v in node] if isinstance(node, list) else node

    return inline(schema)  # type: ignore[no-any-return]


_REQUEST_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": _inlined(CompletionRequest)}}}}
_CHAT_REQUEST_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": _inlined(ChatCompletionRequest)}}}}


def _ok(model: type, what: str) -> dict[int | str, dict[str, Any]]:
    """The 200 of a generation route: JSON, or server-sent events with ``stream: true``."""
    return {200: {"model": model, "description": f"the {what} (JSON), or with "
                  "stream=true its chunks as server-sent events",
                  "content": {"text/event-stream": {"schema": {"type": "string"}}}},
            **_ERRORS}


def limits_of(cfg: Config) -> ServingLimits:
    s = cfg.serve
    return ServingLimits(max_tokens_cap=s.max_tokens_cap, max_prompt_chars=s.max_prompt_chars,
                         max_body_bytes=s.max_body_bytes)


def _admin_body(request: Request) -> Callable[[], Awaitable[bytes]]:
    """Reads an admin request's body, refusing one over the admin limit (413) unread."""
    return lambda: read_bounded(request.stream(), request.headers.get("content-length"),
                                ADMIN_MAX_BODY_BYTES)


def _json(answer: tuple[int, dict[str, Any], dict[str, str]]) -> JSONResponse:
    status, body, headers = answer
    return JSONResponse(body, status_code=status, headers=headers)


@serve.deployment(name="student")
@serve.ingress(app)
class StudentServer:
    def __init__(self, cfg: dict[str, Any], bootstrap: str = "") -> None:
        """``bootstrap``: the broker the loop runs on (``serve.capture`` produces there)."""
        self.cfg = config_from_dict(cfg)
        s = self.cfg.serve
        torch.set_num_threads(1)
        store = store_for(self.cfg)
        self.slot = ModelSlot(store, s.served_model_name, device=s.device)
        self.slot.refresh()
        self.watcher = Watcher(self.slot.refresh, s.poll_interval_s)
        self.capture = self._capture(bootstrap) if s.capture > 0 else None
        self.service = CompletionService(self.slot, limits_of(self.cfg), s.served_model_name,
                                         on_answer=self.capture.offer if self.capture else None)
        self.admin = AdminService(store, s.admin_token_env)
        # Which replica answered (X-Replica): benchmarks time each replica's swap with it.
        self.service.replica = serve.get_replica_context().replica_id.unique_id
        registry = CollectorRegistry()
        self.metrics = ServeMetrics(registry)
        self.pusher = start_pusher(self.cfg, f"serve-{self.service.replica[:8]}", registry,
                                   lambda: self.metrics.update(self.slot.version,
                                                               self.slot.stats, self.capture))
        self._batched.set_max_batch_size(s.max_batch_size)
        self._batched.set_batch_wait_timeout_s(s.batch_wait_timeout_s)

    def _capture(self, bootstrap: str) -> PromptCapture:
        """Answered prompts back to the prompts topic, in the background (serve.capture)."""
        from online_distill.streams import KafkaSink  # kafka-python: only when capturing

        k, s = self.cfg.kafka, self.cfg.serve
        address = bootstrap or k.bootstrap_servers
        return PromptCapture(lambda: KafkaSink(k, address, "serve-capture"), k.prompts_topic,
                             s.capture, s.capture_queue)

    def capture_stats(self) -> dict[str, Any]:
        """Served prompts produced and dropped by reason (None when capture is off)."""
        if self.capture is None:
            return {"captured": None, "dropped": {}}
        return {"captured": self.capture.captured, "dropped": dict(self.capture.dropped)}

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)  # both set from serve.* below
    async def _batched(self, items: list[Item]) -> list[dict[str, Any] | ApiError]:
        import asyncio

        return await asyncio.to_thread(run_items, self.slot, items)

    async def _run(self, item: Item) -> dict[str, Any]:
        result = await self._batched(item)
        if isinstance(result, ApiError):
            raise result
        return result

    @app.post("/v1/completions", response_model=Completion,
              responses=_ok(Completion, "completion"), openapi_extra=_REQUEST_BODY)
    async def completions(self, request: Request) -> Any:
        """Complete one prompt or a list of prompts (OpenAI's completions API subset)."""
        start = time.perf_counter()
        return self._generated(await self.service.complete(self._body(request), self._run),
                               start)

    @app.post("/v1/chat/completions", response_model=ChatCompletion,
              responses=_ok(ChatCompletion, "chat completion"), openapi_extra=_CHAT_REQUEST_BODY)
    async def chat_completions(self, request: Request) -> Any:
        """The assistant's next turn of a conversation, rendered with the student's chat
        template (OpenAI's chat completions API subset)."""
        start = time.perf_counter()
        return self._generated(await self.service.chat(self._body(request), self._run), start)

    def _body(self, request: Request) -> Callable[[], Awaitable[bytes]]:
        limit = self.cfg.serve.max_body_bytes
        return lambda: read_bounded(request.stream(), request.headers.get("content-length"),
                                    limit)

    def _generated(self, answer: "Answer | Streamed", start: float) -> Any:
        """A generation route's response: JSON, or a stream counted when it ends."""
        if isinstance(answer, Streamed):
            return StreamingResponse(self._counted(answer, start), headers=answer.headers,
                                     media_type="text/event-stream")
        status, body, _ = answer
        if status == 200:
            self.metrics.tokens.inc(int(body.get("usage", {}).get("completion_tokens", 0)))
        return self._answer(answer, start)

    async def _counted(self, streamed: Streamed, start: float) -> AsyncIterator[str]:
        try:
            async for event in streamed.events:
                yield event
        finally:  # also when the client disconnected: its rows stop at the next step
            await streamed.close()
        if streamed.last is not None:
            self.metrics.tokens.inc(sum(row.generated for row in streamed.last.rows))
        self.metrics.observe_request(200, time.perf_counter() - start)

    @app.get("/v1/models", response_model=ModelList, responses=_ERRORS)
    def models(self) -> JSONResponse:
        """The served model (one), with its version."""
        return self._answer(self.service.models(), time.perf_counter())

    @app.get("/healthz")
    def healthz(self) -> JSONResponse:
        """200 with the served version once one is loaded; 503 before the first promotion."""
        return self._answer(self.service.health(), time.perf_counter())

    @app.post("/admin/promote", responses=_ADMIN_ERRORS)
    async def admin_promote(self, request: Request) -> JSONResponse:
        """Serve ``{"version": V}`` now, bypassing the gate (admin token required)."""
        start = time.perf_counter()
        auth = request.headers.get("authorization")
        return self._answer(await self.admin.handle("promote", auth, _admin_body(request)), start)

    @app.post("/admin/rollback", responses=_ADMIN_ERRORS)
    async def admin_rollback(self, request: Request) -> JSONResponse:
        """Serve the previously served version, or ``{"version": V}`` (admin token required)."""
        start = time.perf_counter()
        auth = request.headers.get("authorization")
        return self._answer(await self.admin.handle("rollback", auth, _admin_body(request)), start)

    @app.get("/admin/versions", responses=_ADMIN_ERRORS)
    async def admin_versions(self, request: Request) -> JSONResponse:
        """Every kept version with the gate's verdict, and the promoted one (admin token
        required)."""
        start = time.perf_counter()
        auth = request.headers.get("authorization")
        return self._answer(await self.admin.handle("versions", auth), start)

    def _answer(self, answer: tuple[int, dict[str, Any], dict[str, str]], start: float
                ) -> JSONResponse:
        """The JSON response, counted by status code with its latency."""
        self.metrics.observe_request(answer[0], time.perf_counter() - start)
        return _json(answer)

    def swap_stats(self) -> dict[str, Any]:
        st = self.slot.stats
        return {"version": self.slot.version, "swaps": st.swaps,
                "last_load_seconds": st.last_load_seconds, "last_swap_at": st.last_swap_at,
                "last_swap_lateness_s": st.last_swap_lateness_s,
                "failed_loads": st.failed_loads}

    def __del__(self) -> None:
        self.watcher.stop()
        if self.capture is not None:
            self.capture.stop()
        if self.pusher is not None:
            self.pusher.stop()


def student_app(cfg: Config, bootstrap: str = "") -> Any:
    """The bound Serve application for ``serve.run``; ``bootstrap``: the loop's broker (the
    embedded one's address, which the config does not hold)."""
    s = cfg.serve
    from online_distill.config import config_to_dict

    return StudentServer.options(
        num_replicas=s.num_replicas, max_ongoing_requests=s.max_concurrency,
        max_queued_requests=s.max_queued_requests,
        ray_actor_options={"num_cpus": s.num_cpus},
    ).bind(config_to_dict(cfg, redact=True), bootstrap)  # a password comes from the env


def start_serving(cfg: Config, bootstrap: str = "") -> str:
    """Start Serve's HTTP proxy on serve.host:port and deploy the app; returns the base URL."""
    s = cfg.serve
    serve.start(http_options={"host": s.host, "port": s.port})
    serve.run(student_app(cfg, bootstrap), name=APP_NAME, route_prefix="/")
    return f"http://{s.host}:{s.port}"


def stop_serving() -> None:
    serve.shutdown()


def app_builder(args: "dict[str, Any]") -> Any:
    """The Serve app from a config file: the ``import_path`` of a Serve config or RayService.

    ``online_distill.actors.serve:app_builder`` with the application's ``args``:
    ``config_file`` (the daemon's YAML config) and optional ``overrides`` (dotted
    ``a.b.c=value`` strings as on the CLI: a list, or one string separated by spaces, which
    is what ``serve run ... overrides=...`` passes). ``serve.enabled`` is not consulted (it
    tells ``online-distill up`` whether to serve too); Serve's ``http_options`` set the
    host and port. (The annotation is quoted so that Serve, which converts args to an
    annotated pydantic model, sees no class here on Python 3.10 either.)
    """
    from online_distill.config import ConfigError, load_config

    if "config_file" not in args:
        raise ConfigError("app_builder needs args.config_file: the path of the daemon's YAML "
                          "config, e.g. /etc/online-distill/production.yaml")
    overrides = args.get("overrides") or []
    if isinstance(overrides, str):
        overrides = overrides.split()
    return student_app(load_config(args["config_file"], [str(o) for o in overrides]))
