"""Whether a teacher's labels can train a student: both must use one tokenizer.

The labels topic carries token ids. Labels made with another tokenizer would train the
student on the wrong tokens, silently (ids inside the student's vocabulary) or fail every
step (ids outside it), so ``up`` refuses such a pair before anything starts.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from online_distill.config import Config, ConfigError

SPECIAL = ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id")
"""Special token ids that must agree too (the learner pads and stops with them)."""


def tokenizer_mismatch(teacher: PreTrainedTokenizerBase, student: PreTrainedTokenizerBase
                       ) -> str | None:
    """How the two tokenizers differ, in one clause, or None when they are the same."""
    tv, sv = teacher.get_vocab(), student.get_vocab()
    if tv != sv:
        moved = sum(1 for token, i in tv.items() if sv.get(token) != i)
        return (f"the teacher's tokenizer has {len(tv)} tokens and the student's {len(sv)}; "
                f"{moved} of the teacher's tokens are missing from the student's or have "
                "another id")
    for name in SPECIAL:
        a, b = getattr(teacher, name, None), getattr(student, name, None)
        if a != b:
            return f"{name} is {a} in the teacher's tokenizer and {b} in the student's"
    return None


def check_shared_tokenizer(cfg: Config) -> None:
    """Raise a :class:`ConfigError` naming both models when the teacher labels with another
    tokenizer than the student's (read from their folders: a second or two)."""
    from online_distill.models.loader import load_tokenizer
    from online_distill.models.paths import student_path, teacher_path

    t = cfg.teacher
    student = student_path(cfg.learner.student_model)
    if t.backend != "openai":  # hf and vllm label with the teacher model's own tokenizer
        teacher, field_name = teacher_path(t.model), "teacher.model"
    elif t.tokenizer:
        teacher, field_name = t.tokenizer, "teacher.tokenizer"
    else:
        return  # the server's tokens are read with the student's tokenizer
    if teacher == student:
        return
    why = tokenizer_mismatch(load_tokenizer(teacher), load_tokenizer(student))
    if why is not None:
        raise ConfigError(
            f"labels from this teacher cannot train the student ({student}): {why}. The "
            "labels carry token ids, so teacher and student must share one tokenizer: pick "
            "a student of the teacher's family, or set learner.student_model to a model "
            "with the teacher's tokenizer", path=field_name, value=teacher)
