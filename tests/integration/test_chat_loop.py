"""Chat end to end on two real model families, no hub: a tiny random Qwen2 teacher and
Llama student sharing one byte-level BPE tokenizer with a ChatML template.

200 conversations go through ``online-distill produce`` into ``online-distill up --file
deploy/chat.yaml``; the teacher labels them rendered with the chat template (continuations
end at ``<|im_end|>``), the learner trains, the gate promotes, and the served student
answers the official ``openai`` client on ``/v1/chat/completions`` and ``/v1/completions``,
streamed and not: the streamed deltas concatenate to the non-streamed answer at
temperature 0, with usage in the last chunk.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from online_distill.messages import LabeledExample, decode
from online_distill.models.tiny_chat import build_tiny_chat
from online_distill.streams.embedded import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).parent / "online-distill"
NAME = "online-distill-student"
DEADLINE_S = 600.0
"""Bounds on conditions that hold in a minute or two here; only reached when broken."""



def conversations(n: int) -> list[dict[str, object]]:
    topics = ["tea", "rain", "cats", "maps", "bread", "songs", "trains", "stars"]
    out = []
    for i in range(n):
        turns = [{"role": "user", "content": f"Tell me about {topics[i % 8]} number {i}."}]
        if i % 3 == 0:
            turns.insert(0, {"role": "system", "content": "You are brief."})
        if i % 5 == 0:
            turns += [{"role": "assistant", "content": "Which part?"},
                      {"role": "user", "content": "The first part."}]
        out.append({"id": f"chat-{i}", "messages": turns})
    return out


class Up:
    """``online-distill up`` in a subprocess, its output lines on a queue."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen([str(EXE), "up", *args], cwd=ROOT, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        threading.Thread(target=lambda: [self.lines.put(x) for x in stdout],
                         daemon=True).start()

    def wait_for(self, pattern: str, deadline_s: float) -> re.Match[str]:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.seen.append(line)
            if found := re.search(pattern, line):
                return found
        pytest.fail(f"no line matching {pattern!r}; last output:\n" + "".join(self.seen[-40:]))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=180)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGUSR1)  # every thread's stack, for the log
                time.sleep(2)
                self.proc.kill()
                pytest.fail("up did not stop within 180 s of SIGTERM:\n"
                            + "".join(self.seen[-40:]))


def test_conversations_train_two_families_and_the_student_streams_chat(tmp_path: Path) -> None:
    import openai

    from online_distill.config import load_config
    from online_distill.streams import KafkaSource

    models = build_tiny_chat(tmp_path / "models")
    run, port = tmp_path / "run", free_port()
    up = Up(["--file", "deploy/chat.yaml", f"run_dir={run}",
             f"teacher.model={models.teacher}", f"learner.student_model={models.student}",
             f"learner.checkpoint_dir={run}/ckpt", f"gate.weights_dir={run}/w",
             f"serve.port={port}", "metrics.port=0", "learner.publish_every_steps=5"])
    try:
        bootstrap = up.wait_for(r"online-distill up: broker (\S+),", 300).group(1)
        jsonl = tmp_path / "chat.jsonl"
        jsonl.write_text("".join(json.dumps(c) + "\n" for c in conversations(200)))
        produced = subprocess.run(
            [str(EXE), "produce", str(jsonl), f"kafka.bootstrap_servers={bootstrap}"],
            cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert produced.returncode == 0, produced.stdout + produced.stderr
        # A promoted version: the status line names it ("served v3 ...").
        up.wait_for(r"served v\d+ ", DEADLINE_S)

        # The labels: rendered with the chat template, conversations kept, turns closed.
        cfg = load_config("deploy/chat.yaml", [f"kafka.bootstrap_servers={bootstrap}",
                                               f"kafka.consumer_group_prefix=check-{port}"])
        source = KafkaSource(cfg.kafka, bootstrap, "chat-check", [cfg.kafka.labels_topic],
                             manual_assign=True)
        labeled: list[LabeledExample] = []
        end = time.monotonic() + 60
        while len(labeled) < 20 and time.monotonic() < end:
            labeled += [decode(r.value, LabeledExample) for r in source.poll(timeout_s=1.0)]
        source.close()
        assert len(labeled) >= 20, f"read {len(labeled)} labeled examples"
        for ex in labeled[:20]:
            assert ex.messages and ex.prompt_text.startswith("<|im_start|>")
            assert ex.prompt_text.endswith("<|im_start|>assistant\n")

        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none",
                               max_retries=0, timeout=60)
        messages = [{"role": "user", "content": "Tell me about tea number 7."}]
        whole = client.chat.completions.create(model=NAME, messages=messages,  # type: ignore[arg-type]
                                               temperature=0, max_tokens=12)
        chunks = list(client.chat.completions.create(
            model=NAME, messages=messages, temperature=0, max_tokens=12,  # type: ignore[arg-type]
            stream=True, stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == whole.choices[0].message.content
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]

        prompt = "Tell me about rain"
        plain = client.completions.create(model=NAME, prompt=prompt, temperature=0, max_tokens=12)
        streamed = list(client.completions.create(
            model=NAME, prompt=prompt, temperature=0, max_tokens=12, stream=True,
            stream_options={"include_usage": True}))
        assert "".join(c.choices[0].text for c in streamed if c.choices) == plain.choices[0].text
        assert streamed[-1].usage is not None
    finally:
        up.stop()
