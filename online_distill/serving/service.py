"""The HTTP-facing logic of the Serve app, without Ray: parse, check, batch, answer.

Every answer is ``(status, body, headers)``, or a :class:`Streamed` one for
``"stream": true``; every header set names the served version (``X-Model-Version``), errors
and streams included, so a client always knows which student answered. A stream's version
is the one that decodes it, known when its batch starts: it keeps that engine to the end.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from online_distill.messages import Turn
from online_distill.serving.chat import chat_completion, chat_job, parse_chat, render
from online_distill.serving.engine import CompletionEngine
from online_distill.serving.jobs import Job, Progress
from online_distill.serving.schemas import CompletionRequest
from online_distill.serving.stream import Shape, StreamHead, events, start_stream
from online_distill.serving.swap import ModelSlot
from online_distill.serving.validation import (
    ApiError,
    ServingLimits,
    check_body_size,
    error_from_pydantic,
    validate_request,
)

VERSION_HEADER = "X-Model-Version"
REPLICA_HEADER = "X-Replica"
Item = Job
Answer = tuple[int, dict[str, Any], dict[str, str]]
RunBatch = Callable[[Job], Awaitable[dict[str, Any]]]
Prompt = str | tuple[Turn, ...]
"""What the capture sees of a request's prompt: its text, or its conversation."""
Body = bytes | Callable[[], Awaitable[bytes]]


@dataclass
class Streamed:
    """A 200 answered as server-sent events: the events and the headers. Whoever sends the
    events calls :meth:`close` when done or abandoned (the job stops decoding)."""

    events: AsyncGenerator[str, None]
    headers: dict[str, str]
    version: int
    job: Job
    last: Progress | None = None
    """The job's last progress, once the stream ran to its end (None if the client left)."""

    async def close(self) -> None:
        self.job.cancel.set()
        await self.events.aclose()


