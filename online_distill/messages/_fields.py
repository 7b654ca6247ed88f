"""Scalar fields of each message as a JSON object, shared by the wire header and the JSON view.

Both encodings write a message's scalar fields under the dataclass field names; they differ
only in where the arrays go (raw bytes after the header, or JSON lists). Reading is strict
about types (every problem is a MessageDecodeError) and lenient about unknown keys, which
are ignored so that a newer producer can add an optional field without breaking older
consumers during a rolling upgrade.
"""

from __future__ import annotations

from typing import Any

from .exceptions import MessageDecodeError
from .schema import DeadLetter, LabeledExample, PromptMessage, PseudoTarget, Timings

TYPE_NAMES: dict[type, str] = {
    PromptMessage: "prompt",
    LabeledExample: "labeled_example",
    DeadLetter: "dead_letter",
}
"""The "type" of each message in the JSON view, and its name in error messages."""

_MISSING: Any = object()


class FieldReader:
    """Typed reads from one decoded JSON object; `where` names it in error messages."""

    def __init__(self, obj: object, where: str) -> None:
        if not isinstance(obj, dict):
            raise MessageDecodeError("bad_field", f"{where}: expected an object, got {_kind(obj)}")
        self._obj: dict[str, Any] = obj
        self.where = where

    def _get(self, key: str, default: Any) -> Any:
        if key in self._obj:
            return self._obj[key]
        if default is _MISSING:
            raise MessageDecodeError("bad_field", f"{self.where}: missing field {key!r}")
        return default

    def _fail(self, key: str, expected: str, value: object) -> MessageDecodeError:
        return MessageDecodeError(
            "bad_field", f"{self.where}.{key}: expected {expected}, got {_kind(value)}"
        )

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        """The value as JSON decoded it, unchecked (arrays; the constructor checks them)."""
        return self._get(key, default)

    def text(self, key: str, default: Any = _MISSING) -> str:
        value = self._get(key, default)
        if not isinstance(value, str):
            raise self._fail(key, "a string", value)
        return value

    def integer(self, key: str, default: Any = _MISSING) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
            raise self._fail(key, "an int64", value)
        return value

    def number(self, key: str, default: Any = _MISSING) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._fail(key, "a number", value)
        try:
            return float(value)
        except OverflowError:  # an int too large for a float
            raise self._fail(key, "a float64", value) from None

    def optional_number(self, key: str) -> float | None:
        return None if self._get(key, None) is None else self.number(key)

    def texts(self, key: str) -> tuple[str, ...]:
        value = self._get(key, [])
        if not isinstance(value, list):
            raise self._fail(key, "a list of strings", value)
        return tuple(FieldReader({key: v}, self.where).text(key) for v in value)

    def numbers(self, key: str) -> tuple[float, ...]:
        value = self._get(key, [])
        if not isinstance(value, list):
            raise self._fail(key, "a list of numbers", value)
        return tuple(FieldReader({key: v}, self.where).number(key) for v in value)

    def turns(self, key: str) -> tuple[dict[str, str], ...]:
        """A conversation: a list of ``{"role": str, "content": str}`` objects (roles are
        checked by the message's constructor)."""
        return tuple({"role": c.text("role"), "content": c.text("content")}
                     for c in (self.children(key) if key in self._obj else []))

    def child(self, key: str) -> FieldReader:
        return FieldReader(self._get(key, _MISSING), f"{self.where}.{key}")

    def children(self, key: str) -> list[FieldReader]:
        value = self._get(key, _MISSING)
        if not isinstance(value, list):
            raise self._fail(key, "a list of objects", value)
        return [FieldReader(v, f"{self.where}.{key}[{i}]") for i, v in enumerate(value)]


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def build(cls: type, **fields: Any) -> Any:
    """`cls(**fields)`, with the constructor's ValueError turned into MessageDecodeError."""
    try:
        return cls(**fields)
    except (ValueError, TypeError, OverflowError, RecursionError) as e:
        raise MessageDecodeError("invalid", f"{cls.__name__}: {e}") from None


