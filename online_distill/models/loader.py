"""The one way every station loads a causal LM and its tokenizer: safetensors only.

``use_safetensors=True`` makes a model folder that holds only pickled weights
(``pytorch_model.bin``) an error instead of code run on load; the same path loads a hub
model, a local folder, the shipped demo models and the weights store's versions.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging


class ModelLoadError(OSError):
    """A model folder that cannot be loaded safely (no safetensors weights, no config)."""


def load_causal_lm(path: str | Path, device: str | torch.device = "cpu",
                   *, eval_mode: bool = False) -> PreTrainedModel:
    """``AutoModelForCausalLM`` from ``path`` (safetensors only), moved to ``device``."""
    hf_logging.disable_progress_bar()  # a bar per load would flood the actors' logs
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), use_safetensors=True)
    except OSError as exc:
        raise ModelLoadError(
            f"cannot load a causal LM from {path}: {exc}; online-distill reads safetensors "
            "only (re-save a .bin model with save_pretrained(safe_serialization=True))"
        ) from exc
    # transformers' stubs type .to() as the dtype overload; it moves the module in place
    model.to(device)  # type: ignore[arg-type]
    if eval_mode:
        model.eval()
    return model


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """``AutoTokenizer`` from ``path`` (a tokenizer.json or the model's own files)."""
    return AutoTokenizer.from_pretrained(str(path))


def load_model(path: str | Path, device: str | torch.device = "cpu"
               ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A model for inference (eval mode) and its tokenizer."""
    return load_causal_lm(path, device, eval_mode=True), load_tokenizer(path)
