"""Which prompts are held out of training: a rule on the prompt id alone.

The learner (which skips a held-out prompt) and the gate (which keeps it as a probe) apply
the same rule without talking to each other, across restarts and any number of processes;
the rule lives here, below both stations, so neither imports the other.
"""

from __future__ import annotations

import hashlib


def held_out(prompt_id: str, share: float) -> bool:
    """True for a stable ``share`` of prompt ids (0 holds out nothing)."""
    if share <= 0:
        return False
    digest = hashlib.blake2b(prompt_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64 < share
