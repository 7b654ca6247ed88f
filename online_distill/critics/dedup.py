"""Exact and near-duplicate detection of texts: shingles, Jaccard, MinHash and an LSH index.

A text is normalised (lowercase, whitespace collapsed) and cut into character n-gram
*shingles*; two texts are near duplicates when the Jaccard similarity of their shingle sets
is high. Comparing every new text with every indexed one is quadratic, so
`NearDuplicateIndex` keeps a MinHash signature per text and finds candidates through
locality-sensitive hashing (LSH): the signature is cut into `bands` bands of
`num_perm // bands` slots, and texts that agree on a whole band share a bucket. A pair with
Jaccard s shares at least one band with probability 1 - (1 - s^r)^b (r rows, b bands); with
the defaults (64 slots, 16 bands of 4) that is 0.9998 at s = 0.8 and 0.64 at s = 0.5, so
candidates at a 0.9 threshold are practically never missed. Each candidate is then verified
with the fraction of equal signature slots, an unbiased estimate of the Jaccard.

Signatures are deterministic across processes and machines: shingles are hashed with
blake2b and permuted with fixed universal hashes drawn from `seed`, never with Python's
salted `hash()`, so signatures may be stored or compared between actors.
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from collections.abc import Iterable, Set

import numpy as np
import numpy.typing as npt

_PRIME = 4_294_967_291
"""The largest prime below 2^32: the modulus of the universal hashes. Hash values and
coefficients are < 2^32, so a * x < 2^64 never overflows uint64."""
_EMPTY_SLOT = _PRIME
"""The slot value of an empty shingle set (larger than every real hash value)."""


def normalize(text: str) -> str:
    """Lowercase `text`, collapse runs of whitespace to one space and strip both ends."""
    return " ".join(text.lower().split())


def shingles(text: str, n: int = 3) -> frozenset[str]:
    """The character n-grams of the normalised text.

    A normalised text shorter than n gives {text}; an empty (or blank) one the empty set.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    norm = normalize(text)
    if not norm:
        return frozenset()
    if len(norm) < n:
        return frozenset((norm,))
    return frozenset(norm[i : i + n] for i in range(len(norm) - n + 1))


def jaccard(a: Set[str], b: Set[str]) -> float:
    """|a & b| / |a | b|; 1.0 when both sets are empty."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _hash32(shingle: str) -> int:
    """A stable 32-bit hash of one shingle (blake2b, identical in every process)."""
    digest = hashlib.blake2b(shingle.encode("utf-8"), digest_size=4).digest()
    return int.from_bytes(digest, "little")


class MinHasher:
    """MinHash signatures of shingle sets: `num_perm` slots, each the minimum of one
    universal hash h(x) = ((a * x) mod p + b) mod p over the set's blake2b hashes.

    The probability that two sets agree in a slot is their Jaccard similarity, so
    `similarity` (the fraction of equal slots) estimates it with standard error
    sqrt(J (1 - J) / num_perm), about 0.06 at J = 0.5 with 64 slots.
    """

    def __init__(self, num_perm: int = 64, seed: int = 0) -> None:
        if num_perm < 1:
            raise ValueError(f"num_perm must be >= 1, got {num_perm}")
        self.num_perm = num_perm
        self.seed = seed
        rng = random.Random(seed)  # seeded with an int: the same draws in every process
        self._a: npt.NDArray[np.uint64] = np.array(
            [rng.randrange(1, _PRIME) for _ in range(num_perm)], dtype=np.uint64
        )  # (P,)
        self._b: npt.NDArray[np.uint64] = np.array(
            [rng.randrange(0, _PRIME) for _ in range(num_perm)], dtype=np.uint64
        )  # (P,)

    def signature(self, shingle_set: Iterable[str]) -> tuple[int, ...]:
        """The (num_perm,) MinHash signature of a shingle set; all slots equal for {}."""
        hashes = list({_hash32(s) for s in shingle_set})
        if not hashes:
            return (_EMPTY_SLOT,) * self.num_perm
        x = np.array(hashes, dtype=np.uint64)  # (S,)
        permuted = (self._a[:, None] * x[None, :]) % _PRIME  # (P, S), a * x < 2^64
        permuted = (permuted + self._b[:, None]) % _PRIME  # (P, S)
        return tuple(int(v) for v in permuted.min(axis=1))  # (P,)

    @staticmethod
    def similarity(a: tuple[int, ...], b: tuple[int, ...]) -> float:
        """Fraction of equal slots of two signatures: an estimate of their sets' Jaccard."""
        if len(a) != len(b):
            raise ValueError(f"signatures differ in length: {len(a)} vs {len(b)}")
        if not a:
            return 1.0
        return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


