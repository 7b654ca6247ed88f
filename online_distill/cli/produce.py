"""Feeding prompts into the prompts topic: from JSONL/stdin, or the demo traffic generator."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from typing import IO

from online_distill.messages import PromptMessage, encode, new_id
from online_distill.messages.foreign import prompt_from_json
from online_distill.streams import MessageSink
from online_distill.tasks.traffic import DemoTraffic


def prompts_from_lines(lines: Iterable[str]) -> Iterator[PromptMessage]:
    """Each line is a JSON object with ``text`` or ``messages`` (and optional ``id``,
    ``kind``), or plain text (the shapes the prompts topic takes from any producer:
    :mod:`online_distill.messages.foreign`). Raises ValueError naming the line number when
    a JSON object is not a prompt.
    """
    for n, raw in enumerate(lines, 1):
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {n}: not valid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict):
                raise ValueError(f"line {n}: a JSON prompt must be an object")
            try:
                yield prompt_from_json({"id": new_id(), **obj})
            except ValueError as exc:
                raise ValueError(f"line {n}: {exc}") from None
        else:
            yield PromptMessage(text=line)


def produce_file(sink: MessageSink, topic: str, stream: IO[str], flush_every: int = 1000
                 ) -> int:
    """Send every prompt of a JSONL/text stream; flush (acks=all) every ``flush_every``."""
    count = 0
    for msg in prompts_from_lines(stream):
        sink.send(topic, encode(msg), key=msg.id.encode())
        count += 1
        if count % flush_every == 0:
            sink.flush(30.0)
    sink.flush(30.0)
    return count


class DemoTrafficThread:
    """Produces demo traffic at ``rate_per_s`` in a background thread until stopped, or until
    ``max_prompts`` were sent (0: no limit)."""

    def __init__(self, sink: MessageSink, topic: str, traffic: DemoTraffic, rate_per_s: float,
                 max_prompts: int = 0) -> None:
        self.sink, self.topic, self.traffic, self.rate = sink, topic, traffic, rate_per_s
        self.max_prompts = max_prompts
        self.sent = 0
        self.drifted_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-traffic", daemon=True)

    def start(self) -> DemoTrafficThread:
        self._thread.start()
        return self

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            due = int((time.monotonic() - start) * self.rate) - self.sent
            if self.max_prompts:
                due = min(due, self.max_prompts - self.sent)
            for _ in range(max(0, due)):
                item = next(self.traffic)
                if item.drifted and self.drifted_at is None:
                    self.drifted_at = time.time()
                msg = PromptMessage(text=item.text, kind=item.problem.kind)
                self.sink.send(self.topic, encode(msg), key=msg.id.encode())
                self.sent += 1
            self.sink.flush(30.0)
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop producing, flush what was sent and close the sink."""
        self._stop.set()
        self._thread.join(10.0)
        self.sink.close()
