"""The weights store: every published student version as a Hugging Face folder.

Layout under the store's root::

    v000001/                  one version: config.json, model.safetensors, tokenizer files,
        manifest.json         version, parent, learner step, stream offsets, metrics, created_at
    v000002/
    PROMOTED                  the version to serve (written atomically by ``promote``)

Publishing is atomic: the folder is written beside (``.tmp-v...``), every file fsynced, then
renamed into place, so a reader never sees a half-written version. Loading never unpickles:
``save_pretrained`` writes safetensors.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from online_distill.checkpoint import commit_dir, write_atomic

_VERSION_DIR = re.compile(r"^v(\d{6,})$")
PROMOTED = "PROMOTED"


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
    """Where students are published and read from."""

    def publish(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                learner_step: int, offsets: dict[str, int] | None = None,
                metrics: dict[str, float] | None = None) -> Manifest: ...

    def versions(self) -> list[int]: ...

    def manifest(self, version: int) -> Manifest: ...

    def path(self, version: int) -> Path: ...


class LocalWeightsStore:
    """A :class:`WeightsStore` in a local (or mounted) directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def versions(self) -> list[int]:
        """Published versions, oldest first."""
        out = []
        for p in self.root.iterdir():
            m = _VERSION_DIR.match(p.name)
            if m and (p / "manifest.json").is_file():
                out.append(int(m.group(1)))
        return sorted(out)

    def latest(self) -> int | None:
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
        pointer = self.root / PROMOTED
        if not pointer.is_file():
            return None
        text = pointer.read_text().strip()
        return int(text) if text.isdigit() else None

    def promote(self, version: int) -> None:
        """Point PROMOTED at ``version`` atomically (readers see the old or the new value)."""
        if version not in self.versions():
            raise ValueError(f"version {version} is not in {self.root}; "
                             f"published versions: {self.versions()}")
        write_atomic(self.root / PROMOTED, f"{version}\n".encode())

    def prune(self, keep: int, protect: set[int] | None = None) -> list[int]:
        """Delete all but the newest ``keep`` versions; never the promoted one nor ``protect``."""
        versions = self.versions()
        keep_also = set(protect or set()) | {self.promoted()}
        doomed = [v for v in versions[: max(0, len(versions) - keep)] if v not in keep_also]
        for v in doomed:
            shutil.rmtree(self.path(v), ignore_errors=True)
        return doomed

    def manifests(self) -> list[dict[str, Any]]:
        return [asdict(self.manifest(v)) for v in self.versions()]
