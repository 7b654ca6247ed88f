"""The teacher backend a :class:`TeacherConfig` names (``teacher.backend``).

Backends whose engines are optional (vLLM) or remote (OpenAI-compatible) are imported only
when chosen, so the library imports with torch and transformers alone.
"""

from __future__ import annotations

import os

from online_distill.config import TeacherConfig
from online_distill.models.loader import load_tokenizer
from online_distill.teachers.protocol import TeacherBackend


def build_teacher(cfg: TeacherConfig, model_path: str, tokenizer_path: str) -> TeacherBackend:
    """The backend of ``cfg.backend``.

    ``model_path``: the teacher to load in-process (hf, vllm); ``tokenizer_path``: the shared
    tokenizer, used by the openai backend to turn the server's tokens into ids (the teacher
    and the student must share one tokenizer: the labels carry token ids).
    """
    if cfg.backend == "hf":
        from online_distill.teachers.hf import HFTeacher

        return HFTeacher(model_path, device=cfg.device, batch_size=cfg.batch_size)
    if cfg.backend == "vllm":
        from online_distill.teachers.vllm_engine import VLLMTeacher

        return VLLMTeacher(model_path, device=cfg.device, seed=cfg.seed,
                           max_logprobs=max(20, cfg.top_k_logprobs),
                           tokenizer=load_tokenizer(model_path))
    from online_distill.teachers.openai_http import OpenAITeacher

    return OpenAITeacher(
        base_url=cfg.base_url or "https://api.openai.com/v1", model=cfg.model,
        tokenizer=load_tokenizer(cfg.tokenizer or tokenizer_path),
        api_key=os.environ.get(cfg.api_key_env) or None, timeout_s=cfg.timeout_s,
        max_retries=cfg.max_retries, retry_backoff_s=cfg.retry_backoff_s,
        max_concurrency=cfg.max_concurrency, batch_size=cfg.batch_size,
        max_top_k=cfg.server_max_logprobs, stop=cfg.stop)
