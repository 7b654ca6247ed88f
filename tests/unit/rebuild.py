"""What crossing Ray does to an object, without pickle in the project.

Ray ships arguments, results and exceptions by ``__reduce_ex__``: the receiving process calls
the reduced constructor with the reduced arguments and restores the state. ``copy.deepcopy``
rebuilds an object by the same ``__reduce_ex__`` path (for types without their own
``__deepcopy__``), so an object it rebuilds equal to itself would cross Ray intact (a config,
a typed exception whose constructor takes extra arguments, a stats snapshot).
"""

from __future__ import annotations

import copy
from typing import TypeVar

T = TypeVar("T")


def rebuilt(obj: T) -> T:
    """``obj`` rebuilt from its ``__reduce_ex__`` (see the module docstring)."""
    return copy.deepcopy(obj)
