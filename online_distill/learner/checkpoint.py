"""Atomic learner checkpoints on a local (or mounted) filesystem.

Layout under the checkpoint directory::

    step-00000120/            one checkpoint per folder
        model.safetensors     the student's weights (safetensors: never unpickled)
        trainer_state.pt      optimizer, scheduler and RNG states (loaded weights_only=True)
        meta.json             step, skipped steps, and the caller's ``progress`` (offsets)
    LATEST                    name of the newest complete checkpoint folder

Write protocol (so a crash at any point leaves the previous checkpoint intact):

1. write every file into ``.tmp-step-XXXXXXXX-<pid>`` beside the final folder;
2. fsync each file, then the temporary folder;
3. rename the folder to ``step-XXXXXXXX`` (atomic on POSIX) and fsync the parent;
4. write ``LATEST`` through a temporary file + ``os.replace`` + fsync;
5. only then prune old checkpoints (never the one LATEST names).

A caller commits stream offsets only after :func:`save_checkpoint` returns.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from online_distill.weights.atomic import commit_dir, write_atomic

LATEST = "LATEST"
_PREFIX = "step-"


def save_checkpoint(
    root: Path,
    step: int,
    model: torch.nn.Module,
    state: dict[str, Any],
    meta: dict[str, Any],
    keep: int = 3,
) -> Path:
    """Write one checkpoint following the module's protocol; returns its folder."""
    root.mkdir(parents=True, exist_ok=True)
    name = f"{_PREFIX}{step:08d}"
    final = root / name
    tmp = root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        # Step 1: every file into the temporary folder.
        save_model(model, str(tmp / "model.safetensors"))  # handles tied weights
        torch.save(state, tmp / "trainer_state.pt")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        # Steps 2-3: make the bytes durable, then publish the folder (a re-save of the same
        # step replaces the old one).
        if final.exists():
            shutil.rmtree(final)
        commit_dir(tmp, final)
    except BaseException:  # a full disk, say: free what the half-written one took, re-raise
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Step 4: point LATEST at it.
    write_atomic(root / LATEST, name.encode())
    # Step 5: prune.
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX))
    for old in folders[: max(0, len(folders) - max(1, keep))]:
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The folder LATEST names, or None when there is no complete checkpoint."""
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    folder = root / pointer.read_text().strip()
    return folder if (folder / "meta.json").is_file() else None


def load_checkpoint(
    root: Path, model: torch.nn.Module
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Load the latest checkpoint's weights into ``model``; return (state, meta) or None."""
    folder = latest_checkpoint(root)
    if folder is None:
        return None
    load_model(model, str(folder / "model.safetensors"))
    state = torch.load(folder / "trainer_state.pt", weights_only=True)
    meta = json.loads((folder / "meta.json").read_text())
    return state, meta
