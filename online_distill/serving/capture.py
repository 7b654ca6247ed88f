"""The served traffic is the training traffic: prompts the served student answered go back
to the prompts topic (``serve.capture``), so pointing apps at the student keeps it learning.

A request never waits for it and never fails because of it: :meth:`PromptCapture.offer`
samples and puts the prompts in a bounded queue (dropping, counted, when it is full), and a
background thread produces them, flushing every batch. A producer that cannot be created or
a flush that fails (the broker is down) drops that batch, counted, and the thread tries a
new producer a little later. Only the prompt is produced (the text, or a chat request's
conversation), as a ``PromptMessage`` with ``origin="served"``: no other request field, no
answer.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections import Counter
from collections.abc import Callable, Sequence

from online_distill.messages import PromptMessage, Turn, encode
from online_distill.streams import MessageSink, StreamsError

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 10.0
"""One batch's acknowledgements wait at most this long (the broker is down past it)."""
RETRY_AFTER_S = 5.0
"""After a failure, a new producer is tried this long later (the queue fills meanwhile)."""
BATCH = 256
"""Prompts produced, at most, per flush."""


class PromptCapture:
    """Samples answered prompts and produces them in the background (module docstring)."""

    def __init__(self, make_sink: Callable[[], MessageSink], topic: str, share: float,
                 max_queued: int, seed: int | None = None) -> None:
        self.make_sink, self.topic, self.share = make_sink, topic, share
        self._queue: queue.Queue[PromptMessage] = queue.Queue(maxsize=max_queued)
        self._rng = random.Random(seed)
        self.captured = 0
        """Prompts produced and acknowledged."""
        self.dropped: Counter[str] = Counter()
        """Prompts not produced, by reason: ``queue_full``, ``broker`` (no producer, or a
        flush that failed)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    def offer(self, prompts: Sequence[str | Sequence[Turn]]) -> None:
        """Called after an answer with its prompts (texts, or conversations): sample
        ``share`` of the requests; never blocks."""
        if not prompts or self._rng.random() >= self.share:
            return
        for prompt in prompts:
            if not prompt:  # an empty text prompt is no prompt to learn from
                continue
            msg = (PromptMessage(text=prompt, origin="served") if isinstance(prompt, str)
                   else PromptMessage(messages=tuple(prompt), origin="served"))
            try:
                self._queue.put_nowait(msg)
            except queue.Full:
                self.dropped["queue_full"] += 1

    def _run(self) -> None:
        sink: MessageSink | None = None
        while not self._stop.is_set():
            batch = self._take()
            if not batch:
                continue
            try:
                sink = sink or self.make_sink()
                for msg in batch:
                    sink.send(self.topic, encode(msg), key=msg.id.encode())
                sink.flush(FLUSH_TIMEOUT_S)
                self.captured += len(batch)
            except StreamsError as exc:  # broker down: drop this batch, retry later
                self.dropped["broker"] += len(batch)
                log.warning("capture: %d served prompts dropped (%s); retrying in %.0f s",
                            len(batch), exc, RETRY_AFTER_S)
                self._close(sink)
                sink = None
                self._stop.wait(RETRY_AFTER_S)
        self._close(sink)

    def _take(self) -> list[PromptMessage]:
        """Up to BATCH queued prompts, waiting at most a second for the first."""
        try:
            batch = [self._queue.get(timeout=1.0)]
        except queue.Empty:
            return []
        while len(batch) < BATCH:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    @staticmethod
    def _close(sink: MessageSink | None) -> None:
        if sink is not None:
            try:
                sink.close()
            except StreamsError:
                pass
        return None

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop the thread (what is still queued is dropped, as in a replica that dies)."""
        self._stop.set()
        self._thread.join(timeout_s)
        self.dropped["stopped"] += self._queue.qsize()

