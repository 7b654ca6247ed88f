"""Feeding prompts: JSONL and plain-text lines, bad lines named by number."""

from __future__ import annotations

import io

import pytest

from online_distill.cli.produce import produce_file, prompts_from_lines
from online_distill.messages import PromptMessage, decode
from online_distill.streams import MemoryLog, MemorySink


def test_jsonl_and_plain_lines_become_prompts() -> None:
    lines = ['{"text": "1+2=", "id": "abc", "kind": "add2"}\n', "\n", "plain prompt\n"]
    msgs = list(prompts_from_lines(lines))
    assert [(m.text, m.id, m.kind) for m in msgs[:1]] == [("1+2=", "abc", "add2")]
    assert msgs[1].text == "plain prompt" and msgs[1].origin == "traffic"


@pytest.mark.parametrize(("line", "msg"), [('{"text": 3}', 'string "text"'),
                                           ('{"text": "a"', "not valid JSON")])
def test_bad_lines_are_named(line: str, msg: str) -> None:
    with pytest.raises(ValueError, match=f"line 2: .*{msg}"):
        list(prompts_from_lines(["ok\n", line]))


def test_produce_file_sends_every_prompt_keyed_by_id() -> None:
    log = MemoryLog(partitions=2)
    sink = MemorySink(log)
    n = produce_file(sink, "p", io.StringIO("".join(f"{i}+1=\n" for i in range(25))),
                     flush_every=10)
    records = [r for part in log.topics["p"] for r in part]
    assert n == 25 and len(records) == 25
    for r in records:
        assert r.key == decode(r.value, PromptMessage).id.encode()
