"""The prompts topic takes records from any producer: binary, a JSON object, plain text."""

from __future__ import annotations

import json

import pytest

from online_distill.messages import MessageDecodeError, PromptMessage, encode
from online_distill.messages.foreign import content_id, decode_prompt


def test_the_binary_format_is_read_as_ever() -> None:
    msg = PromptMessage(text="12+34=", kind="add2")
    assert decode_prompt(encode(msg)) == msg


def test_a_json_object_with_text_id_and_kind() -> None:
    got = decode_prompt(json.dumps({"text": "12+34=", "id": "p1", "kind": "add2",
                                    "user": "ignored"}).encode())
    assert (got.text, got.id, got.kind, got.origin) == ("12+34=", "p1", "add2", "traffic")


@pytest.mark.parametrize("value", [b'{"text": "12+34="}', b"12+34=", b"12+34="])
def test_without_an_id_the_key_is_the_id_else_a_hash_of_the_text(value: bytes) -> None:
    assert decode_prompt(value, key=b"order-7").id == "order-7"
    unkeyed = decode_prompt(value)
    assert unkeyed.id == content_id("12+34=") == decode_prompt(value).id  # stable


def test_plain_utf8_text_keeps_newlines_and_unicode() -> None:
    text = "Résume ceci :\n\tun texte 🙂"
    assert decode_prompt(text.encode()).text == text


@pytest.mark.parametrize(("value", "reason", "says"), [
    (b'{"text": 3}', "bad_json", '"text"'),
    (b'{"prompt": "hi"}', "bad_json", '"text"'),
    (b'{"text": "hi", "kind": 1}', "bad_json", '"kind" must be a string'),
    (b'{"text": "hi"', "bad_json", "not JSON"),
    (b'{"text": "hi"} [', "bad_json", "not JSON"),
    (b"   ", "invalid", "empty prompt"),
    (b"", "invalid", "empty prompt"),
    (b"\xffnot a prompt", "bad_magic", "nor UTF-8 text"),
    (b"\x00garbage", "bad_magic", "control character"),
])
def test_what_is_not_a_prompt_says_what_to_send(value: bytes, reason: str, says: str) -> None:
    with pytest.raises(MessageDecodeError) as info:
        decode_prompt(value)
    assert info.value.reason == reason and says in str(info.value)


def test_the_size_limit_holds_for_every_shape() -> None:
    with pytest.raises(MessageDecodeError) as info:
        decode_prompt(b"x" * 2000, max_bytes=1000)
    assert info.value.reason == "oversize"
