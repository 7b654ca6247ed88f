"""The typed messages that flow between the stages, and the rules each one keeps.

Every message is a frozen, slotted, keyword-only dataclass. `__post_init__` checks the
rules below and raises ValueError saying which field is wrong; it also normalises
array-like inputs (lists, tuples, numpy arrays) to a :class:`FrozenArray`: a read-only
numpy array that reads like a tuple (``len``, ``in``, indexing, ``==`` and ``hash`` by
value), so a message is immutable, hashable and compares with `==`, and a decoded message's
arrays view the record's bytes instead of holding a Python object per token.
Log-probabilities are kept at float32 precision (the precision teachers compute them in),
so a float32 wire round trip is exact.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args

import numpy as np
import numpy.typing as npt

from ._checks import (
    FrozenArray,
    check_choice,
    check_finite,
    check_logprobs,
    check_seq,
    check_strings,
    check_text,
    check_timestamp,
    check_token_ids,
    frozen,
)
from .conversation import Turn, check_turns, conversation_text

Origin = Literal["traffic", "feedback", "served"]
"""traffic: a production prompt; feedback: a synthetic prompt asked for by the OOD loop;
served: a prompt the served student answered, captured from its API (``serve.capture``).
Traffic and served prompts are both live traffic."""
Source = Literal["teacher", "student"]
"""Who generated the pseudo-target's tokens (Joint-Teaching scores student PTs too)."""
Decoding = Literal["greedy", "sample", "beam"]
"""How the pseudo-target's tokens were chosen."""

ORIGINS: tuple[str, ...] = get_args(Origin)
SOURCES: tuple[str, ...] = get_args(Source)
DECODINGS: tuple[str, ...] = get_args(Decoding)


def new_id() -> str:
    """A fresh message id: 32 lowercase hex digits of a random uuid4."""
    return uuid.uuid4().hex


# --- messages ------------------------------------------------------------------------------




@dataclass(frozen=True, slots=True, kw_only=True)
class PromptMessage:
    """An unlabeled prompt on the prompts topic, from traffic or from the OOD feedback loop.

    A feedback prompt is a PromptMessage with origin="feedback" (no separate class: it
    differs only in which optional fields are filled), built by the OOD-feedback actor
    from tail prompts; `parent_ids` and `parent_energies` say which tail prompts inspired
    it and how far out they were, so the loop's steering is auditable.
    """

    text: str = ""
    """The prompt text, as the teacher will see it; "" for a conversation."""
    messages: tuple[Turn, ...] = ()
    """A conversation (system, user and assistant turns) instead of text: the teacher and
    the student see it rendered with their chat template. A prompt has text or messages,
    never both."""
    origin: Origin = "traffic"
    """Where the prompt came from."""
    id: str = field(default_factory=new_id)
    """Unique id (the Kafka key; consumers de-duplicate on it). Defaults to `new_id()`."""
    created_at: float = field(default_factory=time.time)
    """When the prompt was produced, unix seconds."""
    kind: str = ""
    """Task tag (for example "add2"), "" when unknown. Free text, used to slice metrics."""
    parent_ids: tuple[str, ...] = ()
    """Feedback only: ids of the tail prompts shown to the teacher to make this one."""
    parent_energies: tuple[float, ...] = ()
    """Feedback only: the student's energy score of each parent (same order), or ()."""
    energy: float | None = None
    """Student energy score of this prompt when it was scored (feedback prompts are scored
    for noise rejection before they are published); None when not scored."""

    def __post_init__(self) -> None:
        check_text("text", self.text)
        turns = check_turns("messages", self.messages)
        if turns and self.text:
            raise ValueError("a prompt is text or messages, not both; send one of them")
        object.__setattr__(self, "messages", turns)
        check_choice("origin", self.origin, ORIGINS)
        check_text("id", self.id, nonempty=True)
        object.__setattr__(self, "created_at", check_timestamp("created_at", self.created_at))
        check_text("kind", self.kind)
        parents = check_strings("parent_ids", self.parent_ids)
        energies = check_seq("parent_energies", self.parent_energies)
        energies = tuple(check_finite(f"parent_energies[{i}]", e) for i, e in enumerate(energies))
        if parents and self.origin != "feedback":
            raise ValueError("parent_ids are for origin='feedback' prompts only")
        if energies and len(energies) != len(parents):
            raise ValueError(
                f"parent_energies has {len(energies)} values for {len(parents)} parent_ids;"
                " give one energy per parent, or none"
            )
        object.__setattr__(self, "parent_ids", parents)
        object.__setattr__(self, "parent_energies", energies)
        if self.energy is not None:
            object.__setattr__(self, "energy", check_finite("energy", self.energy))

    @property
    def is_chat(self) -> bool:
        """True for a conversation."""
        return bool(self.messages)

    @property
    def display_text(self) -> str:
        """The text, or the conversation as "role: content" lines."""
        return conversation_text(self.messages) if self.messages else self.text


