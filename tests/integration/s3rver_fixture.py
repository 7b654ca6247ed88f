"""A local S3 store for durable-broker tests: s3rver (npm, disk-backed) as a child process.

Test infrastructure, not product code: the daemon only sees an `s3://bucket/` storage URL and
the AWS_* variables that Tansu's S3 client (Rust `object_store`) reads. Install s3rver with
`make s3rver` (npm into .cache/s3rver/); a missing binary fails the test, it never skips.

What Tansu 0.6 needs against s3rver (found by experiment):
- AWS_ENDPOINT=http://127.0.0.1:PORT (AWS_ENDPOINT_URL works too);
- AWS_ALLOW_HTTP=true, or every request fails with a reqwest "BadScheme" builder error;
- AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY = S3RVER / S3RVER (s3rver's built-in account;
  other keys get 403). Without keys, Tansu asks the EC2 metadata service for credentials;
- AWS_DEFAULT_REGION: any value, set so that nothing depends on the caller's environment;
- the bucket must exist before Tansu uses it: with a missing bucket, metadata requests still
  answer (no topics) and topic creation fails with an undecodable response, nothing logged.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
S3RVER_BIN = REPO / ".cache" / "s3rver" / "node_modules" / ".bin" / "s3rver"
# s3rver prints this line once the HTTP server listens and the bucket exists (even with
# --silent); with `-p 0` it is the only way to learn the port the OS picked.
_LISTENING = re.compile(rb"S3rver listening on [^:\s]+:(\d+)")
_KEY = "S3RVER"  # s3rver's built-in access key id and secret


@dataclass(frozen=True)
class S3rver:
    """A running s3rver: where it listens and what Tansu needs to use it."""

    port: int
    bucket: str
    directory: Path
    pid: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage(self) -> str:
        """The broker's storage URL, for EmbeddedBroker(storage=...)."""
        return f"s3://{self.bucket}/"

    @property
    def env(self) -> dict[str, str]:
        """The variables Tansu needs, for EmbeddedBroker(env=...)."""
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": _KEY,
            "AWS_SECRET_ACCESS_KEY": _KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
        }


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM s3rver when the test process dies (Linux), so no store is left
    behind by a killed pytest. Only set from the main thread (see embedded.py)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def _check_installed() -> None:
    if not S3RVER_BIN.exists():
        raise RuntimeError(
            f"s3rver is not installed (no {S3RVER_BIN}); run `make s3rver` "
            "(npm install --prefix .cache/s3rver s3rver@3.7.1)"
        )
    if shutil.which("node") is None:
        raise RuntimeError("s3rver needs Node.js: install `node` (Debian: apt-get install nodejs)")


@contextmanager
def running_s3rver(
    directory: Path, bucket: str = "tansu", start_timeout_s: float = 20.0
) -> Iterator[S3rver]:
    """Start s3rver on a free loopback port, storing under `directory`, with `bucket` created;
    yield it; stop it (SIGTERM by pid, SIGKILL after 5 s). The data stays in `directory`.

    `start_timeout_s` 20 s: node starts in about 0.5 s, more on a loaded 2-core machine.
    """
    _check_installed()
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory.parent / f"{directory.name}-s3rver.log"
    cmd = [str(S3RVER_BIN), "--directory", str(directory), "--address", "127.0.0.1"]
    cmd += ["--port", "0", "--silent", "--configure-bucket", bucket]
    main_thread = threading.current_thread() is threading.main_thread()
    on_linux_main = sys.platform.startswith("linux") and main_thread
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of the test run reaches it only through us
            preexec_fn=_die_with_parent if on_linux_main else None,
        )
    try:
        port = _wait_listening(proc, log_path, start_timeout_s)
        # The bucket is made before the "listening" line; check anyway for a clear error.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{bucket}", timeout=5) as r:
            assert r.status == 200, f"bucket {bucket}: HTTP {r.status}"
        yield S3rver(port, bucket, directory, proc.pid)
    finally:
        if proc.poll() is None:
            proc.terminate()  # node has no SIGTERM handler: it exits at once
            try:
                proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_listening(proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        text = log_path.read_bytes()
        if m := _LISTENING.search(text):
            return int(m.group(1))
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is not None:
                state = f"exited with code {proc.returncode}"
            else:
                state = f"did not listen within {timeout_s} s"
            tail = text[-2000:].decode("utf-8", "replace")
            raise RuntimeError(f"s3rver {state}; its log {log_path} ends with:\n{tail}")
        time.sleep(0.05)
