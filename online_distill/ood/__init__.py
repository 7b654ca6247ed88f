"""GOLD's out-of-distribution feedback as plain logic (the Ray actor is a thin shell).

- `energy.py`: `token_energies`, `aggregate`, `prompt_energies`: energy scores of prompts
  under the student.
- `window.py`: `EnergyWindow`, the sliding reference distribution (quantiles, z-scores).
- `tail.py`: `TailExample`, `TailSet` (few-shot candidates, picks of one kind),
  `NoiseFilter` (energy-based rejection of generated noise).
- `feedback.py`: `FeedbackFormat` and its `ArithmeticFeedback` (demo) and `LineFeedback`
  (generic) implementations; `feedback_format(cfg)` picks one.
- `budget.py`: `FeedbackBudget`, the cap on the feedback share of the teacher's prompts.

The stage that wires them to the streams is `online_distill.stages.ood_stage.OODStage`.
"""

from .budget import FeedbackBudget
from .energy import (
    Aggregate,
    aggregate,
    prompt_energies,
    prompt_nll,
    prompt_scores,
    token_energies,
)
from .feedback import ArithmeticFeedback, FeedbackFormat, LineFeedback, feedback_format
from .tail import NoiseFilter, TailExample, TailSet
from .window import EnergyWindow

__all__ = [
    "Aggregate",
    "prompt_nll",
    "prompt_scores",
    "ArithmeticFeedback",
    "EnergyWindow",
    "FeedbackBudget",
    "FeedbackFormat",
    "LineFeedback",
    "NoiseFilter",
    "TailExample",
    "TailSet",
    "aggregate",
    "feedback_format",
    "prompt_energies",
    "token_energies",
]
