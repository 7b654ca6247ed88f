"""Where the loop finds its models: the config's path, or the shipped demo models."""

from __future__ import annotations

from pathlib import Path

from online_distill.tasks.models import DEMO_STUDENT_DIR, DEMO_TEACHER_DIR


def teacher_path(model: str) -> str:
    """The teacher to load: the config's path or hub name, or the shipped demo teacher."""
    return model or str(DEMO_TEACHER_DIR)


def student_path(model: str) -> str:
    """The student's starting point: the config's, or the demo student's initialisation."""
    return model or str(DEMO_STUDENT_DIR)


def ensure_dir(path: str) -> Path:
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p
