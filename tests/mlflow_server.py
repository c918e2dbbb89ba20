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
import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    args: list[str], probe: str, log: Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.Popen:
    """Start a server in its own process group, its output appended to ``log``; wait until ``probe``
    answers 200, or fail the test with the end of the log."""
    with open(log, "ab") as handle:
        process = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            stop_server(process)
            pytest.fail(
                f"{' '.join(args[:4])} did not come up within {timeout} s:\n{log.read_text(errors='replace')[-3000:]}"
            )
        try:
            with urllib.request.urlopen(probe, timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            pass
        time.sleep(0.3)


def stop_server(process: subprocess.Popen) -> None:
    """SIGTERM to its process group (the server and the workers it started); SIGKILL after 30 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class MlflowServer:
    """``mlflow server`` under ``root`` (``mlflow.db``, ``artifacts/``, ``server.log``); ``with`` starts and stops it."""

    def __init__(self, root: Path, env: dict[str, str] | None = None):
        self.root, self.port, self.env = Path(root), free_port(), env
        self.uri = f"http://127.0.0.1:{self.port}"
        self.root.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> MlflowServer:
        """Start it and wait until ``/health`` answers; fail the test with the server's log otherwise."""
        self.process = start_server(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--backend-store-uri",
                f"sqlite:///{self.root / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.root / "artifacts"),
                "--workers",
                "1",
            ],
            probe=f"{self.uri}/health",
            log=self.root / "server.log",
            cwd=self.root,
            env=self.env,
            timeout=timeout,
        )
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_server(self.process)

    def client(self) -> mlflow.MlflowClient:
        return mlflow.MlflowClient(tracking_uri=self.uri)

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
