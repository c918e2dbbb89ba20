"""A real ``mlflow server`` for the tests that involve one: a free 127.0.0.1 port, its own SQLite store,
artifacts proxied to a folder only it writes. It can be stopped and started again on the same port with
the same store (the outage tests do)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """``mlflow server`` under ``root`` (``mlflow.db``, ``artifacts/``, ``server.log``); ``with`` starts and stops it."""

    def __init__(self, root: Path, env: dict[str, str] | None = None):
        self.root, self.port, self.env = Path(root), free_port(), env
        self.uri = f"http://127.0.0.1:{self.port}"
        self.root.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> "MlflowServer":
        """Start it and wait until ``/health`` answers; fail the test with the server's log otherwise."""
        with open(self.root / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                 "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                 "--artifacts-destination", str(self.root / "artifacts"), "--workers", "1"],
                cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, (self.root / "server.log").read_text(errors="replace")[-3000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            assert time.monotonic() < deadline, f"mlflow server not healthy within {timeout} s"
            time.sleep(0.3)

    def stop(self) -> None:
        """SIGTERM to its process group (the server and the workers it started); SIGKILL after 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def client(self) -> mlflow.MlflowClient:
        return mlflow.MlflowClient(tracking_uri=self.uri)

    def __enter__(self) -> "MlflowServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
