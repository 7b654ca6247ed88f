"""Security through the real Serve app: admin routes need the bearer token, oversize bodies
get 413, and neither the admin token nor the Kafka password reaches Ray's log files."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import ray

from online_distill.config import load_config
from online_distill.models.loader import load_model
from online_distill.tasks.models import DEMO_TEACHER_DIR
from online_distill.weights.store import store_for
from tests.integration.test_serving import NAME, free_port

pytestmark = pytest.mark.integration
TOKEN = "adm-" + secrets.token_urlsafe(24)
KAFKA_SECRET = "kafka-pw-" + secrets.token_urlsafe(12)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from online_distill.actors.serve import start_serving, stop_serving

    root = tmp_path_factory.mktemp("security")
    cfg = load_config(None, [f"gate.weights_dir={root / 'weights'}", f"serve.port={free_port()}",
                             "serve.num_replicas=1", "serve.swap_delay_s=0.2",
                             "serve.poll_interval_s=0.1", "metrics.enabled=false",
                             f"kafka.sasl_password={KAFKA_SECRET}"])
    store = store_for(cfg)
    teacher, tok = load_model(DEMO_TEACHER_DIR)
    store.publish(teacher, tok, learner_step=0)
    store.publish(teacher, tok, learner_step=1)
    store.promote(1)
    with pytest.MonkeyPatch.context() as env:
        # Ray's processes inherit the driver's environment, as under `online-distill up`.
        env.setenv(cfg.serve.admin_token_env, TOKEN)
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        url = start_serving(cfg)
        logs = Path(ray._private.worker._global_node.get_logs_dir_path())
        yield cfg, store, url, logs
    finally:
        stop_serving()
        ray.shutdown()


def served_version(http: httpx.Client, want: int, timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        version = http.get("/healthz").json()["version"]
        if version == want or time.monotonic() > deadline:
            return int(version)
        time.sleep(0.1)


def test_admin_routes_need_the_token_and_change_the_served_version(served) -> None:
    cfg, store, url, _ = served
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, timeout=30) as http:
        assert served_version(http, 1) == 1
        for route, method in (("/admin/promote", "POST"), ("/admin/rollback", "POST"),
                              ("/admin/versions", "GET")):
            r = http.request(method, route, json={"version": 2})
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", route
            assert r.json()["error"]["code"] == "missing_token"
            r = http.request(method, route, json={"version": 2},
                             headers={"Authorization": "Bearer not-the-token"})
            assert r.status_code == 403 and r.json()["error"]["code"] == "invalid_token"
        assert store.promoted() == 1 and served_version(http, 1, timeout_s=0) == 1

        r = http.get("/admin/versions", headers=auth)
        assert r.status_code == 200 and [v["version"] for v in r.json()["data"]] == [1, 2]
        r = http.post("/admin/promote", json={"version": 2}, headers=auth)
        assert r.status_code == 200 and r.json()["promoted"] == 2, r.text
        assert store.history()[-1]["by"] == "admin-api"
        assert served_version(http, 2) == 2
        r = http.post("/admin/promote", json={"version": 9}, headers=auth)
        assert r.status_code == 404 and r.json()["error"]["code"] == "version_not_found"
        r = http.post("/admin/rollback", headers=auth)  # no body: the previous version
        assert r.status_code == 200 and r.json()["promoted"] == 1, r.text
        assert served_version(http, 1) == 1
        r = http.post("/admin/promote", content=b" " * 2048 + b'{"version": 2}', headers=auth)
        assert r.status_code == 413 and store.promoted() == 1
        paths = http.get("/openapi.json").json()["paths"]
        assert {"/admin/promote", "/admin/rollback", "/admin/versions"} <= set(paths)


def test_an_oversize_completion_body_is_a_413(served) -> None:
    cfg, _, url, _ = served
    limit = cfg.serve.max_body_bytes
    with httpx.Client(base_url=url, timeout=30) as http:
        r = http.post("/v1/completions", json={"model": NAME, "prompt": "x" * limit})
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
        assert str(limit) in r.json()["error"]["message"]
        r = http.post("/v1/completions", json={"model": NAME, "prompt": "1+1=", "max_tokens": 2})
        assert r.status_code == 200


def test_no_secret_in_rays_log_files(served) -> None:
    _, _, url, logs = served
    with httpx.Client(base_url=url, timeout=30) as http:  # a few more requests to log
        for auth in (f"Bearer {TOKEN}", "Bearer wrong", TOKEN):
            http.get("/admin/versions", headers={"Authorization": auth})
    deadline = time.monotonic() + 30  # Serve writes its access log from a logging thread
    while True:
        files = [p for p in logs.rglob("*") if p.is_file()]
        if any(b"/admin/versions" in p.read_bytes() for p in files):  # the access log
            break
        assert time.monotonic() < deadline, "no access log line for /admin/versions in 30 s"
        time.sleep(0.5)
    for path in files:
        data = path.read_bytes()
        assert TOKEN.encode() not in data, path
        assert KAFKA_SECRET.encode() not in data, path


# ------------------------------------------------- the whole loop with SASL settings
ACTORS = ("TeacherActor", "LearnerActor", "GateActor")


def actor_environments(ray_tmp: str) -> dict[str, dict[str, str]]:
    """Environment of each of our Ray session's actor processes, by actor class (found by
    RAY_TMPDIR, which only this test's `up` and its children carry)."""
    found: dict[str, dict[str, str]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            raw = (proc / "environ").read_bytes()
        except OSError:  # gone, or not ours
            continue
        env = dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0")
                   if "=" in kv)
        if env.get("RAY_TMPDIR") != ray_tmp or not title.startswith("ray::"):
            continue
        for actor in ACTORS:
            if title.startswith(f"ray::{actor}"):
                found[actor] = env
    return found


