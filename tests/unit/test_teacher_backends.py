"""The backend factory, the vLLM backend's pure conversion of vLLM log-prob dicts, and the
HF backend ending a conversation at the chat template's end-of-turn token."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from transformers import PreTrainedModel

from online_distill.config import load_config
from online_distill.models.chat import encode_rendered, render_chat
from online_distill.models.loader import load_causal_lm, load_tokenizer
from online_distill.models.tiny_chat import TinyChatModels, build_tiny_chat
from online_distill.tasks.models import DEMO_STUDENT_DIR, DEMO_TEACHER_DIR
from online_distill.teachers.factory import build_teacher
from online_distill.teachers.hf import HFTeacher
from online_distill.teachers.protocol import LabelRequest, TeacherBackend
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


# ---------------------------------------------------------------------- end of turn (HF)
CHAT = [{"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is 12 plus 30? Also, is it red today?"}]


@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory: pytest.TempPathFactory) -> TinyChatModels:
    return build_tiny_chat(tmp_path_factory.mktemp("tiny-chat"))


def ending_turn_at(model: PreTrainedModel, prompt: list[int], answer: list[int], step: int,
                   eos: int) -> PreTrainedModel:
    """A copy of ``model`` whose greedy answer to ``prompt`` is ``answer[:step]`` and then
    ``eos``: the output head is untied and ``eos``'s row becomes ``answer[step]``'s row plus
    a direction that scores ``eos`` 5 nats below it before ``step`` and 5 above it at
    ``step`` (a random tiny model never ends a turn of its own)."""
    ending = copy.deepcopy(model)
    seq = torch.tensor([prompt + answer[:step]])  # (1, P + step)
    with torch.no_grad():
        hidden = ending.model(input_ids=seq).last_hidden_state[0, len(prompt) - 1 :]  # (S+1, H)
        want = torch.full((step + 1,), -5.0)
        want[step] = 5.0
        delta = torch.linalg.pinv(hidden) @ want  # (H,): hidden @ delta = want
        rows = ending.get_output_embeddings().weight.detach().clone()  # (V, H)
        rows[eos] = rows[answer[step]] + delta
        head = torch.nn.Linear(rows.shape[1], rows.shape[0], bias=False)
        head.weight.copy_(rows)
    ending.lm_head = head
    return ending


def test_hf_teacher_ends_a_rendered_conversation_at_the_end_of_turn(
        tiny_chat: TinyChatModels) -> None:
    tokenizer = load_tokenizer(str(tiny_chat.tokenizer))
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token_id == eos
    prompt = encode_rendered(tokenizer, render_chat(tokenizer, CHAT))
    model = load_causal_lm(tiny_chat.teacher)
    greedy = LabelRequest(n=1, decoding="greedy", top_k_logprobs=5, max_new_tokens=12)
    ((free,),) = HFTeacher(model, device="cpu", tokenizer=tokenizer).label(
        [prompt], greedy, conversations=[CHAT])
    ids = list(free.token_ids)
    assert len(ids) == 12 and eos not in ids  # a random teacher talks on
    step = 5
    ending = ending_turn_at(model, prompt, ids, step, eos)
    # The end-of-turn token is the tokenizer's EOS: found even when the model's generation
    # config names none (a base model's config with a chat tokenizer).
    ending.generation_config.eos_token_id = None
    teacher = HFTeacher(ending, device="cpu", tokenizer=tokenizer)
    ((pt,),) = teacher.label([prompt], greedy, conversations=[CHAT])
    assert pt.token_ids == (*ids[:step], eos)  # stopped there, EOS kept as the last token
    assert pt.topk_ids[:step] == free.topk_ids[:step]
    assert pt.topk_ids[step][0] == eos and pt.sampled_logprobs[step] == pytest.approx(
        pt.topk_logprobs[step][0])
    assert pt.text == tokenizer.decode(ids[:step])  # the end-of-turn token adds no text
    # Sampled PTs stop at the end of turn too: EOS only ever as the last token.
    sampled = teacher.label([prompt] * 3, LabelRequest(
        n=4, include_greedy=False, temperature=1.0, top_k_logprobs=5, max_new_tokens=12,
        seed=0))
    for pts in sampled:
        for s in pts:
            assert eos not in s.token_ids[:-1]
            assert s.token_ids[-1] == eos or s.num_tokens == 12