class CompletionService:
    """Turns raw request bodies into OpenAI answers using the slot's current engine."""

    def __init__(self, slot: ModelSlot, limits: ServingLimits, served_model_name: str,
                 on_answer: Callable[[Sequence[Prompt]], None] | None = None) -> None:
        """``on_answer``: sees the prompts (texts, or a chat request's conversation) of
        every request answered 200, streams once they end (the capture of served traffic);
        it must not block."""
        self.slot, self.limits, self.name = slot, limits, served_model_name
        self.on_answer = on_answer
        self.replica = ""

    def headers(self, version: int | None = None) -> dict[str, str]:
        v = self.slot.version if version is None else version
        out = {VERSION_HEADER: "none" if v is None else str(v)}
        if self.replica:
            out[REPLICA_HEADER] = self.replica
        return out

    def engine(self) -> CompletionEngine:
        engine = self.slot.current()
        if engine is None:
            raise ApiError(503, "no student version has been promoted yet; the first version "
                                "is served as soon as the evaluation gate promotes it (see "
                                "`online-distill versions`)", code="no_model_yet")
        return engine

    def _json_object(self, raw: bytes, example: str) -> dict[str, Any]:
        check_body_size(len(raw), self.limits)
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"the request body is not valid JSON ({exc}); send a JSON "
                                f"object such as {example}", code="invalid_json") from exc
        if not isinstance(data, dict):
            raise ApiError(400, "the request body must be a JSON object with the fields of a "
                                "completion request", code="invalid_body")
        return data

    def parse(self, raw: bytes) -> Job:
        """The validated completion request and its prompts, or an :class:`ApiError`."""
        data = self._json_object(raw, '{"model": ..., "prompt": ...}')
        try:
            req = CompletionRequest.model_validate(data)
        except ValidationError as exc:
            raise error_from_pydantic(exc) from exc
        prompts = validate_request(req, self.limits, self.name)
        self.engine().check_context(req, prompts)
        return Job(req, prompts)

    def parse_chat(self, raw: bytes) -> tuple[Job, tuple[Turn, ...]]:
        """The validated chat request as a job on its rendered conversation, and the
        conversation; or an :class:`ApiError`."""
        data = self._json_object(raw, '{"model": ..., "messages": [...]}')
        _, turns, req = parse_chat(data, self.limits, self.name)
        engine = self.engine()
        job = chat_job(req, render(engine.tokenizer, turns))
        try:
            engine.check_context(req, job.prompts, chat=True)
        except ApiError as err:  # name the chat fields
            err.param = "messages" if err.param == "prompt" else err.param
            err.message = err.message.replace("prompt 0 is", "the rendered conversation is")
            raise
        return job, turns

    async def complete(self, raw: Body, run_batch: RunBatch) -> Answer | Streamed:
        """``POST /v1/completions``; ``raw`` is the body or reads it (an :class:`ApiError`
        from reading, such as 413, is answered too); ``run_batch`` decodes one job
        (batched by the caller)."""
        try:
            job = self.parse(raw if isinstance(raw, bytes) else await raw())
        except ApiError as err:
            return err.status, err.body(), self.headers()
        return await self._answer(job, list(job.prompts), "completion", run_batch,
                                  lambda body: body)

    async def chat(self, raw: Body, run_batch: RunBatch) -> Answer | Streamed:
        """``POST /v1/chat/completions``, as :meth:`complete`."""
        try:
            job, turns = self.parse_chat(raw if isinstance(raw, bytes) else await raw())
        except ApiError as err:
            return err.status, err.body(), self.headers()
        return await self._answer(job, [turns], "chat", run_batch, chat_completion)

    async def _answer(self, job: Job, prompts: list[Prompt], shape: Shape,
                      run_batch: RunBatch, reshape: Callable[[dict[str, Any]], dict[str, Any]]
                      ) -> Answer | Streamed:
        if job.req.stream:
            return await self._stream(job, prompts, shape, run_batch)
        try:
            body = reshape(await run_batch(job))
        except ApiError as err:
            return err.status, err.body(), self.headers()
        if self.on_answer is not None:
            self.on_answer(prompts)
        return 200, body, self.headers(int(body["version"]))

    async def _stream(self, job: Job, prompts: list[Prompt], shape: Shape,
                      run_batch: RunBatch) -> Answer | Streamed:
        """Wait for the job's batch to start (errors until then are answered as JSON), then
        stream its events with the version that decodes it."""
        try:
            first, feed, _ = await start_stream(job, run_batch)
        except ApiError as err:
            return err.status, err.body(), self.headers()
        options = job.req.stream_options
        head = StreamHead(shape, self.name, first.version,
                          include_usage=options is not None and options.include_usage)

        def done(last: Progress) -> None:
            streamed.last = last
            if self.on_answer is not None:
                self.on_answer(prompts)

        streamed = Streamed(events(head, job, first, feed, done), self.headers(first.version),
                            first.version, job)
        return streamed

    def models(self) -> Answer:
        try:
            engine = self.engine()
        except ApiError as err:
            return err.status, err.body(), self.headers()
        return 200, engine.models(), self.headers(engine.version)

    def health(self) -> Answer:
        self.slot.current()
        version = self.slot.version
        body = {"status": "ok" if version is not None else "waiting for a promoted version",
                "version": version, "swaps": self.slot.stats.swaps}
        return (200 if version is not None else 503), body, self.headers(version)


def run_items(slot: ModelSlot, items: list[Job]) -> list[dict[str, Any] | ApiError]:
    """Decode a batch on the engine in the slot now; a failing item fails alone (the checks
    that fail an item come before any decoding, so no listener has heard of it yet)."""
    engine = slot.current()
    if engine is None:
        err = ApiError(503, "no student version is loaded", code="no_model_yet")
        return [err for _ in items]
    try:
        return list(engine.complete_many(items))
    except ApiError:
        out: list[dict[str, Any] | ApiError] = []
        for item in items:  # find the culprit: answer the others
            try:
                out.append(engine.complete_many([item])[0])
            except ApiError as err:
                out.append(err)
        return out
