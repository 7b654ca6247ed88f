"""Conversations through the stations, on tiny random models of two real families (a Qwen2
teacher, a Llama student) sharing one byte-level BPE tokenizer with a ChatML template."""

from __future__ import annotations

from pathlib import Path

import pytest

from online_distill.config import OODConfig, TeacherConfig
from online_distill.messages import LabeledExample, PromptMessage, Turn, decode, encode
from online_distill.models.chat import NoChatTemplate, model_text, prompt_ids_of, render_chat
from online_distill.models.tiny_chat import IM_END, TinyChatModels, build_tiny_chat
from online_distill.ood.callouts import StudentEnergyScorer
from online_distill.ood.inputs import as_scoring_input, asked_text, scoring_input
from online_distill.ood.tail import TailExample
from online_distill.streams import DeadLetterWriter, MemoryLog, MemorySink, MemorySource
from online_distill.teachers.hf import HFTeacher
from online_distill.teachers.stage import TeacherStage
from online_distill.weights.store import LocalWeightsStore

PROMPTS, LABELS, DLQ = "prompts", "labels", "dead"
CHAT = ({"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2 plus 3? Is it sunny?"})


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> TinyChatModels:
    return build_tiny_chat(tmp_path_factory.mktemp("tiny-chat"))


@pytest.fixture(scope="module")
def teacher(models: TinyChatModels) -> HFTeacher:
    return HFTeacher(models.teacher, device="cpu", teacher_id="tiny-qwen2")


def stage_for(log: MemoryLog, teacher: HFTeacher, tokenizer: object = None) -> TeacherStage:
    sink = MemorySink(log)
    cfg = TeacherConfig(n_pseudo_targets=2, max_new_tokens=48, batch_size=8, top_k_logprobs=5,
                        retry_backoff_s=0.0)
    return TeacherStage(MemorySource(log, [PROMPTS], group="teacher"), sink, teacher,
                        tokenizer or teacher.tokenizer, cfg, LABELS,
                        DeadLetterWriter(sink, DLQ, "teacher"), max_prompt_tokens=200,
                        sleep=lambda s: None)


def test_the_tiny_families_share_one_tokenizer_with_a_chat_template(models: TinyChatModels,
                                                                     teacher: HFTeacher) -> None:
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(models.teacher).model_type == "qwen2"
    assert AutoConfig.from_pretrained(models.student).model_type == "llama"
    text = render_chat(teacher.tokenizer, CHAT)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2 plus "
                    "3? Is it sunny?<|im_end|>\n<|im_start|>assistant\n")
    assert teacher.tokenizer.eos_token == IM_END
    assert teacher.tokenizer.decode(prompt_ids_of(teacher.tokenizer,
                                                  PromptMessage(messages=CHAT))) == text


def test_the_teacher_labels_a_conversation_rendered_and_keeps_it(teacher: HFTeacher) -> None:
    log = MemoryLog(partitions=1)
    chat, text = PromptMessage(messages=CHAT, kind="chat"), PromptMessage(text="2 plus 3 is")
    for msg in (chat, text):
        log.append(PROMPTS, encode(msg), key=msg.id.encode())
    stage = stage_for(log, teacher)
    while stage.run_once():
        pass
    got = {ex.prompt_id: ex for ex in (decode(r.value, LabeledExample)
                                       for r in log.topics[LABELS][0])}
    ex = got[chat.id]
    assert ex.prompt_text == render_chat(teacher.tokenizer, CHAT)
    assert [t.as_dict() for t in ex.messages] == list(CHAT)
    assert list(ex.prompt_token_ids) == prompt_ids_of(teacher.tokenizer, chat)
    assert got[text.id].prompt_text == "2 plus 3 is" and got[text.id].messages == ()
    # A continuation that stopped before max_new_tokens stopped at the end-of-turn token.
    eos = teacher.tokenizer.eos_token_id
    for pt in ex.pseudo_targets:
        assert eos not in pt.token_ids[:-1]
        assert pt.num_tokens == 48 or pt.token_ids[-1] == eos


def test_a_conversation_for_a_tokenizer_without_template_is_dead_lettered(
        teacher: HFTeacher) -> None:
    from online_distill.tasks.tokenizer import build_char_tokenizer

    log = MemoryLog(partitions=1)
    msg = PromptMessage(messages=CHAT)
    log.append(PROMPTS, encode(msg), key=msg.id.encode())
    stage = stage_for(log, teacher, tokenizer=build_char_tokenizer())
    while stage.run_once():
        pass
    letters = [decode(r.value) for r in log.topics[DLQ][0]]
    assert [d.error_type for d in letters] == ["no_chat_template"]  # type: ignore[union-attr]
    assert "chat template" in letters[0].reason  # type: ignore[union-attr]
    assert LABELS not in log.topics or not log.topics[LABELS][0]
    with pytest.raises(NoChatTemplate, match="has no chat template"):
        model_text(build_char_tokenizer(), msg)


def test_ood_scores_the_rendered_conversation_and_feedback_stays_chat(
        models: TinyChatModels, tmp_path: Path) -> None:
    chat = PromptMessage(messages=CHAT)
    assert scoring_input(chat) == chat.messages
    assert asked_text(chat) == "What is 2 plus 3? Is it sunny?"
    scorer = StudentEnergyScorer(LocalWeightsStore(tmp_path / "w"), str(models.student),
                                 OODConfig())
    rendered = model_text(scorer.tokenizer, chat)
    by_conversation, by_text = scorer([scoring_input(chat)]), scorer([rendered])
    assert by_conversation == pytest.approx(by_text)  # the scorer reads what the student reads
    parents = [TailExample("q", 1.0, chat=True), TailExample("r", 2.0, chat=True),
               TailExample("s", 2.0)]
    assert as_scoring_input("new one", parents) == (Turn(role="user", content="new one"),)
    assert as_scoring_input("new one", parents[2:]) == "new one"
