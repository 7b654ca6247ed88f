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


CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi 🙂"}]


def test_a_json_conversation_is_a_chat_prompt_with_a_stable_id() -> None:
    got = decode_prompt(json.dumps({"messages": CHAT, "kind": "chat"}).encode())
    assert got.is_chat and got.text == "" and got.kind == "chat"
    assert [t.as_dict() for t in got.messages] == CHAT
    assert got.id == content_id(CHAT) == decode_prompt(json.dumps({"messages": CHAT}).encode()).id
    assert got.id != content_id(CHAT[:1])
    assert decode_prompt(encode(got)) == got  # and through the binary format unchanged


@pytest.mark.parametrize(("obj", "says"), [
    ({"messages": [{"role": "bot", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content must be a string"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    ({"messages": []}, "empty"),
    ({"messages": "hi"}, "must be a list"),
    ({"messages": [{"role": "system", "content": "x"}]}, "no user turn"),
    ({"messages": CHAT, "text": "hi"}, "not both"),
    ({"messages": ["hi"]}, "messages[0] must be an object"),
])
def test_a_bad_conversation_is_refused_naming_the_field(obj: dict[str, object], says: str
                                                        ) -> None:
    with pytest.raises(MessageDecodeError) as err:
        decode_prompt(json.dumps(obj).encode())
    assert err.value.reason == "bad_json" and says in str(err.value)


def test_produce_reads_both_jsonl_shapes() -> None:
    from online_distill.cli.produce import prompts_from_lines

    got = list(prompts_from_lines([json.dumps({"text": "1+1="}), json.dumps({"messages": CHAT}),
                                   "plain"]))
    assert [p.is_chat for p in got] == [False, True, False]
    with pytest.raises(ValueError, match="line 1: .*messages\\[0\\].role"):
        list(prompts_from_lines([json.dumps({"messages": [{"role": "x", "content": ""}]})]))


def test_a_prompt_is_text_or_a_conversation_never_both() -> None:
    with pytest.raises(ValueError, match="not both"):
        PromptMessage(text="hi", messages=CHAT)  # type: ignore[arg-type]
    assert PromptMessage(messages=CHAT).display_text == "system: Be brief.\nuser: Hi 🙂"  # type: ignore[arg-type]