@dataclass(frozen=True, slots=True, kw_only=True)
class PseudoTarget:
    """One teacher (or student) output for a prompt, with the teacher's per-token top-k.

    Shapes, with T generated tokens and k top-k entries per token (k = 0 when T = 0):
    token_ids (T,), topk_ids (T, k), topk_logprobs (T, k), tail_logmass (T,),
    sampled_logprobs (T,). All log-probabilities are natural-log, <= 0, never NaN, and may
    be -inf (probability 0). The constructor accepts lists, tuples or numpy arrays and
    stores each as a :class:`FrozenArray` (ids as given, or in the record's u1/u2/u4;
    log-probabilities as float32): read-only arrays are kept without a copy, writeable ones
    are copied. The ``*_array()`` methods give the numpy arrays.
    `PseudoTarget.from_arrays` is the constructor with array-friendly type hints.
    """

    token_ids: Sequence[int]
    """The generated token ids, (T,)."""
    text: str
    """The generated text (decoded token_ids)."""
    source: Source
    """Who generated the tokens."""
    decoding: Decoding
    """How the tokens were chosen."""
    topk_ids: Sequence[Sequence[int]]
    """(T, k): at step t, the k most likely next tokens under the teacher."""
    topk_logprobs: Sequence[Sequence[float]]
    """(T, k): their teacher log-probabilities."""
    tail_logmass: Sequence[float]
    """(T,): log of the teacher's probability mass outside the top-k; -inf when the top-k
    cover everything."""
    sampled_logprobs: Sequence[float]
    """(T,): teacher log-probability of the token actually chosen, token_ids[t]."""

    def __post_init__(self) -> None:
        ids = check_token_ids("token_ids", self.token_ids, 1)
        t = ids.shape[0]
        topk_ids = check_token_ids("topk_ids", self.topk_ids, 2)
        topk_lp = check_logprobs("topk_logprobs", self.topk_logprobs, 2)
        tail = check_logprobs("tail_logmass", self.tail_logmass, 1)
        sampled = check_logprobs("sampled_logprobs", self.sampled_logprobs, 1)
        if topk_ids.shape[0] != t:
            raise ValueError(
                f"topk_ids has {topk_ids.shape[0]} rows for {t} token_ids; need one row per token"
            )
        if topk_lp.shape != topk_ids.shape:
            raise ValueError(
                f"topk_logprobs has shape {topk_lp.shape} but topk_ids {topk_ids.shape}"
            )
        for name, a in (("tail_logmass", tail), ("sampled_logprobs", sampled)):
            if a.shape[0] != t:
                raise ValueError(f"{name} has {a.shape[0]} values for {t} token_ids; need {t}")
        check_text("text", self.text)
        check_choice("source", self.source, SOURCES)
        check_choice("decoding", self.decoding, DECODINGS)
        if t == 0:  # one empty shape, (0, 0), whatever k an empty input had
            topk_ids, topk_lp = topk_ids.reshape(0, 0), topk_lp.reshape(0, 0)
        object.__setattr__(self, "token_ids", frozen(ids, self.token_ids))
        object.__setattr__(self, "topk_ids", frozen(topk_ids, self.topk_ids))
        object.__setattr__(self, "topk_logprobs", frozen(topk_lp, self.topk_logprobs))
        object.__setattr__(self, "tail_logmass", frozen(tail, self.tail_logmass))
        object.__setattr__(self, "sampled_logprobs", frozen(sampled, self.sampled_logprobs))

    @classmethod
    def from_arrays(
        cls,
        *,
        token_ids: npt.ArrayLike,
        text: str,
        source: Source,
        decoding: Decoding,
        topk_ids: npt.ArrayLike,
        topk_logprobs: npt.ArrayLike,
        tail_logmass: npt.ArrayLike,
        sampled_logprobs: npt.ArrayLike,
    ) -> PseudoTarget:
        """Build from numpy arrays or tensors moved to CPU numpy (shapes as in the class)."""
        return cls(
            token_ids=token_ids,  # type: ignore[arg-type]  # normalised in __post_init__
            text=text,
            source=source,
            decoding=decoding,
            topk_ids=topk_ids,  # type: ignore[arg-type]
            topk_logprobs=topk_logprobs,  # type: ignore[arg-type]
            tail_logmass=tail_logmass,  # type: ignore[arg-type]
            sampled_logprobs=sampled_logprobs,  # type: ignore[arg-type]
        )

    @property
    def num_tokens(self) -> int:
        """T, the number of generated tokens."""
        return len(self.token_ids)

    @property
    def k(self) -> int:
        """Top-k entries per token (0 when T = 0)."""
        return int(_values(self.topk_ids).shape[1])

    # The arrays: by default fresh and writeable, the caller's to keep (one vectorised copy,
    # as before); with copy=False, read-only views of the message whenever `dtype` is None or
    # the stored one (ids: int64 when built from Python ints, the record's u1/u2/u4 when
    # decoded; log-probabilities: always float32), so a decoded record is read in place.

    def token_ids_array(self, dtype: npt.DTypeLike | None = np.int32, *, copy: bool = True
                        ) -> npt.NDArray[np.integer]:
        """(T,) token ids; pass dtype=np.int64 for torch indexing (`torch.from_numpy`)."""
        return _values(self.token_ids, dtype, copy)

    def topk_ids_array(self, dtype: npt.DTypeLike | None = np.int32, *, copy: bool = True
                       ) -> npt.NDArray[np.integer]:
        """(T, k) top-k token ids."""
        return _values(self.topk_ids, dtype, copy)

    def topk_logprobs_array(self, *, copy: bool = True) -> npt.NDArray[np.float32]:
        """(T, k) float32 top-k log-probabilities."""
        return _values(self.topk_logprobs, None, copy)

    def tail_logmass_array(self, *, copy: bool = True) -> npt.NDArray[np.float32]:
        """(T,) float32 log-mass outside the top-k."""
        return _values(self.tail_logmass, None, copy)

    def sampled_logprobs_array(self, *, copy: bool = True) -> npt.NDArray[np.float32]:
        """(T,) float32 log-probability of each chosen token."""
        return _values(self.sampled_logprobs, None, copy)


