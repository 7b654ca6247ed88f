"""GOLD's out-of-distribution feedback as plain logic (the Ray actor is a thin shell).

- `stage.py`: `OODStage`, the commit order: score live prompts, pick tails, ask the teacher
  for more like them, produce the kept ones to the feedback topic.
- `window.py`: `EnergyWindow`, the sliding reference distribution (quantiles, z-scores).
- `tail.py`: `TailExample`, `TailSet` (few-shot candidates, picks of one kind),
  `NoiseFilter` (energy-based rejection of generated noise).
- `feedback.py`: `FeedbackFormat` and its `ArithmeticFeedback` (demo) and `LineFeedback`
  (generic) implementations; `feedback_format(cfg)` picks one.
- `stats.py`: `OODStats`, the stage's counters, and `OODSnapshot`, what crosses Ray.
- `budget.py`: `FeedbackBudget`, the cap on the feedback share of the teacher's prompts.
- `callouts.py`: the stage's calls into models: the served student's scores of prompts,
  and the teacher writing new prompts.

The scores themselves (energy, NLL, NLL gap) are in `online_distill.models.scores`.
"""

from .budget import FeedbackBudget
from .feedback import ArithmeticFeedback, FeedbackFormat, LineFeedback, feedback_format
from .tail import NoiseFilter, TailExample, TailSet
from .window import EnergyWindow

__all__ = [
    "ArithmeticFeedback",
    "EnergyWindow",
    "FeedbackBudget",
    "FeedbackFormat",
    "LineFeedback",
    "NoiseFilter",
    "TailExample",
    "TailSet",
    "feedback_format",
]
