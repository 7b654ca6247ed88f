"""Teacher backends: who labels prompts with pseudo-targets and scores given sequences."""

from online_distill.teachers.protocol import (
    LabelRequest,
    TeacherBackend,
    TeacherScorer,
    TokenScores,
)

__all__ = ["LabelRequest", "TeacherBackend", "TeacherScorer", "TokenScores"]
