"""The binary wire format of messages on Kafka topics: `encode` and `decode`.

Every message is a 17-byte prefix, a small UTF-8 JSON header with the scalar fields, and a
section of raw little-endian arrays. All integers in the prefix are little-endian.

=======  ======  ============================================================================
offset   size    field
=======  ======  ============================================================================
0        3       magic ``b"ODM"``
3        1       format version, uint8; this decoder reads 1
4        1       message type tag, uint8: 1 PromptMessage, 2 LabeledExample, 3 DeadLetter
5        4       H, header length in bytes, uint32
9        4       A, array section length in bytes, uint32
13       4       CRC-32 (zlib) of bytes [0, 13) followed by bytes [17, 17 + H + A)
17       H       header: a JSON object in UTF-8 (field names as in the dataclasses)
17 + H   A       arrays: raw little-endian values, back to back, no padding
=======  ======  ============================================================================

The message is exactly 17 + H + A bytes. Header and arrays per type:

- PromptMessage: header = all fields; A = 0.
- DeadLetter: header = all fields but the payload; arrays = the payload bytes verbatim.
- LabeledExample: header = the scalar fields, plus ``"ids"`` ("u1", "u2" or "u4": the
  smallest unsigned type that holds every token id in the message), ``"logprobs"`` ("f2" or
  "f4"), ``"prompt_len"`` (P) and ``"pseudo_targets"``: one object per PT with its text,
  source, decoding, ``"T"`` and ``"k"``. The arrays, in this order (``ids``/``lp`` are the
  header's two types)::

      prompt_token_ids                 P    x ids
      then for each pseudo-target:
        token_ids                      T    x ids
        topk_ids                       T*k  x ids   (row-major, (T, k))
        topk_logprobs                  T*k  x lp    (row-major, (T, k))
        tail_logmass                   T    x lp
        sampled_logprobs               T    x lp

Precision: ``logprob_dtype="float16"`` (the default) halves the log-probability bytes at a
relative error of at most 2**-11 per value: an absolute error <= 2.4e-4 for log-probs in
[-1, 0], <= 3.9e-3 in [-16, -8], i.e. each probability off by at most 0.4% of itself for
any token likelier than e**-16. Values below -65504 become -inf (probability 0). That is
well inside the noise of a distillation target; pick "float32" for bit-exact round trips
(messages already hold float32 values, so float32 loses nothing).

Versioning: the version byte changes when a field's meaning or the layout changes; a
decoder refuses versions it does not know (reason "bad_version"). Unknown header keys are
ignored, so an optional field can be added without a version change.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any, Literal, overload

import numpy as np

from ._fields import (
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
from .exceptions import DecodeReason, MessageDecodeError
from .schema import DeadLetter, LabeledExample, M, Message, PromptMessage, PseudoTarget

MAGIC = b"ODM"
FORMAT_VERSION = 1
PREFIX_SIZE = 17
DEFAULT_MAX_BYTES = 16 * 2**20
"""Refuse larger inputs before parsing them. Kafka's own default record limit is ~1 MiB."""

LogprobDtype = Literal["float16", "float32"]

_TAGS: dict[type, int] = {PromptMessage: 1, LabeledExample: 2, DeadLetter: 3}
_CLASSES: dict[int, type] = {tag: cls for cls, tag in _TAGS.items()}
_LENGTHS = struct.Struct("<II")  # H, A
_CRC = struct.Struct("<I")
_ID_DTYPES: dict[str, np.dtype] = {
    "u1": np.dtype("<u1"),
    "u2": np.dtype("<u2"),
    "u4": np.dtype("<u4"),
}
_LP_DTYPES: dict[str, np.dtype] = {"f2": np.dtype("<f2"), "f4": np.dtype("<f4")}
_LP_CODES: dict[str, str] = {"float16": "f2", "float32": "f4"}


