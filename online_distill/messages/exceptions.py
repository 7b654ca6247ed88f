"""The one error that decoding a message can raise."""

from __future__ import annotations

from typing import Literal, get_args

DecodeReason = Literal[
    "not_bytes",  # the input is not bytes, bytearray or memoryview
    "oversize",  # longer than max_bytes
    "truncated",  # fewer bytes than the prefix or the header says
    "trailing_bytes",  # more bytes than the prefix and header account for
    "bad_magic",  # does not start with the magic bytes: not an online-distill message
    "bad_version",  # a format version this decoder does not read
    "bad_type",  # an unknown message type tag or "type" name
    "wrong_type",  # a valid message, but not of the type the caller expected
    "bad_checksum",  # CRC-32 mismatch: the bytes were corrupted on the way
    "bad_header",  # the header is not a UTF-8 JSON object
    "bad_field",  # a field is missing or has the wrong JSON type
    "bad_json",  # a foreign prompt that starts with '{' but is not a JSON object with "text"
    "invalid",  # well-formed, but the message breaks a rule (shapes, logprobs > 0, ...)
]
"""Why a message could not be decoded: a small fixed set, fit for a metrics label."""

DECODE_REASONS: tuple[str, ...] = get_args(DecodeReason)


class MessageDecodeError(ValueError):
    """Input that is not a valid online-distill message.

    `decode` and `from_json_dict` raise this and nothing else on bad input, so a consumer
    needs one `except` to dead-letter a bad record and go on. `reason` is one of
    `DecodeReason`; `str(err)` starts with it and says what was wrong, for example
    ``truncated: header says 812 bytes of arrays, 40 present``.
    """

    reason: DecodeReason
    detail: str

    def __init__(self, reason: DecodeReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type[MessageDecodeError], tuple[DecodeReason, str]]:
        # Keep the two-argument constructor working across pickling (Ray ships errors).
        return (type(self), (self.reason, self.detail))
