"""Device choice for every station: ``auto`` is CUDA when present, else CPU."""

from __future__ import annotations

import torch


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