def encode(msg: Message, *, logprob_dtype: LogprobDtype = "float16") -> bytes:
    """`msg` in the wire format above. `logprob_dtype` only affects LabeledExample."""
    arrays = b""
    if isinstance(msg, PromptMessage):
        header: dict[str, Any] = prompt_fields(msg)
    elif isinstance(msg, LabeledExample):
        header, arrays = _labeled_body(msg, _LP_CODES[logprob_dtype])
    elif isinstance(msg, DeadLetter):
        header, arrays = dead_letter_fields(msg), msg.payload
    else:
        raise TypeError(f"encode: not a message: {type(msg).__name__}")
    head = json.dumps(header, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    head_bytes = head.encode("utf-8")
    if len(head_bytes) >= 2**32 or len(arrays) >= 2**32:
        raise ValueError("encode: message too large for the wire format (4 GiB per section)")
    start = MAGIC + bytes([FORMAT_VERSION, _TAGS[type(msg)]])
    start += _LENGTHS.pack(len(head_bytes), len(arrays))
    crc = zlib.crc32(arrays, zlib.crc32(head_bytes, zlib.crc32(start)))
    return b"".join((start, _CRC.pack(crc), head_bytes, arrays))


def _labeled_body(msg: LabeledExample, lp_code: str) -> tuple[dict[str, Any], bytes]:
    # Arrays in wire order, as the message stores them (views) until the dtypes are known.
    id_arrays: list[np.ndarray] = [msg.prompt_token_ids_array(None, copy=False)]
    parts: list[tuple[str, np.ndarray]] = [("ids", id_arrays[0])]
    for pt in msg.pseudo_targets:
        ids, topk = pt.token_ids_array(None, copy=False), pt.topk_ids_array(None, copy=False)
        id_arrays += [ids, topk]
        parts += [("ids", ids), ("ids", topk), ("lp", pt.topk_logprobs_array(copy=False))]
        parts += [("lp", pt.tail_logmass_array(copy=False)),
                  ("lp", pt.sampled_logprobs_array(copy=False))]
    max_id = max((int(a.max()) for a in id_arrays if a.size), default=0)
    id_code = "u1" if max_id < 2**8 else "u2" if max_id < 2**16 else "u4"
    dtypes = {"ids": _ID_DTYPES[id_code], "lp": _LP_DTYPES[lp_code]}
    with np.errstate(over="ignore"):  # float16: below -65504 is -inf, documented above
        arrays = b"".join(a.astype(dtypes[kind]).tobytes() for kind, a in parts)
    header = labeled_fields(msg)
    header["ids"], header["logprobs"] = id_code, lp_code
    header["prompt_len"] = len(id_arrays[0])
    header["pseudo_targets"] = [_pt_header(pt) for pt in msg.pseudo_targets]
    return header, arrays


def _pt_header(pt: PseudoTarget) -> dict[str, Any]:
    return {**pseudo_target_fields(pt), "T": pt.num_tokens, "k": pt.k}


@overload
def decode(data: bytes | bytearray | memoryview, expected: type[M], max_bytes: int = ...) -> M: ...
@overload
def decode(
    data: bytes | bytearray | memoryview, expected: None = None, max_bytes: int = ...
) -> Message: ...
def decode(
    data: bytes | bytearray | memoryview,
    expected: type | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Message:
    """The message in `data`; raises MessageDecodeError, and only that, on any bad input.

    `expected`: the message class the caller wants; any other type is refused with reason
    "wrong_type" before its body is parsed. `max_bytes`: longer input is refused at once.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MessageDecodeError("not_bytes", f"expected bytes, got {type(data).__name__}")
    buf = bytes(data)
    n = len(buf)
    if n > max_bytes:
        raise MessageDecodeError("oversize", f"{n} bytes > max_bytes={max_bytes}")
    if buf[:3] != MAGIC[: min(n, 3)]:
        raise MessageDecodeError("bad_magic", f"starts with {buf[:3]!r}, not {MAGIC!r}")
    _need(n, 4, "the magic and version")
    if buf[3] != FORMAT_VERSION:
        newer = "; upgrade online-distill" if buf[3] > FORMAT_VERSION else ""
        raise MessageDecodeError(
            "bad_version", f"format version {buf[3]}, this decoder reads {FORMAT_VERSION}{newer}"
        )
    _need(n, 5, "the type tag")
    cls = _CLASSES.get(buf[4])
    if cls is None:
        raise MessageDecodeError("bad_type", f"unknown message type tag {buf[4]}")
    check_expected(cls, expected)
    _need(n, PREFIX_SIZE, "the prefix")
    h_len, a_len = _LENGTHS.unpack_from(buf, 5)
    total = PREFIX_SIZE + h_len + a_len
    if n < total:
        raise MessageDecodeError(
            "truncated", f"prefix says {total} bytes ({h_len} header, {a_len} arrays), {n} present"
        )
    if n > total:
        raise MessageDecodeError("trailing_bytes", f"prefix says {total} bytes, {n} present")
    crc = zlib.crc32(buf[PREFIX_SIZE:], zlib.crc32(buf[:13]))
    if crc != _CRC.unpack_from(buf, 13)[0]:
        raise MessageDecodeError("bad_checksum", "CRC-32 mismatch: the bytes were corrupted")
    header = FieldReader(_parse_header(buf[PREFIX_SIZE : PREFIX_SIZE + h_len]), "header")
    arrays = memoryview(buf)[PREFIX_SIZE + h_len :]
    if cls is PromptMessage:
        if a_len:
            raise MessageDecodeError("trailing_bytes", f"a prompt has no arrays, got {a_len} bytes")
        return prompt_from(header)
    if cls is DeadLetter:
        return dead_letter_from(header, bytes(arrays))
    return _labeled_from_body(header, arrays)


def _need(n: int, size: int, what: str) -> None:
    if n < size:
        raise MessageDecodeError("truncated", f"{n} bytes, too short for {what} ({size})")


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _parse_header(raw: bytes) -> object:
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError included
        raise MessageDecodeError("bad_header", f"header is not UTF-8 JSON ({e})") from None


def _dtype(r: FieldReader, key: str, table: dict[str, np.dtype]) -> np.dtype:
    code = r.text(key)
    if code not in table:
        raise MessageDecodeError("bad_field", f"header.{key}: {code!r} is not one of {list(table)}")
    return table[code]


def _count(r: FieldReader, key: str) -> int:
    value = r.integer(key)
    if value < 0:
        raise MessageDecodeError("bad_field", f"{r.where}.{key}: {value} is negative")
    return value


def _labeled_from_body(r: FieldReader, arrays: memoryview) -> LabeledExample:
    ids, lp = _dtype(r, "ids", _ID_DTYPES), _dtype(r, "logprobs", _LP_DTYPES)
    p = _count(r, "prompt_len")
    shapes: list[tuple[FieldReader, int, int]] = []
    for pr in r.children("pseudo_targets"):
        t, k = _count(pr, "T"), _count(pr, "k")
        if t == 0 and k != 0:
            raise MessageDecodeError("bad_field", f"{pr.where}: k={k} with T=0; k must be 0")
        shapes.append((pr, t, k))
    per_id, per_lp = ids.itemsize, lp.itemsize
    need = p * per_id + sum(t * (1 + k) * per_id + t * (k + 2) * per_lp for _, t, k in shapes)
    if need != len(arrays):
        reason: DecodeReason = "truncated" if need > len(arrays) else "trailing_bytes"
        raise MessageDecodeError(
            reason, f"header says {need} bytes of arrays, {len(arrays)} present"
        )
    offset = 0

    def take(dtype: np.dtype, count: int) -> np.ndarray:
        nonlocal offset
        a = np.frombuffer(arrays, dtype=dtype, count=count, offset=offset)
        offset += count * dtype.itemsize
        return a

    # Every array is a read-only view of `arrays` (the record's bytes): the messages keep
    # them as they are, except float16 log-probabilities, cast once to float32.
    prompt_ids = take(ids, p)
    pts = tuple(
        pseudo_target_from(
            pr,
            token_ids=take(ids, t),
            topk_ids=take(ids, t * k).reshape(t, k),
            topk_logprobs=take(lp, t * k).reshape(t, k),
            tail_logmass=take(lp, t),
            sampled_logprobs=take(lp, t),
        )
        for pr, t, k in shapes
    )
    return labeled_from(r, prompt_ids, pts)
