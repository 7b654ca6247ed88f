"""A local S3 store for durable-broker tests: moto's S3 server in a child process.

Test infrastructure, not product code: the daemon only sees an `s3://bucket/` storage URL and
the AWS_* variables that Tansu's S3 client (Rust `object_store`) reads.

Why moto and not s3rver (used before): Tansu's S3 engine keeps its counters (producer ids,
partition watermarks, group state) correct under concurrency with conditional writes
(`PUT` with If-Match / If-None-Match). s3rver 3.7 ignores those headers on PUT, so two
producers started together both got producer id 1 and every later send failed with
OutOfOrderSequenceNumber. moto answers them as S3 does (412 Precondition Failed), and this
process serializes requests so that its check-then-write is atomic too. The store lives in
memory: the tests kill the broker, not the store.

What Tansu 0.6 needs from the environment (found by experiment):
- AWS_ENDPOINT=http://127.0.0.1:PORT;
- AWS_ALLOW_HTTP=true, or every request fails with a reqwest "BadScheme" builder error;
- AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY: any (moto accepts every key); without them
  Tansu asks the EC2 metadata service for credentials;
- AWS_CONDITIONAL_PUT=etag: conditional writes by ETag, explicitly;
- AWS_DEFAULT_REGION: any value, so that nothing depends on the caller's environment;
- the bucket must exist before Tansu uses it: with a missing bucket, metadata requests still
  answer (no topics) and topic creation fails with an undecodable response, nothing logged.

Run as a script (`python s3_store.py BUCKET`), it serves on a free loopback port and prints
`listening on PORT` once the bucket exists.
"""

from __future__ import annotations

import ctypes
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_LISTENING = re.compile(rb"listening on (\d+)")
_KEY = "online-distill-test"  # moto accepts any credentials


@dataclass(frozen=True)
class S3Store:
    """A running S3 store: where it listens and what Tansu needs to use it."""

    port: int
    bucket: str
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
            "AWS_CONDITIONAL_PUT": "etag",
            "AWS_DEFAULT_REGION": "us-east-1",
        }


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM the store when the test process dies (Linux), so no store is left
    behind by a killed pytest. Only set from the main thread (see embedded.py)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


@contextmanager
def running_s3_store(log_path: Path, bucket: str = "tansu",
                     start_timeout_s: float = 60.0) -> Iterator[S3Store]:
    """Start the store on a free loopback port with `bucket` created; yield it; stop it
    (SIGTERM by pid, SIGKILL after 5 s). Its log goes to `log_path`.

    `start_timeout_s` 60 s: importing moto takes about 2 s, more on a loaded 2-core machine.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    on_linux_main = (sys.platform.startswith("linux")
                     and threading.current_thread() is threading.main_thread())
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, __file__, bucket],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of the test run reaches it only through us
            preexec_fn=_die_with_parent if on_linux_main else None,
        )
    try:
        yield S3Store(_wait_listening(proc, log_path, start_timeout_s), bucket, proc.pid)
    finally:
        if proc.poll() is None:
            proc.terminate()
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
            state = (f"exited with code {proc.returncode}" if proc.poll() is not None
                     else f"did not listen within {timeout_s} s")
            tail = text[-2000:].decode("utf-8", "replace")
            raise RuntimeError(f"the S3 store {state}; its log {log_path} ends with:\n{tail}")
        time.sleep(0.1)


def _serialized(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """The WSGI app with one request at a time: moto checks a condition, then writes; two
    conditional PUTs of the same key must not interleave between the two."""
    lock = threading.Lock()

    def call(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with lock:
            return list(app(environ, start_response))
    return call


def _serve(bucket: str) -> None:
    import boto3
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", 0, _serialized(app), threaded=True,
                         request_handler=MotoRequestHandler)
    port = server.socket.getsockname()[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                 aws_access_key_id=_KEY, aws_secret_access_key=_KEY).create_bucket(Bucket=bucket)
    print(f"listening on {port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    threading.Event().wait()


if __name__ == "__main__":
    _serve(sys.argv[1] if len(sys.argv) > 1 else "tansu")
