"""A JSON view of messages, for people and for export (`online-distill export` writes JSONL).

`to_json_dict(msg)` gives plain dicts, lists, str, int, float and None that
`json.dumps(..., allow_nan=False)` accepts: strict RFC 8259 JSON, readable by any parser.
Layout: ``{"type": "prompt" | "labeled_example" | "dead_letter", "format_version": 1,
...the dataclass fields...}`` with these conventions:

- arrays are (nested) lists: ``topk_ids`` and ``topk_logprobs`` are lists of T rows of k;
- a log-probability of -inf (probability 0) is ``null``, since JSON has no infinities;
- ``timings`` is an object ``{"label_seconds", "queue_seconds"}``;
- a DeadLetter's payload is ``"payload_b64"``, standard base64.

Log-probabilities are written as the shortest decimal of their float32 value (``-0.1``), other
floats at full precision, so `from_json_dict(to_json_dict(m)) == m` exactly.
`from_json_dict` raises MessageDecodeError, and only that, on bad input; it ignores keys it
does not know, and reads a dict without "format_version" as the current version.
"""

from __future__ import annotations

import base64
import math
from typing import Any, overload

import numpy as np

from ._fields import (
    TYPE_NAMES,
    FieldReader,
    check_expected,
    dead_letter_fields,
    dead_letter_from,
    labeled_fields,
    labeled_from,
    prompt_fields,
    prompt_from,
    pseudo_target_fields,
    pseudo_target_from,
)
from .exceptions import MessageDecodeError
from .schema import DeadLetter, LabeledExample, M, Message, PromptMessage, PseudoTarget
from .wire import FORMAT_VERSION

_CLASSES: dict[str, type] = {name: cls for cls, name in TYPE_NAMES.items()}


def to_json_dict(msg: Message) -> dict[str, Any]:
    """`msg` as a JSON-ready dict (layout in the module docstring)."""
    if type(msg) not in TYPE_NAMES:
        raise TypeError(f"to_json_dict: not a message: {type(msg).__name__}")
    d: dict[str, Any] = {"type": TYPE_NAMES[type(msg)], "format_version": FORMAT_VERSION}
    if isinstance(msg, PromptMessage):
        d.update(prompt_fields(msg))
    elif isinstance(msg, LabeledExample):
        d.update(labeled_fields(msg))
        d["prompt_token_ids"] = msg.prompt_token_ids_array(None, copy=False).tolist()
        d["pseudo_targets"] = [_pt_json(pt) for pt in msg.pseudo_targets]
    else:
        d.update(dead_letter_fields(msg))
        d["payload_b64"] = base64.b64encode(msg.payload).decode("ascii")
    return d


def _pt_json(pt: PseudoTarget) -> dict[str, Any]:
    topk_lp = pt.topk_logprobs_array(copy=False).tolist()
    return {
        **pseudo_target_fields(pt),
        "token_ids": pt.token_ids_array(None, copy=False).tolist(),
        "topk_ids": pt.topk_ids_array(None, copy=False).tolist(),
        "topk_logprobs": [[_lp(x) for x in row] for row in topk_lp],
        "tail_logmass": [_lp(x) for x in pt.tail_logmass_array(copy=False).tolist()],
        "sampled_logprobs": [_lp(x) for x in pt.sampled_logprobs_array(copy=False).tolist()],
    }


def _lp(x: float) -> float | None:
    # Values are float32 (see schema); write the shortest decimal that is the same float32
    # ("-0.1", not "-0.10000000149011612"). The constructor casts it back exactly.
    return None if x == -math.inf else float(str(np.float32(x)))


def _from_null(value: Any, depth: int) -> Any:
    """null -> -inf in a list of `depth` levels; anything else is left to the constructor."""
    if value is None:
        return -math.inf
    if depth and isinstance(value, list):
        return [_from_null(v, depth - 1) for v in value]
    return value


@overload
def from_json_dict(d: object, expected: type[M]) -> M: ...
@overload
def from_json_dict(d: object, expected: None = None) -> Message: ...
def from_json_dict(d: object, expected: type | None = None) -> Message:
    """The message `to_json_dict` made `d` from; MessageDecodeError on anything invalid."""
    r = FieldReader(d, "json")
    name = r.text("type")
    cls = _CLASSES.get(name)
    if cls is None:
        raise MessageDecodeError("bad_type", f"unknown message type {name!r}")
    version = r.integer("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise MessageDecodeError(
            "bad_version", f"format version {version}, this reader reads {FORMAT_VERSION}"
        )
    check_expected(cls, expected)
    if cls is PromptMessage:
        return prompt_from(r)
    if cls is DeadLetter:
        try:
            payload = base64.b64decode(r.text("payload_b64"), validate=True)
        except ValueError as e:  # binascii.Error, or non-ASCII text
            raise MessageDecodeError("bad_field", f"json.payload_b64: not base64 ({e})") from None
        return dead_letter_from(r, payload)
    pts = tuple(
        pseudo_target_from(
            pr,
            token_ids=pr.raw("token_ids"),
            topk_ids=pr.raw("topk_ids"),
            topk_logprobs=_from_null(pr.raw("topk_logprobs"), 2),
            tail_logmass=_from_null(pr.raw("tail_logmass"), 1),
            sampled_logprobs=_from_null(pr.raw("sampled_logprobs"), 1),
        )
        for pr in r.children("pseudo_targets")
    )
    return labeled_from(r, r.raw("prompt_token_ids"), pts)
