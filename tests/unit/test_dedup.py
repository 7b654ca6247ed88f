"""Shingles, Jaccard, MinHash and the LSH near-duplicate index (online_distill.critics.dedup)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from online_distill.critics.dedup import MinHasher, NearDuplicateIndex, jaccard, normalize, shingles

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank this morning"


def test_normalize_lowercases_and_collapses_whitespace() -> None:
    assert normalize("  Hello \t  World\n\nAgain ") == "hello world again"
    assert normalize("") == ""


def test_shingles_are_character_ngrams_of_the_normalized_text() -> None:
    assert shingles("ABcd") == frozenset({"abc", "bcd"})
    assert shingles("a  B", n=2) == frozenset({"a ", " b"})
    assert shingles("Hi") == frozenset({"hi"})  # shorter than n: the text itself
    assert shingles("   ") == frozenset()
    with pytest.raises(ValueError):
        shingles("abc", n=0)


def test_jaccard() -> None:
    assert jaccard({"a", "b"}, {"b", "c"}) == pytest.approx(1 / 3)
    assert jaccard(set(), set()) == 1.0
    assert jaccard({"a"}, set()) == 0.0


@pytest.mark.parametrize(
    ("lo", "hi", "true_j"),
    [(50, 150, 50 / 150), (10, 110, 90 / 110), (0, 100, 1.0), (100, 200, 0.0), (25, 125, 0.6)],
)
def test_minhash_similarity_estimates_jaccard(lo: int, hi: int, true_j: float) -> None:
    a = {f"item-{i}" for i in range(100)}
    b = {f"item-{i}" for i in range(lo, hi)}
    assert jaccard(a, b) == pytest.approx(true_j)
    hasher = MinHasher(num_perm=128)
    estimate = MinHasher.similarity(hasher.signature(a), hasher.signature(b))
    assert abs(estimate - true_j) <= 0.1, (estimate, true_j)


def test_minhash_signature_shape_and_empty_set() -> None:
    hasher = MinHasher(num_perm=16, seed=3)
    sig = hasher.signature(shingles(SENTENCE))
    assert len(sig) == 16 and all(0 <= v < 2**32 for v in sig)
    empty = hasher.signature(frozenset())
    assert MinHasher.similarity(empty, hasher.signature([])) == 1.0
    assert MinHasher.similarity(empty, sig) == 0.0
    other_seed = MinHasher(num_perm=16, seed=4).signature(shingles(SENTENCE))
    assert other_seed != sig
    with pytest.raises(ValueError):
        MinHasher.similarity(sig, sig[:8])


def test_minhash_signatures_are_the_same_in_another_process() -> None:
    code = (
        "from online_distill.critics.dedup import MinHasher, shingles;"
        f"print(list(MinHasher(num_perm=8, seed=5).signature(shingles({SENTENCE!r}))))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    here = list(MinHasher(num_perm=8, seed=5).signature(shingles(SENTENCE)))
    assert out.stdout.strip() == str(here)


def test_index_finds_exact_and_near_duplicates_but_not_different_texts() -> None:
    index = NearDuplicateIndex(threshold=0.8)
    assert index.add(SENTENCE)
    assert not index.add("  " + SENTENCE.upper() + "\n")  # exact after normalize
    near = SENTENCE.replace("morning", "mornin")  # one character less
    assert jaccard(shingles(near), shingles(SENTENCE)) >= 0.9
    assert index.seen(near)
    assert not index.add(near)
    assert index.add("Completely unrelated: stock prices fell sharply on Tuesday afternoon")
    assert index.add("Another sentence about cooking pasta with tomatoes and fresh basil")
    assert len(index) == 3


def test_seen_does_not_add() -> None:
    index = NearDuplicateIndex()
    assert not index.seen("hello there, general kenobi")
    assert not index.seen("hello there, general kenobi")
    assert len(index) == 0
    assert index.add("hello there, general kenobi")
    assert index.seen("Hello there,  general Kenobi")


def test_index_evicts_the_oldest_after_capacity() -> None:
    index = NearDuplicateIndex(capacity=2)
    texts = [
        "first text about apples and orchards",
        "second text about trains and stations",
        "third text about violins and orchestras",
    ]
    assert all(index.add(t) for t in texts)
    assert len(index) == 2
    assert not index.seen(texts[0])  # evicted, buckets and exact entry both gone
    assert index.seen(texts[1]) and index.seen(texts[2])
    assert index.add(texts[0])  # new again; evicts texts[1]
    assert not index.seen(texts[1])
    assert len(index) == 2


def test_index_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        NearDuplicateIndex(num_perm=64, bands=10)
    with pytest.raises(ValueError):
        NearDuplicateIndex(threshold=0.0)
    with pytest.raises(ValueError):
        NearDuplicateIndex(capacity=0)
