"""Atomic, durable writes: a reader never sees a half-written file or folder.

Used by the weights store (versions, the promoted pointer) and the learner's checkpoints.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (so a rename inside it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_dir(tmp: Path, final: Path) -> None:
    """Make a fully written temporary folder durable, then rename it to ``final``."""
    for f in tmp.iterdir():
        fsync_path(f)
    fsync_path(tmp)
    os.rename(tmp, final)
    fsync_path(final.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)
