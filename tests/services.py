"""The parts a team runs, started for the team-mode tests on 127.0.0.1: a throwaway PostgreSQL cluster,
an S3 server (moto), and ``mlflow server`` on both (PostgreSQL backend, artifacts proxied to
``s3://<bucket>/mlflow``, optionally MLflow's basic-auth app). Session fixtures start each once and stop
it whatever happens; every process is ended by its id (PostgreSQL's postmaster through ``pg_ctl stop``,
which reads its pid file; ``mlflow server`` by its process group). Where PostgreSQL or the ``team``
extra is missing, the tests that need them skip with one line.

``python -m tests.services up|down`` (``make team-up`` / ``make team-down``) starts the same three
services for a person to try team mode and prints the ``export`` lines to use.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


def free_port() -> int:
    from mlflow_server import (
        free_port,  # imports MLflow: only when a service starts, not at collection
    )

    return free_port()


BUCKET = "resgan-team"
# moto accepts any key pair; MLflow's server and DVC sign their S3 requests with these.
S3_KEYS = {
    "AWS_ACCESS_KEY_ID": "team-test-key",
    "AWS_SECRET_ACCESS_KEY": "team-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
PG_USER, PG_DB = "postgres", "mlflow"
ADMIN, ADMIN_PASSWORD = "admin", "admin-pass-8c1f"  # the basic-auth server's first admin (a test password)


def pg_bin() -> Path | None:
    """The folder of PostgreSQL's ``initdb``/``pg_ctl``: on the PATH, else Debian's versioned folder."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return versions[-1].parent if versions else None


