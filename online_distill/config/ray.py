"""Where the loop runs: the Ray cluster that hosts every actor and the Serve app."""

from __future__ import annotations

from dataclasses import dataclass

from .base import check_nonempty, check_range
from .coerce import normalize_fields


@dataclass(frozen=True, kw_only=True)
class RayConfig:
    """The Ray cluster that hosts every actor and the Serve app."""

    address: str = ""
    """Address of an existing Ray cluster (`auto`, `ray://host:10001`, ...). Empty: start a
    local Ray instance inside the daemon."""

    namespace: str = "online-distill"
    """Ray namespace of the daemon's named actors; two daemons on one cluster need two."""

    num_cpus: int = 2
    """CPUs a local Ray instance may use; 0 lets Ray count the machine's cores. Ignored
    when address is set."""

    include_dashboard: bool = False
    """Start the Ray dashboard with a local Ray instance (costs memory and start time)."""

    dashboard_host: str = "127.0.0.1"
    """Interface the Ray dashboard binds; 0.0.0.0 exposes it to the network."""

    def __post_init__(self) -> None:
        normalize_fields(self)
        check_nonempty(self, "namespace", "a typical value is 'online-distill'")
        check_range(self, "num_cpus", ge=0, fix="0 lets Ray detect the cores; 2 fits the demo")