# --- per type: scalar fields out, and back in with the arrays supplied by the caller -------


def prompt_fields(m: PromptMessage) -> dict[str, Any]:
    return {
        "id": m.id,
        "text": m.text,
        **({"messages": [t.as_dict() for t in m.messages]} if m.messages else {}),
        "origin": m.origin,
        "kind": m.kind,
        "created_at": m.created_at,
        "parent_ids": list(m.parent_ids),
        "parent_energies": list(m.parent_energies),
        "energy": m.energy,
    }


def prompt_from(r: FieldReader) -> PromptMessage:
    return build(
        PromptMessage,
        id=r.text("id"),
        text=r.text("text", ""),
        messages=r.turns("messages"),
        origin=r.text("origin"),
        kind=r.text("kind", ""),
        created_at=r.number("created_at"),
        parent_ids=r.texts("parent_ids"),
        parent_energies=r.numbers("parent_energies"),
        energy=r.optional_number("energy"),
    )


def pseudo_target_fields(pt: PseudoTarget) -> dict[str, Any]:
    return {"text": pt.text, "source": pt.source, "decoding": pt.decoding}


def pseudo_target_from(r: FieldReader, **arrays: Any) -> PseudoTarget:
    return build(
        PseudoTarget,
        text=r.text("text"),
        source=r.text("source"),
        decoding=r.text("decoding"),
        **arrays,
    )


def labeled_fields(m: LabeledExample) -> dict[str, Any]:
    """Everything but prompt_token_ids and pseudo_targets."""
    return {
        "prompt_id": m.prompt_id,
        "prompt_text": m.prompt_text,
        "origin": m.origin,
        "kind": m.kind,
        "teacher_id": m.teacher_id,
        "timings": {
            "label_seconds": m.timings.label_seconds,
            "queue_seconds": m.timings.queue_seconds,
        },
        "created_at": m.created_at,
        "prompt_created_at": m.prompt_created_at,
        **({"messages": [t.as_dict() for t in m.messages]} if m.messages else {}),
    }


def labeled_from(
    r: FieldReader, prompt_token_ids: Any, pseudo_targets: tuple[PseudoTarget, ...]
) -> LabeledExample:
    t = r.child("timings")
    timings = build(
        Timings, label_seconds=t.number("label_seconds"), queue_seconds=t.number("queue_seconds")
    )
    return build(
        LabeledExample,
        prompt_id=r.text("prompt_id"),
        prompt_text=r.text("prompt_text"),
        prompt_token_ids=prompt_token_ids,
        pseudo_targets=pseudo_targets,
        teacher_id=r.text("teacher_id"),
        origin=r.text("origin"),
        kind=r.text("kind", ""),
        timings=timings,
        created_at=r.number("created_at"),
        prompt_created_at=r.optional_number("prompt_created_at"),
        messages=r.turns("messages"),
    )


def dead_letter_fields(m: DeadLetter) -> dict[str, Any]:
    """Everything but the payload."""
    return {
        "topic": m.topic,
        "partition": m.partition,
        "offset": m.offset,
        "reason": m.reason,
        "stage": m.stage,
        "error_type": m.error_type,
        "created_at": m.created_at,
    }


def dead_letter_from(r: FieldReader, payload: bytes) -> DeadLetter:
    return build(
        DeadLetter,
        payload=payload,
        topic=r.text("topic"),
        partition=r.integer("partition"),
        offset=r.integer("offset"),
        reason=r.text("reason"),
        stage=r.text("stage"),
        error_type=r.text("error_type"),
        created_at=r.number("created_at"),
    )


def check_expected(actual: type, expected: type | None) -> None:
    """Raise wrong_type unless `expected` is None or `actual`."""
    if expected is not None and actual is not expected:
        raise MessageDecodeError(
            "wrong_type", f"expected {expected.__name__}, got {actual.__name__}"
        )