def _as_postgres(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run ``args`` as the ``postgres`` system user."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


@dataclass
class Postgres:
    """A PostgreSQL cluster under the system temp folder, on 127.0.0.1:``port``, trust auth for local users."""

    bin: Path
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="resgan-pg-")))
    port: int = field(default_factory=free_port)
    started_in: float = 0.0  # seconds (initdb + start + CREATE DATABASE)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def uri(self, database: str = PG_DB) -> str:
        """The backend store URI for ``mlflow server`` (SQLAlchemy with psycopg2)."""
        return f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = PG_DB) -> str:
        return f"host=127.0.0.1 port={self.port} user={PG_USER} dbname={database}"

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            _as_postgres([str(self.bin / args[0]), *args[1:]]), capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")

    def init(self) -> Postgres:
        began = time.monotonic()
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        # trust: any local user, no password; the cluster listens on 127.0.0.1 only and lives minutes.
        self._run("initdb", "-D", str(self.data), "-U", PG_USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()
        self.create_database(PG_DB)
        self.started_in = time.monotonic() - began
        return self

    def create_database(self, name: str) -> str:
        """A new, empty database ``name`` in the cluster (one per ``mlflow server``); returns its name."""
        import psycopg2

        connection = psycopg2.connect(self.dsn("postgres"))
        connection.autocommit = True
        try:  # not `with connection`: psycopg2 opens a transaction there, and CREATE DATABASE refuses one
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {name}")
        finally:
            connection.close()
        return name

    def start(self) -> None:
        """Start (or restart) the cluster on the same port and data; returns once it accepts connections."""
        # -k: the Unix socket in our folder (not /var/run/postgresql); fsync off: a throwaway cluster.
        options = f"-h 127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.folder / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        """Stop the postmaster that ``postmaster.pid`` names (fast: open connections are cut)."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def rows(self, sql: str, database: str = PG_DB) -> list[tuple]:
        """The rows of one query against MLflow's database (psycopg2, as an administrator would look)."""
        import psycopg2

        connection = psycopg2.connect(self.dsn(database))
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql)
                return cursor.fetchall()
        finally:
            connection.close()

    def dump(self, database: str = PG_DB) -> str:
        """A whole database as SQL text (``pg_dump``): what a grep for a secret reads."""
        result = subprocess.run(
            _as_postgres([str(self.bin / "pg_dump"), "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER, database]),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout


class S3Server:
    """moto's S3 server on 127.0.0.1 (a free port), in a thread of this process, with bucket ``BUCKET``."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        began = time.monotonic()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per S3 request
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.client().create_bucket(Bucket=BUCKET)
        self.started_in = time.monotonic() - began

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"],
            region_name=S3_KEYS["AWS_DEFAULT_REGION"],
        )

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` in the bucket."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def objects(self, prefix: str = "") -> dict[str, bytes]:
        client = self.client()
        return {key: client.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in self.keys(prefix)}

    @property
    def env(self) -> dict[str, str]:
        """What a process that talks to this S3 needs: keys and the endpoint (MLflow's name for it)."""
        return {**S3_KEYS, "MLFLOW_S3_ENDPOINT_URL": self.endpoint}

    def stop(self) -> None:
        self.server.stop()


class TeamServer:
    """``mlflow server`` with a PostgreSQL backend and artifacts proxied to ``s3://BUCKET/<prefix>``;
    ``auth=True`` runs MLflow's basic-auth app (its user table in the same PostgreSQL database)."""

    def __init__(
        self,
        postgres: Postgres,
        s3: S3Server,
        folder: Path,
        prefix: str = "mlflow",
        auth: bool = False,
        port: int | None = None,
        s3_endpoint: str | None = None,
        database: str = PG_DB,
    ):
        self.postgres, self.s3, self.folder, self.prefix, self.auth = postgres, s3, Path(folder), prefix, auth
        self.database = database
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.s3_endpoint = s3_endpoint or s3.endpoint
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None
        self.started_in = 0.0

    def command(self) -> list[str]:
        args = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--backend-store-uri",
            self.postgres.uri(self.database),
            "--artifacts-destination",
            f"s3://{BUCKET}/{self.prefix}",
            "--workers",
            "1",
        ]
        return args + (["--app-name", "basic-auth"] if self.auth else [])

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            **self.s3.env,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
            # No background job runner: the tests need none, and it doubles the server's start-up.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            env.pop(name, None)
        if self.auth:
            config = self.folder / "basic_auth.ini"
            config.write_text(
                "[mlflow]\ndefault_permission = READ\n"
                f"database_uri = {self.postgres.uri(self.database)}\nadmin_username = {ADMIN}\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            )
            env.update(
                MLFLOW_AUTH_CONFIG_PATH=str(config),
                MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD,
                MLFLOW_FLASK_SERVER_SECRET_KEY="team-test-flask-secret",
            )
        return env

    def start(self, timeout: float = 180) -> TeamServer:
        from mlflow_server import start_server

        began = time.monotonic()
        self.process = start_server(
            self.command(),
            probe=f"{self.uri}/health",
            log=self.folder / "server.log",
            cwd=self.folder,
            env=self.env(),
            timeout=timeout,
        )
        self.started_in = time.monotonic() - began
        return self

    def stop(self) -> None:
        from mlflow_server import stop_server

        if self.process is not None:
            stop_server(self.process)

    def log(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> TeamServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------- session fixtures


def _report(what: str, seconds: float) -> None:
    # Shown with pytest -s, and in the -ra summary's captured output: each fixture's start-up time.
    print(f"\n[team services] {what} started in {seconds:.2f} s", file=sys.stderr)


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL cluster for the session (skips, in one line, where PostgreSQL is not installed)."""
    pytest.importorskip("psycopg2", reason="the team extra is not installed: pip install -e '.[team]'")
    folder = pg_bin()
    if folder is None:
        pytest.skip("PostgreSQL is not installed (no initdb): apt-get install postgresql")
    cluster = Postgres(folder)
    try:
        cluster.init()
        _report(f"PostgreSQL on 127.0.0.1:{cluster.port}", cluster.started_in)
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture(scope="session")
def s3():
    """moto's S3 server for the session, with the bucket made."""
    pytest.importorskip("moto", reason="the team extra is not installed: pip install -e '.[team]'")
    pytest.importorskip("boto3", reason="the team extra is not installed: pip install -e '.[team]'")
    server = S3Server()
    try:
        _report(f"S3 (moto) at {server.endpoint}", server.started_in)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def team_server(postgres, s3, tmp_path_factory):
    """``mlflow server`` on PostgreSQL + S3 (proxied artifacts) for the session."""
    with TeamServer(postgres, s3, tmp_path_factory.mktemp("team-server")) as server:
        _report(f"mlflow server (PostgreSQL + S3) at {server.uri}", server.started_in)
        yield server


# ---------------------------------------------------------------- make team-up / team-down

STATE = Path(tempfile.gettempdir()) / "resgan-team"


def up() -> None:
    """Start PostgreSQL, an S3 server and ``mlflow server`` on 127.0.0.1; print the exports to use.

    moto runs in a thread, so this process stays in the foreground until Ctrl-C (or ``down``)."""
    folder = pg_bin()
    if folder is None:
        sys.exit("PostgreSQL is not installed (no initdb on the PATH or in /usr/lib/postgresql/*/bin)")
    STATE.mkdir(parents=True, exist_ok=True)
    cluster = Postgres(folder).init()
    s3 = S3Server()
    server = TeamServer(cluster, s3, STATE / "server", port=5000)
    try:
        server.start()
        (STATE / "pids").write_text(f"{os.getpid()}\n")
        print(
            f"PostgreSQL {cluster.uri()}\nS3 {s3.endpoint} (bucket {BUCKET})\nmlflow server {server.uri}\n\n"
            "# in the shell you run the pipeline from (the dvc lines in the project):\n"
            f"export MLFLOW_TRACKING_URI={server.uri}\n"
            f"dvc remote add -d team s3://{BUCKET}/dvc\n"
            f"dvc remote modify team endpointurl {s3.endpoint}\n"
            f"dvc remote modify --local team access_key_id {S3_KEYS['AWS_ACCESS_KEY_ID']}\n"
            f"dvc remote modify --local team secret_access_key {S3_KEYS['AWS_SECRET_ACCESS_KEY']}\n"
            "\n(Ctrl-C or `make team-down` stops all three)",
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while server.process.poll() is None:
            time.sleep(1)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.stop()
        s3.stop()
        cluster.remove()
        shutil.rmtree(STATE, ignore_errors=True)
        print("team services stopped")


def down() -> None:
    """Stop what :func:`up` started (it stops its three services on SIGTERM)."""
    pids = STATE / "pids"
    if not pids.exists():
        print("no team services running")
        return
    os.kill(int(pids.read_text().split()[0]), signal.SIGTERM)
    print("stopping team services")


if __name__ == "__main__":
    {"up": up, "down": down}[sys.argv[1] if len(sys.argv) > 1 else "up"]()