def test_the_loop_with_sasl_settings_logs_no_password(tmp_path: Path) -> None:
    """`up` with the SASL password written in the config (the worst case): the actors get
    the redacted config and find the password in their environment, and neither a Ray log
    file, the run folder nor `up`'s output holds it. The embedded broker speaks PLAINTEXT
    only, so the clients do not send the password; what is checked is where it travels."""
    exe = Path(sys.executable).parent / "online-distill"
    run = tmp_path / "run"
    ray_tmp = tempfile.mkdtemp(prefix="od-ray-", dir="/tmp")  # Ray's socket paths are short
    var = "OD_TEST_KAFKA_PASSWORD"
    env = {k: v for k, v in os.environ.items() if k != var} | {"RAY_TMPDIR": ray_tmp}
    cmd = [str(exe), "up", "--file", "deploy/demo.yaml", "--duration", "10",
           f"run_dir={run}", f"learner.checkpoint_dir={run}/ckpt", f"gate.weights_dir={run}/w",
           "serve.enabled=false", "metrics.port=0", "log_level=DEBUG",
           "kafka.sasl_mechanism=SCRAM-SHA-256", "kafka.sasl_username=od",
           f"kafka.sasl_password={KAFKA_SECRET}", f"kafka.sasl_password_env={var}"]
    started = time.monotonic()
    output = tmp_path / "up.out"  # a file, not a pipe: DEBUG output must not block `up`
    with output.open("wb") as sink:
        proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[2], env=env,
                                stdout=sink, stderr=subprocess.STDOUT)
    seen: dict[str, dict[str, str]] = {}
    try:
        while proc.poll() is None and set(seen) != set(ACTORS):
            seen |= actor_environments(ray_tmp)
            time.sleep(0.5)
        proc.wait(timeout=150)
        print(f"up with SASL settings ran {time.monotonic() - started:.0f} s")
        out = output.read_bytes()
        assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
        assert {a: e.get(var) for a, e in seen.items()} == dict.fromkeys(ACTORS, KAFKA_SECRET)
        assert KAFKA_SECRET.encode() not in out
        logs = [p for p in Path(ray_tmp).rglob("*") if p.is_file() and not p.is_symlink()]
        assert any(p.name.startswith("worker-") for p in logs)  # the actors' own logs
        files = [*logs, *(p for p in run.rglob("*") if p.is_file())]
        leaked = [str(p) for p in files if KAFKA_SECRET.encode() in p.read_bytes()]
        assert leaked == []
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)
