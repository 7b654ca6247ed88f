"""Tiny random chat models of two real families, built locally: no model hub.

:func:`build_tiny_chat` writes, in Hugging Face format with safetensors:

- ``tokenizer/``: a byte-level BPE tokenizer trained with the ``tokenizers`` library on a
  small synthetic chat corpus, with a ChatML chat template (``<|im_start|>role\\n...``) whose
  end-of-turn token ``<|im_end|>`` is the end-of-sequence token;
- ``teacher/``: a random ``Qwen2ForCausalLM`` with that tokenizer;
- ``student/``: a random, smaller ``LlamaForCausalLM`` with the same tokenizer.

They are what the chat tests run the loop on, and what ``deploy/chat.yaml`` points at when
tried on one machine (``online-distill tiny-chat models/tiny-chat``). Random weights answer
nonsense; the point is every station on real architectures, tokenizer and template.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.utils import logging as hf_logging

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""ChatML, the template of the Qwen2 instruct models."""


@dataclass(frozen=True, slots=True)
class TinyChatModels:
    """Where :func:`build_tiny_chat` wrote each part."""

    tokenizer: Path
    teacher: Path
    student: Path


def chat_corpus(n: int = 400, seed: int = 0) -> list[str]:
    """Synthetic ChatML conversations: questions about sums, colours and the weather."""
    rng = random.Random(seed)
    topics = ["red", "green", "blue", "sunny", "rainy", "cloudy", "cat", "dog", "tea"]
    out = []
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        t = rng.choice(topics)
        out.append(f"{IM_START}system\nYou are a helpful assistant.{IM_END}\n"
                   f"{IM_START}user\nWhat is {a} plus {b}? Also, is it {t} today?{IM_END}\n"
                   f"{IM_START}assistant\n{a} plus {b} is {a + b}. It is {t}.{IM_END}\n")
    return out


def build_tokenizer(vocab_size: int = 600, seed: int = 0) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with the ChatML template (any UTF-8 text encodes)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, IM_START, IM_END],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(chat_corpus(seed=seed), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=IM_END, pad_token=PAD,
                                   unk_token=None, model_max_length=512)
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_tiny_chat(out: str | Path, seed: int = 0, vocab_size: int = 600) -> TinyChatModels:
    """Write the tokenizer, a Qwen2 teacher and a Llama student under ``out``."""
    hf_logging.disable_progress_bar()
    root = Path(out)
    tok = build_tokenizer(vocab_size, seed)
    paths = TinyChatModels(root / "tokenizer", root / "teacher", root / "student")
    tok.save_pretrained(paths.tokenizer)
    ids = {"vocab_size": len(tok), "eos_token_id": tok.eos_token_id,
           "pad_token_id": tok.pad_token_id, "bos_token_id": None,
           "max_position_embeddings": 256, "tie_word_embeddings": True}
    torch.manual_seed(seed)
    # Heads of 32: vLLM's CPU attention takes no smaller head size.
    teacher = Qwen2ForCausalLM(Qwen2Config(hidden_size=64, intermediate_size=128,
                                           num_hidden_layers=2, num_attention_heads=2,
                                           num_key_value_heads=1, **ids))
    torch.manual_seed(seed + 1)
    student = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64,
                                           num_hidden_layers=2, num_attention_heads=1,
                                           num_key_value_heads=1, **ids))
    for model, path in ((teacher, paths.teacher), (student, paths.student)):
        model.generation_config.eos_token_id = tok.eos_token_id
        model.generation_config.pad_token_id = tok.pad_token_id
        model.save_pretrained(path)
        tok.save_pretrained(path)
    return paths
