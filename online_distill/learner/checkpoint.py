"""Atomic learner checkpoints on a local (or mounted) filesystem.

Layout under the checkpoint directory::

    step-00000120/            one checkpoint per folder
        model.safetensors           the student's weights
        trainer_state.safetensors   every tensor of the trainer state (the optimizer's
                                    moments and step counts, the torch RNG state) under a
                                    flat key such as ``optimizer.state.0.exp_avg``
        trainer_state.json          the rest of the trainer state (hyperparameters of the
                                    parameter groups, the LR schedule, the Python RNG state),
                                    with ``{"__tensor__": key}`` where a tensor was
        meta.json                   step, skipped steps, and the caller's ``progress``
    LATEST                          name of the newest complete checkpoint folder

Nothing here is unpickled: a checkpoint is data (safetensors and JSON), so a planted or
corrupted checkpoint cannot run code in the learner. A checkpoint folder written before this
format (``trainer_state.pt``) is refused with an error that says what to do.

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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from online_distill.weights.atomic import commit_dir, write_atomic

LATEST = "LATEST"
_PREFIX = "step-"
STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
_LEGACY_STATE = "trainer_state.pt"
_FORMAT = 1
"""Version of the trainer-state encoding, written into trainer_state.json."""

# How trainer_state.json marks what JSON has no type for: a one-key object whose key is one
# of these. A tensor is stored in trainer_state.safetensors under the key given; a tuple
# (AdamW's betas, the Python RNG state) must come back a tuple; a dict with int keys (the
# optimizer's per-parameter state) must come back with int keys, or torch silently drops it.
_TENSOR, _TUPLE, _INT_KEYS = "__tensor__", "__tuple__", "__int_keys__"
_MARKERS = frozenset({_TENSOR, _TUPLE, _INT_KEYS})


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be read back (an old format, a damaged file)."""


def encode_state(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a trainer state (nested dicts, lists, tuples, tensors, JSON scalars) into its
    tensors, keyed by their dotted path (``optimizer.state.0.exp_avg``), and a JSON-able
    tree that names those keys where the tensors were."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            if path in tensors:
                raise ValueError(f"two trainer-state entries share the key {path!r}; rename "
                                 "the one whose name holds a '.'")
            tensors[path] = value.detach().cpu().contiguous()
            return {_TENSOR: path}
        if isinstance(value, tuple):
            return {_TUPLE: [walk(v, f"{path}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(value)]
        if isinstance(value, Mapping):
            if value and all(isinstance(k, int) and not isinstance(k, bool) for k in value):
                return {_INT_KEYS: {str(k): walk(v, f"{path}.{k}") for k, v in value.items()}}
            bad = [k for k in value if not isinstance(k, str) or k in _MARKERS]
            if bad:
                raise TypeError(f"trainer-state dict at {path or '<root>'!r} has key {bad[0]!r};"
                                " keys must be all str (not __tensor__/__tuple__/__int_keys__)"
                                " or all int")
            return {k: walk(v, f"{path}.{k}" if path else k) for k, v in value.items()}
        if value is None or isinstance(value, bool | int | float | str):
            return value
        raise TypeError(f"trainer-state entry {path!r} is a {type(value).__name__}; a "
                        "checkpoint stores only tensors, JSON scalars, lists, tuples and dicts")

    tree = walk(state, "")
    return tensors, tree


def decode_state(tree: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """The inverse of :func:`encode_state`."""
    if isinstance(tree, list):
        return [decode_state(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if len(tree) == 1 and (marker := next(iter(tree))) in _MARKERS:
        inner = tree[marker]
        if marker == _TENSOR:
            if inner not in tensors:
                raise CheckpointError(f"{STATE_JSON} names tensor {inner!r}, which "
                                      f"{STATE_TENSORS} does not hold")
            return tensors[inner]
        if marker == _TUPLE:
            return tuple(decode_state(v, tensors) for v in inner)
        return {int(k): decode_state(v, tensors) for k, v in inner.items()}
    return {k: decode_state(v, tensors) for k, v in tree.items()}


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
        tensors, tree = encode_state(state)
        save_file(tensors, str(tmp / STATE_TENSORS))
        (tmp / STATE_JSON).write_text(json.dumps({"format": _FORMAT, "state": tree}))
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
    """Load the latest checkpoint's weights into ``model``; return (state, meta) or None.

    ``state`` is the dict given to :func:`save_checkpoint`, its tensors on the CPU (the
    optimizer's ``load_state_dict`` moves them to the parameters' device). Raises
    :class:`CheckpointError` for a folder in the old pickled format.
    """
    folder = latest_checkpoint(root)
    if folder is None:
        return None
    if not (folder / STATE_JSON).is_file() and (folder / _LEGACY_STATE).is_file():
        raise CheckpointError(
            f"checkpoint {folder} holds its trainer state in {_LEGACY_STATE}, a pickle that "
            "online-distill no longer reads; move the checkpoint directory aside to start "
            "from the student model (its weights are in model.safetensors there)")
    load_model(model, str(folder / "model.safetensors"))
    state = read_trainer_state(folder)
    meta = json.loads((folder / "meta.json").read_text())
    return state, meta


def read_trainer_state(folder: Path) -> dict[str, Any]:
    """The trainer state of one checkpoint folder, from its safetensors and JSON files."""
    doc = json.loads((folder / STATE_JSON).read_text())
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise CheckpointError(f"{folder / STATE_JSON} has format {found!r}; this version of "
                              f"online-distill reads format {_FORMAT}")
    state = decode_state(doc["state"], load_file(str(folder / STATE_TENSORS)))
    if not isinstance(state, dict):
        raise CheckpointError(f"{folder / STATE_JSON} holds no trainer-state mapping")
    return state
