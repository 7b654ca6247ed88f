"""A Serve replica is killed under load. Goal: 0 prompts lost, and no failed HTTP request
beyond the killed replica's in-flight one."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from harness import Fault, run_scenario  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def replicas() -> set[str]:
    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith("SERVE_REPLICA::online-distill#")}


@pytest.mark.slow_fault
def test_killed_serve_replica_fails_no_request_but_its_in_flight_one(tmp_path: Path) -> None:
    killed: list[str] = []

    def kill_replica(sup) -> None:
        name = sorted(replicas())[0]
        killed.append(name)
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)

    def healed(sup) -> bool:
        now = replicas()
        return len(now) == 2 and killed[-1] not in now

    out = run_scenario("kill-serve-replica", tmp_path, [
        Fault(at, "kill a Serve replica", kill_replica, ("", ""), recovered=healed)
        for at in (25, 45)], serve_client=True, prompts=2400, rate=40, extra=[
            "serve.enabled=true", f"serve.port={free_port()}", "serve.num_replicas=2",
            "serve.num_cpus=0.25", "teacher.num_cpus=0.5", "learner.num_cpus=0.5",
            "learner.publish_every_steps=5"])
    assert out.lost == 0 and out.trained == out.prompts_in, out
    assert out.http_requests > 200, out
    # One client, one request in flight at a time: at most one failure per killed replica.
    assert out.http_failed <= 2, out.extra.get("http_failures")