class NearDuplicateIndex:
    """An LSH index over the most recent `capacity` distinct texts (the oldest is evicted).

    `add(text)` indexes a new text and returns True; it returns False, indexing nothing,
    when the text is an exact duplicate of an indexed one after `normalize`, or when a
    candidate sharing an LSH band has an estimated Jaccard (MinHash) >= `threshold` with it.
    `seen(text)` is the same test without adding. Not thread-safe.
    """

    def __init__(
        self,
        threshold: float = 0.9,
        capacity: int = 10000,
        num_perm: int = 64,
        bands: int = 16,
        n: int = 3,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if bands < 1 or num_perm % bands:
            raise ValueError(f"bands ({bands}) must be >= 1 and divide num_perm ({num_perm})")
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.threshold, self.capacity, self.bands, self.n = threshold, capacity, bands, n
        self.rows = num_perm // bands
        self.hasher = MinHasher(num_perm=num_perm)
        self._next_id = 0
        # id -> (normalised text, signature), oldest first.
        self._entries: OrderedDict[int, tuple[str, tuple[int, ...]]] = OrderedDict()
        # Ring buffer of the live signatures, entry id -> row id % capacity, to verify many
        # candidates at once: (capacity, num_perm); slot values are <= _PRIME < 2^32.
        self._sigs: npt.NDArray[np.uint32] = np.zeros((capacity, num_perm), dtype=np.uint32)
        self._exact: dict[str, int] = {}  # normalised text -> id
        self._buckets: dict[tuple[int, tuple[int, ...]], set[int]] = {}  # (band, slots) -> ids

    def __len__(self) -> int:
        return len(self._entries)

    def _band_keys(self, sig: tuple[int, ...]) -> list[tuple[int, tuple[int, ...]]]:
        r = self.rows
        return [(i, sig[i * r : (i + 1) * r]) for i in range(self.bands)]

    def _is_duplicate(self, norm: str, sig: tuple[int, ...]) -> bool:
        if norm in self._exact:
            return True
        candidates: set[int] = set()
        for key in self._band_keys(sig):
            candidates |= self._buckets.get(key, set())
        if not candidates:
            return False
        rows = np.fromiter((c % self.capacity for c in candidates), dtype=np.int64)  # (C,)
        query = np.array(sig, dtype=np.uint32)  # (P,)
        equal = (self._sigs[rows] == query[None, :]).mean(axis=1)  # (C,) MinHash similarity
        return bool((equal >= self.threshold).any())

    def _signature(self, norm: str) -> tuple[int, ...]:
        return self.hasher.signature(shingles(norm, self.n))

    def seen(self, text: str) -> bool:
        """Whether `text` is an exact or near duplicate of an indexed text."""
        norm = normalize(text)
        return self._is_duplicate(norm, self._signature(norm))

    def add(self, text: str) -> bool:
        """Index `text` and return True if it is new; return False for a (near) duplicate."""
        norm = normalize(text)
        sig = self._signature(norm)
        if self._is_duplicate(norm, sig):
            return False
        entry_id = self._next_id
        self._next_id += 1
        self._entries[entry_id] = (norm, sig)
        self._sigs[entry_id % self.capacity] = sig
        self._exact[norm] = entry_id
        for key in self._band_keys(sig):
            self._buckets.setdefault(key, set()).add(entry_id)
        while len(self._entries) > self.capacity:
            self._evict_oldest()
        return True

    def _evict_oldest(self) -> None:
        entry_id, (norm, sig) = self._entries.popitem(last=False)
        del self._exact[norm]
        for key in self._band_keys(sig):
            bucket = self._buckets[key]
            bucket.discard(entry_id)
            if not bucket:
                del self._buckets[key]
