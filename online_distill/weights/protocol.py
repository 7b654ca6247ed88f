"""What the stations need from a weights store, apart from where it keeps its files.

The learner publishes, the gate judges, promotes and prunes, the Serve replicas, the OOD stage
and the status line follow the promoted version, and the operator verbs promote and roll
back. All of them type against :class:`WeightsStore`; only the constructors
(:func:`online_distill.weights.store.store_for`) name the concrete
:class:`~online_distill.weights.store.LocalWeightsStore`, so a store on object storage is a
new class, not a change to every consumer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # typing only: the Protocol itself loads nothing
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class Manifest:
    """What a version is: where it came from and how far the stream had been read."""

    version: int
    parent: int | None
    learner_step: int
    offsets: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)


class WeightsStore(Protocol):
    """Where student versions are published, judged, promoted and read from."""

    @property
    def root(self) -> Path:
        """Where the store lives (named in messages to the operator)."""
        ...

    # ---------------------------------------------------------------- versions
    def versions(self) -> list[int]:
        """Published versions, oldest first."""
        ...

    def latest(self) -> int | None:
        """The newest published version, or None when there is none."""
        ...

    def path(self, version: int) -> Path:
        """The folder of ``version`` (a Hugging Face model folder)."""
        ...

    def manifest(self, version: int) -> Manifest:
        """Where ``version`` came from; FileNotFoundError once it is pruned."""
        ...

    def publish(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                learner_step: int, offsets: dict[str, int] | None = None,
                metrics: dict[str, float] | None = None) -> Manifest:
        """Write the next version atomically; returns its manifest."""
        ...

    def load(self, version: int, device: str = "cpu"
             ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """``version`` for inference (safetensors only, eval mode) and its tokenizer."""
        ...

    def prune(self, keep: int, protect: set[int] | None = None) -> list[int]:
        """Delete all but the newest ``keep`` versions, never the promoted one nor
        ``protect``; returns the deleted versions."""
        ...

    # ---------------------------------------------------------------- promotion
    def promoted(self) -> int | None:
        """The version to serve, or None before the first promotion."""
        ...

    def promotion(self) -> tuple[int | None, float]:
        """(promoted version, unix time it takes effect); (None, 0.0) before any."""
        ...

    def promote(self, version: int, reason: str = "gate", by: str = "gate") -> None:
        """Serve ``version`` from now on (ValueError if it is not kept)."""
        ...

    def history(self) -> list[dict[str, Any]]:
        """Every promotion, oldest first."""
        ...

    def rollback_target(self) -> int | None:
        """The version served before the current one that is still kept, or None."""
        ...

    def rollback(self, version: int | None = None, by: str = "operator") -> int:
        """Serve ``version`` (default: :meth:`rollback_target`); returns it (ValueError
        when there is nothing to roll back to)."""
        ...

    # ---------------------------------------------------------------- the gate's word
    def record_verdict(self, version: int, verdict: dict[str, Any]) -> None:
        """Keep the gate's verdict on ``version`` (beside it and in the verdict history)."""
        ...

    def verdict(self, version: int) -> dict[str, Any] | None:
        """The gate's verdict on ``version``, or None before it is judged."""
        ...
