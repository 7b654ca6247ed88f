"""The demo's teacher and student: GPT-2 architecture, character-level tokenizer, HF format.

Both are ordinary ``GPT2LMHeadModel`` checkpoints saved with ``save_pretrained``
(safetensors), so the daemon loads them exactly as it loads a hub model or a local path
named in the config. The student has the teacher's tokenizer and about 3.5x fewer
parameters (fewer and narrower layers).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from online_distill.tasks.tokenizer import build_char_tokenizer

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
DEMO_TEACHER_DIR = ASSETS_DIR / "demo-teacher"
"""The shipped, trained demo teacher (rebuilt by ``online-distill demo-teacher``)."""
DEMO_STUDENT_DIR = ASSETS_DIR / "demo-student-init"
"""The demo student's fresh (untrained) initialisation."""


@dataclass(frozen=True, slots=True)
class ModelShape:
    """Width and depth of a GPT-2 model."""

    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int = 128


TEACHER_SHAPE = ModelShape(n_layer=4, n_embd=128, n_head=4)
"""About 0.82M parameters: big enough for every demo kind, small enough to train in minutes."""
STUDENT_SHAPE = ModelShape(n_layer=2, n_embd=96, n_head=4)
"""About 0.24M parameters, 3.5x fewer than the teacher."""


def gpt2_config(tokenizer: PreTrainedTokenizerFast, shape: ModelShape) -> GPT2Config:
    """A GPT-2 config for ``shape`` over ``tokenizer``'s vocabulary (no dropout)."""
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=shape.n_positions,
        n_embd=shape.n_embd,
        n_layer=shape.n_layer,
        n_head=shape.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def line_generation_config(tokenizer: PreTrainedTokenizerFast) -> GenerationConfig:
    """Generation defaults of the demo models: stop at the end of a line or at ``<eos>``."""
    newline = tokenizer.convert_tokens_to_ids("\n")
    return GenerationConfig(
        eos_token_id=[newline, tokenizer.eos_token_id],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        max_new_tokens=16,
        do_sample=False,
    )


def new_model(shape: ModelShape, seed: int = 0) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerFast]:
    """A freshly initialised model of ``shape`` with the character tokenizer."""
    tokenizer = build_char_tokenizer()
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(gpt2_config(tokenizer, shape))
    model.generation_config = line_generation_config(tokenizer)
    return model, tokenizer


def save_model(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast, out_dir: Path) -> None:
    """``save_pretrained`` model (safetensors) and tokenizer into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))


def write_student_init(out_dir: Path = DEMO_STUDENT_DIR, seed: int = 0) -> GPT2LMHeadModel:
    """Write the demo student's fresh initialisation to ``out_dir`` and return it."""
    model, tokenizer = new_model(STUDENT_SHAPE, seed=seed)
    save_model(model, tokenizer, out_dir)
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())
