"""The weights store (published versions, the promoted pointer) and its one follower.

Consumers type against :class:`WeightsStore` and follow the served version with
:class:`PromotedFollower`; only :func:`store_for` names the concrete local store.
"""

from online_distill.weights.follow import LOAD_ERRORS, PromotedFollower
from online_distill.weights.protocol import Manifest, WeightsStore
from online_distill.weights.store import LocalWeightsStore, store_for

__all__ = ["LOAD_ERRORS", "LocalWeightsStore", "Manifest", "PromotedFollower", "WeightsStore",
           "store_for"]
