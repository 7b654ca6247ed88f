"""``"stream": true``: a job's progress as server-sent events in OpenAI's chunk shapes.

Each event is one line ``data: <json>`` and a blank line; the stream ends with
``data: [DONE]``. Completions send ``text_completion`` chunks (``choices[i].text``); chat
sends ``chat.completion.chunk`` chunks whose ``delta`` is ``{"role": "assistant"}`` first,
then ``{"content": ...}``, then ``{}`` with the ``finish_reason``. With
``stream_options.include_usage`` every chunk has ``"usage": null`` and one more chunk, with
no choices, carries the usage.

The text deltas are differences of the decoded text (:class:`DeltaText`), so they
concatenate to exactly the text the same request gets unstreamed: a byte-level token that
ends inside a UTF-8 character decodes to U+FFFD until the character is complete, and the
tail that could be the start of a stop string waits until it is known not to be one.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from online_distill.serving.jobs import Job, Progress
from online_distill.serving.validation import ApiError

Shape = Literal["completion", "chat"]
DONE = "data: [DONE]\n\n"
_REPLACEMENT = "\ufffd"


def sse(payload: dict[str, Any]) -> str:
    """One server-sent event carrying ``payload`` as JSON."""
    return f"data: {json.dumps(payload, separators=(',', ':'), ensure_ascii=False)}\n\n"


class DeltaText:
    """The new text of one choice at each step, never a character that may still change.

    Held back: trailing U+FFFD (an incomplete UTF-8 character of a byte-level token) and the
    longest tail that is the start of a stop string. ``final`` releases the rest, whatever
    it is, so the deltas add up to the final text.
    """

    def __init__(self, stops: Sequence[str] = ()) -> None:
        self.stops = [s for s in stops if s]
        self.sent = ""

    def push(self, text: str, final: bool = False) -> str:
        """The part of ``text`` (the whole text so far) that can be sent now."""
        if not final:
            text = text.rstrip(_REPLACEMENT)
            text = text[: len(text) - self._stop_prefix(text)]
        if not text.startswith(self.sent) or len(text) <= len(self.sent):
            return ""  # nothing new (or an earlier character changed: wait for the final text)
        delta, self.sent = text[len(self.sent):], text
        return delta

    def _stop_prefix(self, text: str) -> int:
        """Length of the longest tail of ``text`` that is a proper start of a stop string."""
        longest = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:k]):
                    longest = k
                    break
        return longest


@dataclass
class StreamHead:
    """What every chunk of one stream repeats."""

    shape: Shape
    model: str
    version: int
    include_usage: bool
    id: str = ""
    created: int = 0

    def __post_init__(self) -> None:
        prefix = "chatcmpl" if self.shape == "chat" else "cmpl"
        self.id = self.id or f"{prefix}-{uuid.uuid4().hex}"
        self.created = self.created or int(time.time())

    def chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None
              ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id, "object": "chat.completion.chunk" if self.shape == "chat"
            else "text_completion", "created": self.created, "model": self.model,
            "system_fingerprint": f"v{self.version}", "choices": choices,
            "version": self.version}
        if self.include_usage:
            body["usage"] = usage
        return body

    def choice(self, index: int, text: str | None, finish: str | None,
               role: bool = False) -> dict[str, Any]:
        """One choice of a chunk; ``text`` None for a chat chunk without content."""
        reason = None if finish is None else "stop" if finish == "stop" else "length"
        if self.shape == "completion":
            return {"index": index, "text": text or "", "logprobs": None,
                    "finish_reason": reason}
        delta: dict[str, str] = {"role": "assistant"} if role else {}
        if text is not None:
            delta["content"] = text
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}


class ProgressFeed:
    """Carries a job's progress from the decoding thread to the event loop (see
    :func:`start_stream`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Progress | BaseException] = asyncio.Queue()

    def listen(self, progress: Progress) -> None:
        """The job's listener: called in the decoding thread, never blocks."""
        self.loop.call_soon_threadsafe(self.queue.put_nowait, progress)

    def fail(self, exc: BaseException) -> None:
        self.queue.put_nowait(exc)

    async def next(self) -> Progress:
        item = await self.queue.get()
        if isinstance(item, BaseException):
            raise item
        return item


async def start_stream(job: Job, run_batch: Callable[[Job], Awaitable[Any]]
                       ) -> tuple[Progress, ProgressFeed, asyncio.Future[Any]]:
    """Queue ``job`` for decoding and wait until it starts: its first progress (which names
    the version decoding it), the feed of the next ones, and the batch's future.

    Raises what the batch raised before the job started (an :class:`ApiError` is then
    answered as JSON, before any event). Cancelled meanwhile (the client left), the job is
    cancelled too.
    """
    feed = ProgressFeed(asyncio.get_running_loop())
    job.listener = feed.listen
    task = asyncio.ensure_future(run_batch(job))

    def finished(fut: asyncio.Future[Any]) -> None:
        exc = None if fut.cancelled() else fut.exception()
        feed.fail(exc if exc is not None else
                  ApiError(500, "the batch ended before this stream finished; retry the "
                                "request", code="stream_ended"))

    task.add_done_callback(finished)
    try:
        return await feed.next(), feed, task
    except BaseException:
        job.cancel.set()
        raise


async def events(head: StreamHead, job: Job, first: Progress, feed: ProgressFeed,
                 on_done: Callable[[Progress], None] | None = None) -> AsyncGenerator[str, None]:
    """The job's events, from its first progress to ``[DONE]``; ``on_done`` sees the last
    progress of a stream that ran to the end. Leaving early (the client disconnected, so
    the response is cancelled) cancels the job: its rows stop at the next decode step."""
    stops = job.req.stop
    stop_list = [] if stops is None else [stops] if isinstance(stops, str) else list(stops)
    deltas = {row.index: DeltaText(stop_list) for row in first.rows}
    try:
        if head.shape == "chat":  # one chunk per choice, as every other chunk
            for row in first.rows:
                yield sse(head.chunk([head.choice(row.index, "", None, role=True)]))
        progress, ended = first, set()
        while True:
            for row in progress.rows:
                if row.index in ended:
                    continue
                text = deltas[row.index].push(row.text, final=row.finish is not None)
                if text:
                    yield sse(head.chunk([head.choice(row.index, text, None)]))
                if row.finish is not None:
                    ended.add(row.index)
                    yield sse(head.chunk([head.choice(row.index, None if head.shape == "chat"
                                                      else "", row.finish)]))
            if progress.done:
                break
            try:
                progress = await feed.next()
            except Exception as exc:  # noqa: BLE001 - the batch failed mid-stream: say so
                err = exc if isinstance(exc, ApiError) else ApiError(
                    500, f"decoding failed mid-stream ({type(exc).__name__}); retry the "
                         "request", code="stream_failed")
                yield sse(err.body())
                yield DONE
                return
        if head.include_usage:
            completion = sum(row.generated for row in progress.rows)
            yield sse(head.chunk([], {"prompt_tokens": progress.prompt_tokens,
                                      "completion_tokens": completion,
                                      "total_tokens": progress.prompt_tokens + completion}))
        yield DONE
        if on_done is not None:
            on_done(progress)
    finally:
        job.cancel.set()  # finished or abandoned: nothing more to decode for it
