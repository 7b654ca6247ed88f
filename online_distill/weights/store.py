"""The weights store: every published student version as a Hugging Face folder.

Layout under the store's root::

    v000001/                  one version: config.json, model.safetensors, tokenizer files,
        manifest.json         version, parent, learner step, stream offsets, metrics, created_at
    v000002/
    PROMOTED                  the version to serve and when it takes effect: "<version> <unix s>"
    promotions.jsonl          every change of PROMOTED: version, previous, reason, by, at
    v000002/gate.json         the evaluation gate's verdict on a version (scores, reasons)
    verdicts.jsonl            every verdict, one per line (the history `report` draws)

Publishing is atomic: the folder is written beside (``.tmp-v...``), every file fsynced, then
renamed into place, so a reader never sees a half-written version. Loading never unpickles:
``save_pretrained`` writes safetensors and :meth:`LocalWeightsStore.load` reads only
safetensors (``use_safetensors=True``), so a planted pickle file is an error, not code run.

``PROMOTED`` is the single source of truth for what is served; ``promotions.jsonl`` is the
history that ``rollback`` walks back through. A promotion takes effect ``swap_delay_s``
after it is written: every Serve replica loads the new version in the meantime and switches
at that same moment, so a client never sees the version go backwards by being routed from a
replica that switched to one that has not.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from online_distill.config import Config
from online_distill.models.loader import load_model
from online_distill.weights.atomic import commit_dir, write_atomic
from online_distill.weights.protocol import Manifest, WeightsStore

_VERSION_DIR = re.compile(r"^v(\d{6,})$")
PROMOTED = "PROMOTED"
HISTORY = "promotions.jsonl"
VERDICT = "gate.json"
VERDICTS = "verdicts.jsonl"
__all__ = ["HISTORY", "PROMOTED", "VERDICT", "VERDICTS", "LocalWeightsStore", "Manifest",
           "WeightsStore", "store_for"]  # Manifest and WeightsStore live in protocol.py


class LocalWeightsStore:
    """A :class:`WeightsStore` in a local (or mounted) directory."""

    root: Path

    def __init__(self, root: str | Path, swap_delay_s: float = 0.0) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.swap_delay_s = swap_delay_s

    def versions(self) -> list[int]:
        """Published versions, oldest first."""
        out = []
        for p in self.root.iterdir():
            m = _VERSION_DIR.match(p.name)
            if m and (p / "manifest.json").is_file():
                out.append(int(m.group(1)))
        return sorted(out)

    def latest(self) -> int | None:
        """The newest published version, or None when there is none."""
        versions = self.versions()
        return versions[-1] if versions else None

    def path(self, version: int) -> Path:
        return self.root / f"v{version:06d}"

    def manifest(self, version: int) -> Manifest:
        data = json.loads((self.path(version) / "manifest.json").read_text())
        return Manifest(**data)

    def publish(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                learner_step: int, offsets: dict[str, int] | None = None,
                metrics: dict[str, float] | None = None) -> Manifest:
        """Write the next version atomically; returns its manifest."""
        parent = self.latest()
        version = (parent or 0) + 1
        manifest = Manifest(version, parent, learner_step, dict(offsets or {}),
                            dict(metrics or {}))
        tmp = self.root / f".tmp-v{version:06d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(str(tmp))  # safetensors
        tokenizer.save_pretrained(str(tmp))
        (tmp / "manifest.json").write_text(json.dumps(asdict(manifest), indent=2))
        commit_dir(tmp, self.path(version))
        return manifest

    def promoted(self) -> int | None:
        """The version the serving side should load, or None before the first promotion."""
        return self.promotion()[0]

    def promotion(self) -> tuple[int | None, float]:
        """(promoted version, unix time it takes effect); (None, 0) before any promotion."""
        try:
            fields = (self.root / PROMOTED).read_text().split()
        except FileNotFoundError:
            return None, 0.0
        if not fields or not fields[0].isdigit():
            return None, 0.0
        return int(fields[0]), float(fields[1]) if len(fields) > 1 else 0.0

    def promote(self, version: int, reason: str = "gate", by: str = "gate") -> None:
        """Point PROMOTED at ``version`` atomically (readers see the old or the new value),
        then append the change to the promotion history."""
        if version not in self.versions():
            raise ValueError(f"version {version} is not in {self.root}; "
                             f"published versions: {self.versions()}")
        previous = self.promoted()
        now = time.time()
        effective = now + self.swap_delay_s
        write_atomic(self.root / PROMOTED, f"{version} {effective:.3f}\n".encode())
        entry = {"version": version, "previous": previous, "reason": reason, "by": by,
                 "at": now, "effective_at": effective}
        with open(self.root / HISTORY, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def history(self) -> list[dict[str, Any]]:
        """Every promotion, oldest first (a torn last line after a crash is skipped)."""
        path = self.root / HISTORY
        if not path.is_file():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def rollback_target(self) -> int | None:
        """The version served before the current one that still exists, or None.

        Walks the history backwards past the current version and past every version that
        was itself rolled back from, so repeated rollbacks keep going back in time.
        """
        current = self.promoted()
        history = self.history()
        rolled_back = {h["previous"] for h in history if h.get("reason") == "rollback"}
        existing = set(self.versions())
        for entry in reversed(history):
            v = entry["version"]
            if v != current and v not in rolled_back and v in existing:
                return v
        return None

    def rollback(self, version: int | None = None, by: str = "operator") -> int:
        """Serve ``version`` (default: the previously served one); returns the version."""
        target = self.rollback_target() if version is None else version
        if target is None:
            raise ValueError(f"nothing to roll back to in {self.root}: no earlier promoted "
                             f"version is still kept (versions: {self.versions()})")
        self.promote(target, reason="rollback", by=by)
        return target

    def record_verdict(self, version: int, verdict: dict[str, Any]) -> None:
        """Store the gate's verdict beside the version (atomically), and append it to the
        store's verdict history (kept after the version itself is pruned)."""
        write_atomic(self.path(version) / VERDICT, json.dumps(verdict, indent=2).encode())
        with open(self.root / VERDICTS, "a") as f:
            f.write(json.dumps(verdict) + "\n")

    def verdict(self, version: int) -> dict[str, Any] | None:
        """The gate's verdict on ``version``, or None before it is judged."""
        path = self.path(version) / VERDICT
        return json.loads(path.read_text()) if path.is_file() else None

    def load(self, version: int, device: str = "cpu"
             ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """Load a version for inference: safetensors only, eval mode."""
        return load_model(self.path(version), device)

    def prune(self, keep: int, protect: set[int] | None = None) -> list[int]:
        """Delete all but the newest ``keep`` versions; never the promoted one nor ``protect``."""
        versions = self.versions()
        keep_also = set(protect or set()) | {self.promoted()}
        doomed = [v for v in versions[: max(0, len(versions) - keep)] if v not in keep_also]
        for v in doomed:
            shutil.rmtree(self.path(v), ignore_errors=True)
        return doomed

    def manifests(self) -> list[dict[str, Any]]:
        """Every kept version's manifest as a dict, oldest first."""
        return [asdict(self.manifest(v)) for v in self.versions()]


def store_for(cfg: Config) -> LocalWeightsStore:
    """The store a config names, with its promotions' swap delay."""
    return LocalWeightsStore(cfg.gate.weights_dir, swap_delay_s=cfg.serve.swap_delay_s)
