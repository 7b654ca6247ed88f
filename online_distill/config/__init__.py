"""online-distill configuration: one frozen dataclass per component, combined in Config.

Load it with `load_config(path, overrides)`; print it with help via `describe_config`.
Every field has a default and a docstring directly under it; the help text is generated
from those docstrings (see base.field_docs).
"""

from .base import ConfigError, field_docs
from .critics import CriticsConfig
from .demo import DEMO_KINDS, DemoConfig
from .describe import describe_config
from .gate import GateConfig
from .kafka import KafkaConfig
from .learner import LearnerConfig
from .loader import config_from_dict, config_to_dict, load_config
from .metrics import DriftConfig, MetricsConfig
from .ood import OODConfig
from .ray import RayConfig
from .root import Config
from .serve import ServeConfig
from .teacher import TeacherConfig

__all__ = [
    "DEMO_KINDS",
    "Config",
    "ConfigError",
    "CriticsConfig",
    "DemoConfig",
    "DriftConfig",
    "GateConfig",
    "KafkaConfig",
    "LearnerConfig",
    "MetricsConfig",
    "OODConfig",
    "RayConfig",
    "ServeConfig",
    "TeacherConfig",
    "config_from_dict",
    "config_to_dict",
    "describe_config",
    "field_docs",
    "load_config",
]
