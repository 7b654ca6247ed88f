"""Typed messages between the stages of online-distill, and their two encodings.

The messages (frozen dataclasses, `schema.py`):

- `PromptMessage`: an unlabeled prompt on the prompts topic; origin "traffic", or
  "feedback" for synthetic prompts from the OOD loop (with `parent_ids`/`parent_energies`).
- `LabeledExample`: a prompt with n >= 1 `PseudoTarget`s (tokens, text, per-token top-k ids
  and log-probs, tail mass, chosen-token log-probs) and `Timings`; the labels topic.
- `DeadLetter`: a record a stage gave up on, byte for byte, with where it came from and why.

The encodings:

- `encode(msg) -> bytes` / `decode(data, expected=None) -> msg`: the compact binary wire
  format used on Kafka topics (byte layout in `wire.py`): a 17-byte prefix (magic ``ODM``,
  version, type tag, lengths, CRC-32), a JSON header, raw little-endian arrays.
- `to_json_dict(msg) -> dict` / `from_json_dict(d) -> msg`: readable, strict JSON for
  people and for export (conventions in `json_view.py`).

Both decoders raise `MessageDecodeError` (a ValueError) and nothing else on bad input; its
`reason` is one of `DECODE_REASONS`, a small fixed set fit for a metrics label.
"""

from ._checks import LOGPROB_EPS, MAX_TOKEN_ID
from .conversation import Role, Turn, conversation_text
from .exceptions import DECODE_REASONS, DecodeReason, MessageDecodeError
from .json_view import from_json_dict, to_json_dict
from .schema import (
    MESSAGE_TYPES,
    DeadLetter,
    Decoding,
    LabeledExample,
    Message,
    Origin,
    PromptMessage,
    PseudoTarget,
    Source,
    Timings,
    new_id,
)
from .wire import DEFAULT_MAX_BYTES, FORMAT_VERSION, MAGIC, LogprobDtype, decode, encode

__all__ = [
    "DECODE_REASONS",
    "DEFAULT_MAX_BYTES",
    "FORMAT_VERSION",
    "LOGPROB_EPS",
    "MAGIC",
    "MAX_TOKEN_ID",
    "MESSAGE_TYPES",
    "DeadLetter",
    "DecodeReason",
    "Decoding",
    "LabeledExample",
    "LogprobDtype",
    "Message",
    "MessageDecodeError",
    "Origin",
    "PromptMessage",
    "PseudoTarget",
    "Role",
    "Source",
    "Timings",
    "Turn",
    "conversation_text",
    "decode",
    "encode",
    "from_json_dict",
    "new_id",
    "to_json_dict",
]
