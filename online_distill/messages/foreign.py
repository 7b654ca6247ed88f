"""Prompts written by other producers: a JSON object or a plain UTF-8 string.

Production traffic comes from services that know nothing of online-distill's binary format.
The prompts topic therefore takes three shapes of record value, told apart by their first
bytes:

- online-distill's binary message (magic ``ODM``): decoded as ever;
- a UTF-8 JSON object (first non-blank character ``{``)::

      {"text": "12+34=", "id": "optional", "kind": "optional"}
      {"messages": [{"role": "user", "content": "Hi!"}], "id": "optional"}

  ``text`` or ``messages`` (OpenAI's chat shape: roles system, user, assistant; string
  content) is required; ``id`` defaults to the record key, or to a hash of the text when
  the record has no key (so a re-sent record keeps its id and is de-duplicated);
- any other UTF-8 string: the prompt text itself (the same id rule).

Anything else (not UTF-8, control characters but tab and newlines, a JSON object without a
string ``text``, an empty string) raises
:class:`MessageDecodeError` with a reason that says what to send instead.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from .conversation import check_turns
from .exceptions import MessageDecodeError
from .schema import PromptMessage
from .wire import DEFAULT_MAX_BYTES, MAGIC, decode

JSON_FIELDS = ("text", "messages", "id", "kind")
"""The fields a JSON prompt may carry (others are ignored)."""


def content_id(content: str | Sequence[Mapping[str, Any]]) -> str:
    """A stable id for a prompt without one: 32 hex digits of the BLAKE2b hash of its text,
    or of its conversation as canonical JSON."""
    if not isinstance(content, str):
        content = json.dumps([{"role": m["role"], "content": m["content"]} for m in content],
                             ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(content.encode("utf-8"), digest_size=16).hexdigest()


def prompt_from_json(obj: Mapping[str, Any], default_id: str | None = None) -> PromptMessage:
    """A prompt from a JSON object; raises ValueError that names the field at fault."""
    text, messages = obj.get("text"), obj.get("messages")
    if messages is not None:
        if text is not None:
            raise ValueError('a JSON prompt has "text" or "messages", not both')
        if not isinstance(messages, list):
            raise ValueError('"messages" must be a list of {"role", "content"} objects, got '
                             f"{type(messages).__name__}")
        turns = check_turns("messages", messages)
        if not turns:
            raise ValueError('"messages" is empty; a conversation needs at least one turn')
        if not any(t.role == "user" for t in turns):
            raise ValueError('"messages" has no user turn; a conversation needs one')
    elif not isinstance(text, str) or not text.strip():
        raise ValueError('a JSON prompt needs a non-empty string "text" field or a '
                         '"messages" list of {"role", "content"} objects')
    for name in ("id", "kind"):
        if name in obj and not isinstance(obj[name], str):
            raise ValueError(f'"{name}" must be a string, got {type(obj[name]).__name__}')
    if messages is not None:
        pid = obj.get("id") or default_id or content_id([t.as_dict() for t in turns])
        return PromptMessage(messages=turns, id=pid, kind=obj.get("kind", ""))
    assert isinstance(text, str)
    pid = obj.get("id") or default_id or content_id(text)
    return PromptMessage(text=text, id=pid, kind=obj.get("kind", ""))


def decode_prompt(value: bytes | bytearray | memoryview, key: bytes | None = None,
                  max_bytes: int = DEFAULT_MAX_BYTES) -> PromptMessage:
    """The prompt in a record of the prompts topic, whichever of the three shapes it is."""
    data = bytes(value)
    if data[:len(MAGIC)] == MAGIC or len(data) > max_bytes:
        return decode(data, PromptMessage, max_bytes)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MessageDecodeError(
            "bad_magic", f"neither an online-distill message (magic {MAGIC!r}) nor UTF-8 "
            f"text (byte {exc.start} is {data[exc.start:exc.start + 1]!r}); send a JSON "
            'object {"text": ...} or a plain UTF-8 string') from None
    if (bad := _control_char(text)) is not None:
        raise MessageDecodeError(
            "bad_magic", f"neither an online-distill message (magic {MAGIC!r}) nor text "
            f"(control character {bad!r} at {text.index(bad)}); send a JSON object "
            '{"text": ...} or a plain UTF-8 string')
    default_id = _key_id(key)
    if text.lstrip().startswith("{"):
        try:
            obj = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise MessageDecodeError("bad_json", f"starts with '{{' but is not JSON ({exc}); "
                                     'send {"text": "..."}') from None
        if not isinstance(obj, dict):
            raise MessageDecodeError("bad_json", "not a JSON object")
        try:
            return prompt_from_json(obj, default_id)
        except ValueError as exc:
            raise MessageDecodeError("bad_json", str(exc)) from None
    if not text.strip():
        raise MessageDecodeError("invalid", "an empty prompt; send the prompt's text")
    try:
        return PromptMessage(text=text, id=default_id or content_id(text))
    except ValueError as exc:
        raise MessageDecodeError("invalid", str(exc)) from None


def _control_char(text: str) -> str | None:
    """The first C0 control character other than tab, newline and carriage return: binary
    data that happens to be valid UTF-8 (a NUL byte, say) is not a prompt."""
    return next((c for c in text if c < " " and c not in "\t\n\r"), None)


def _key_id(key: bytes | None) -> str | None:
    """The record key as an id, when it is non-empty UTF-8."""
    if not key:
        return None
    try:
        return key.decode("utf-8") or None
    except UnicodeDecodeError:
        return key.hex()
