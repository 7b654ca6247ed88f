"""The backend factory and the vLLM backend's pure conversion of vLLM log-prob dicts."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from online_distill.config import load_config
from online_distill.tasks.models import DEMO_STUDENT_DIR, DEMO_TEACHER_DIR
from online_distill.teachers.factory import build_teacher
from online_distill.teachers.protocol import TeacherBackend
from online_distill.teachers.vllm_engine import token_scores


@dataclass
class Logprob:  # the fields of vllm.logprobs.Logprob the backend reads
    logprob: float
    rank: int | None


def test_token_scores_keeps_ranks_up_to_k_and_the_chosen_token_apart() -> None:
    # Step 0: the chosen token 9 is outside the top 2 (vLLM adds it with its own rank).
    steps = [{4: Logprob(math.log(0.5), 1), 7: Logprob(math.log(0.3), 2),
              9: Logprob(math.log(0.05), 6)},
             {7: Logprob(math.log(0.9), 1), 4: Logprob(math.log(0.1), 2)}]
    sc = token_scores(steps, [9, 7], k=2)
    assert sc.topk_ids.tolist() == [[4, 7], [7, 4]]
    np.testing.assert_allclose(np.exp(sc.topk_logprobs), [[0.5, 0.3], [0.9, 0.1]], rtol=1e-6)
    np.testing.assert_allclose(sc.tail_logmass[0], math.log(0.2), rtol=1e-6)
    assert sc.tail_logmass[1] == -np.inf  # the top 2 hold all the mass
    np.testing.assert_allclose(sc.token_logprobs, [math.log(0.05), math.log(0.9)], rtol=1e-6)


def test_token_scores_pads_a_short_step_with_zero_probability() -> None:
    sc = token_scores([{3: Logprob(0.0, 1)}], [3], k=3)
    assert sc.topk_ids.tolist() == [[3, 3, 3]]
    assert sc.topk_logprobs[0, 0] == 0.0 and np.isneginf(sc.topk_logprobs[0, 1:]).all()


def test_factory_builds_the_hf_backend_from_the_config() -> None:
    cfg = load_config(None, ["teacher.device=cpu"])
    backend = build_teacher(cfg.teacher, str(DEMO_TEACHER_DIR), str(DEMO_STUDENT_DIR))
    assert isinstance(backend, TeacherBackend)
    assert type(backend).__name__ == "HFTeacher"


def test_factory_builds_the_openai_backend_with_the_students_tokenizer(monkeypatch) -> None:
    monkeypatch.setenv("OD_TEST_KEY", "sk-test")
    cfg = load_config(None, ["teacher.backend=openai", "teacher.model=demo-teacher",
                             "teacher.base_url=http://127.0.0.1:9/v1", "teacher.timeout_s=2",
                             "teacher.api_key_env=OD_TEST_KEY", "teacher.max_concurrency=3"])
    backend = build_teacher(cfg.teacher, str(DEMO_TEACHER_DIR), str(DEMO_STUDENT_DIR))
    assert isinstance(backend, TeacherBackend)
    assert type(backend).__name__ == "OpenAITeacher"
    assert backend.tokenizer("12+3=").input_ids == backend.tokenizer.encode("12+3=")


def test_factory_says_how_to_get_vllm_when_it_is_missing() -> None:
    try:
        import vllm  # noqa: F401
    except ImportError:
        cfg = load_config(None, ["teacher.backend=vllm"])
        with pytest.raises(ImportError, match="make venv-vllm"):
            build_teacher(cfg.teacher, str(DEMO_TEACHER_DIR), str(DEMO_STUDENT_DIR))
    else:  # pragma: no cover - this test runs in the main venv, which has no vLLM
        pytest.fail("vLLM is installed in the main venv; this test expects it not to be")