def _values(field: Sequence[Any], dtype: npt.DTypeLike | None = None, copy: bool = False
            ) -> np.ndarray:
    """The numpy array behind a message's array field (a FrozenArray once constructed), in
    `dtype` (None: as stored): a read-only view unless `copy` or a cast makes a new one."""
    a = field.array if isinstance(field, FrozenArray) else np.asarray(field)
    return a.astype(a.dtype if dtype is None else dtype, copy=copy)


@dataclass(frozen=True, slots=True, kw_only=True)
class Timings:
    """Where a labeled example spent its time before the learner saw it, in seconds."""

    label_seconds: float = 0.0
    """Teacher wall time to produce all the example's pseudo-targets."""
    queue_seconds: float = 0.0
    """Time the prompt waited between being produced and labeling starting."""

    def __post_init__(self) -> None:
        for name in ("label_seconds", "queue_seconds"):
            object.__setattr__(
                self, name, check_finite(name, getattr(self, name), nonnegative=True)
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class LabeledExample:
    """A prompt with n >= 1 pseudo-targets: what the teacher puts on the labels topic.

    The labeled stream is also the exportable dataset, so the example carries the prompt
    itself, not only its id.
    """

    prompt_id: str
    """Id of the PromptMessage this labels (de-duplication key downstream)."""
    prompt_text: str
    """The prompt text; for a conversation, the conversation rendered with the teacher's chat
    template (the generation prompt included): what prompt_token_ids encode."""
    prompt_token_ids: Sequence[int]
    """The prompt tokenised with the teacher's (shared) tokenizer, (P,); a FrozenArray."""
    pseudo_targets: tuple[PseudoTarget, ...]
    """n >= 1 pseudo-targets."""
    teacher_id: str
    """Which teacher labeled it: model name and version, for example "demo-teacher@3"."""
    origin: Origin = "traffic"
    """Copied from the prompt."""
    kind: str = ""
    """Copied from the prompt; "" when unknown."""
    timings: Timings = field(default_factory=Timings)
    """Label latency and queue time."""
    created_at: float = field(default_factory=time.time)
    """When the example was labeled, unix seconds."""
    prompt_created_at: float | None = None
    """The prompt's created_at, to measure freshness end to end; None when unknown."""
    messages: tuple[Turn, ...] = ()
    """The conversation a chat prompt was, before rendering; () for a text prompt."""

    def __post_init__(self) -> None:
        check_text("prompt_id", self.prompt_id, nonempty=True)
        check_text("prompt_text", self.prompt_text)
        object.__setattr__(self, "messages", check_turns("messages", self.messages))
        ids = check_token_ids("prompt_token_ids", self.prompt_token_ids, 1)
        object.__setattr__(self, "prompt_token_ids", frozen(ids, self.prompt_token_ids))
        pts = check_seq("pseudo_targets", self.pseudo_targets)
        if not pts:
            raise ValueError("pseudo_targets is empty; a labeled example needs at least one")
        for i, pt in enumerate(pts):
            if not isinstance(pt, PseudoTarget):
                name = type(pt).__name__
                raise ValueError(f"pseudo_targets[{i}] must be a PseudoTarget, got {name}")
        object.__setattr__(self, "pseudo_targets", pts)
        check_text("teacher_id", self.teacher_id, nonempty=True)
        check_choice("origin", self.origin, ORIGINS)
        check_text("kind", self.kind)
        if not isinstance(self.timings, Timings):
            raise ValueError(f"timings must be Timings, got {type(self.timings).__name__}")
        object.__setattr__(self, "created_at", check_timestamp("created_at", self.created_at))
        if self.prompt_created_at is not None:
            value = check_finite("prompt_created_at", self.prompt_created_at, nonnegative=True)
            object.__setattr__(self, "prompt_created_at", value)

    def prompt_token_ids_array(self, dtype: npt.DTypeLike | None = np.int64, *, copy: bool = True
                               ) -> npt.NDArray[np.integer]:
        """(P,) prompt token ids (copy=False: see PseudoTarget's arrays)."""
        return _values(self.prompt_token_ids, dtype, copy)

    @property
    def num_labeled_tokens(self) -> int:
        """Generated tokens over all pseudo-targets."""
        return sum(pt.num_tokens for pt in self.pseudo_targets)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """A record a stage could not handle, kept byte for byte on the dead-letter topic."""

    payload: bytes
    """The original record value, unchanged."""
    topic: str
    """Topic it was consumed from."""
    partition: int
    """Its partition; -1 when it did not come from Kafka."""
    offset: int
    """Its offset; -1 when it did not come from Kafka."""
    reason: str
    """What was wrong, for people (a MessageDecodeError's str, or an exception message)."""
    stage: str
    """Which stage gave up on it, for example "teacher" or "learner"."""
    error_type: str
    """The exception class name, or a MessageDecodeError's reason code."""
    created_at: float = field(default_factory=time.time)
    """When it was dead-lettered, unix seconds."""

    def __post_init__(self) -> None:
        if not isinstance(self.payload, (bytes, bytearray, memoryview)):
            raise ValueError(f"payload must be bytes, got {type(self.payload).__name__}")
        object.__setattr__(self, "payload", bytes(self.payload))
        check_text("topic", self.topic)
        for name in ("partition", "offset"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name} must be int, got {type(value).__name__}")
            if not -1 <= value < 2**63:
                raise ValueError(f"{name} must be >= 0, or -1 for unknown; got {value}")
            object.__setattr__(self, name, int(value))
        for name in ("reason", "stage", "error_type"):
            check_text(name, getattr(self, name))
        object.__setattr__(self, "created_at", check_timestamp("created_at", self.created_at))


Message = PromptMessage | LabeledExample | DeadLetter
"""Anything `encode` writes and `decode` reads."""
MESSAGE_TYPES: tuple[type[PromptMessage], type[LabeledExample], type[DeadLetter]] = (
    PromptMessage,
    LabeledExample,
    DeadLetter,
)
M = TypeVar("M", PromptMessage, LabeledExample, DeadLetter)
