"""Kill at any moment: SIGKILL the train stage at chosen points, re-run it each time, then check that
nothing is lost, doubled or broken; and every file the stage writes reaches its name by a rename.

The child process runs the real ``resgan train`` under an audit hook that *holds* (sleeps) when the
process opens a chosen file for writing, so each kill lands exactly where it is meant to, every time:
just after the MLflow run is created, while a checkpoint's temporary file is being written, while
MLflow logs a sample grid, while MLflow uploads the trained model. One more kill lands a seeded-random
delay after a step was logged. Which checkpoint and which grid is seeded-random too.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import tiny_params
from PIL import Image
from test_train_stage import DATA_HASH, _restore_latest, make_project, run_info, run_stage

from resgan.gan import checkpoint
from resgan.loading import load_generator
from resgan.stages import train

METRICS = ("loss/d", "loss/g", "d/real", "d/fake", "perf/img_per_s")
TRAIN_ARGS = [
    "train",
    "--params",
    "params.yaml",
    "--data",
    "data/prepared",
    "--models",
    "models",
    "--checkpoints",
    "checkpoints",
    "--metrics",
    "metrics/train.json",
    "--plots",
    "plots/train.csv",
]

# Runs `resgan train` under an audit hook. HOLDS is a JSON list of holds, taken in order: hold i waits for
# the `nth` open-for-writing of a file whose path matches `pattern` (with `if_run`: only once the MLflow store
# holds a run), writes that path into held-<i>.txt, then sleeps: until release-<i> appears when `release`,
# else until the test kills the process. (An audit event comes before the open it announces.)
LAUNCHER = r"""
import json, os, re, sqlite3, sys, time

holds = json.loads(os.environ.get("HOLDS", "[]"))
current, seen, busy = 0, 0, False

def run_exists():
    db = os.environ["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///")
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return con.execute("select count(*) from runs").fetchone()[0] > 0
    except sqlite3.Error:
        return False

def hook(event, args):
    global current, seen, busy
    if event != "open" or current >= len(holds) or busy:
        return
    path, mode, flags = args
    if isinstance(path, int):
        return
    path = os.fsdecode(os.fspath(path))
    hold = holds[current]
    writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & (os.O_WRONLY | os.O_RDWR))
    if not writing or not re.search(hold["pattern"], path):
        return
    busy = True
    try:
        if hold.get("if_run") and not run_exists():
            return
        seen += 1
        if seen < hold.get("nth", 1):
            return
        with open(f"held-{current}.txt", "w") as marker:
            marker.write(path)
        release = f"release-{current}"
        current, seen = current + 1, 0
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and not (hold.get("release") and os.path.exists(release)):
            time.sleep(0.05)
    finally:
        busy = False

sys.addaudithook(hook)
from resgan.cli import main
sys.argv = ["resgan", *sys.argv[1:]]
main()
"""


def _client() -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])


def _logged_steps(run_id: str | None, key: str = "loss/d") -> list[int]:
    if run_id is None:
        return []
    return sorted(m.step for m in _client().get_metric_history(run_id, key))


def _runs() -> list:
    client = _client()
    experiment = client.get_experiment_by_name("resgan")
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


class Child:
    """``resgan train`` in ``root`` with the given holds (see LAUNCHER); killed with SIGKILL."""

    started: list[Child] = []

    def __init__(self, root: Path, *holds: dict):
        self.root = root
        Child.started.append(self)
        for old in [*root.glob("held-*.txt"), *root.glob("release-*")]:
            old.unlink()
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", HOLDS=json.dumps(holds))
        self.log_path = root / "child.log"
        self.log = open(self.log_path, "ab")
        self.offset = self.log_path.stat().st_size
        self.process = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, *TRAIN_ARGS], cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        """What this process printed so far."""
        with open(self.log_path, "rb") as handle:
            handle.seek(self.offset)
            return handle.read().decode(errors="replace")

    def tail(self) -> str:
        return self.output()[-3000:]

    def wait_until(self, condition, what: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            code = self.process.poll()
            assert code is None, f"child exited ({code}) before {what}:\n{self.tail()}"
            assert time.monotonic() < deadline, f"no {what} within {timeout} s:\n{self.tail()}"
            time.sleep(0.1)

    def wait_held(self, i: int = 0, timeout: float = 300) -> str:
        """Wait until the process holds at hold ``i``; returns the path it was about to open."""
        marker = self.root / f"held-{i}.txt"
        self.wait_until(lambda: marker.exists() and marker.read_text(), f"hold {i}", timeout)
        return marker.read_text()

    def release(self, i: int = 0) -> None:
        (self.root / f"release-{i}").touch()

    def wait(self, timeout: float = 600) -> int:
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.log.close()

    @classmethod
    def kill_all(cls) -> None:
        """Teardown: no held child outlives its test."""
        while cls.started:
            cls.started.pop().kill()


@pytest.fixture(autouse=True)
def _no_child_left():
    yield
    Child.kill_all()


@pytest.mark.slow
def test_sigkill_at_any_moment_then_rerun(tmp_path, monkeypatch):
    params = tiny_params(train={"steps": 9, "checkpoint_every": 3, "log_every": 1, "sample_every": 2})
    project = make_project(tmp_path, params)
    monkeypatch.chdir(tmp_path)
    folder = project.checkpoints / train.run_key(params, DATA_HASH)
    rng = np.random.default_rng(20261128)
    beyond_checkpoint: Counter = Counter()  # step -> kills that found it logged but not yet checkpointed
    kills: list[str] = []

    def after_kill(what: str) -> None:
        """The invariants that hold after every kill: the latest checkpoint loads, no second run, and the
        record of what the next call will recompute (logged steps beyond the latest checkpoint)."""
        kills.append(what)
        found = checkpoint.latest(folder)
        done = 0
        if found:
            path, record = found
            with np.load(path) as data:  # complete: every array decompresses
                assert sum(data[k].size for k in data.files) > 0
            done = record["step"]
            assert [row["step"] for row in record["history"]] == list(range(1, done + 1))
        assert len(_runs()) <= 1, f"after {what}: {[(r.info.run_id, r.info.status) for r in _runs()]}"
        run_id = _runs()[0].info.run_id if _runs() else None
        for step in set(_logged_steps(run_id)):
            if step > done:
                beyond_checkpoint[step] += 1

    # 1. Just after the MLflow run is created, before the process could record its id anywhere.
    child = Child(tmp_path, {"pattern": r"/checkpoints/[0-9a-f]+/\.run\.json\.", "if_run": True})
    child.wait_held()
    child.kill()
    after_kill("after creating the run")
    assert len(_runs()) == 1 and _runs()[0].info.status == "RUNNING"

    # 2. While a checkpoint's temporary file is being written (checkpoint 3 or 6).
    ckpt = int(rng.choice([3, 6]))
    # (The 1st open is mkstemp's, which creates the file; the 2nd is numpy's, about to write into it.)
    child = Child(tmp_path, {"pattern": rf"/\.ckpt-{ckpt:08d}\.npz\.", "nth": 2})
    held = child.wait_held()
    assert list(folder.glob(f".ckpt-{ckpt:08d}.npz.*")), "the temporary checkpoint exists at the kill"
    child.kill()
    assert Path(held).parent == folder and not (folder / f"ckpt-{ckpt:08d}.npz").exists()
    after_kill(f"writing checkpoint {ckpt}")
    assert checkpoint.latest(folder) is None or checkpoint.latest(folder)[1]["step"] == ckpt - 3

    # 3. While MLflow logs a sample grid: it renders the PNG to upload (the step's metrics are logged already).
    start = ckpt - 3
    grid_step = int(rng.choice([s for s in (2, 4, 6, 8) if s > start]))
    child = Child(tmp_path, {"pattern": rf"/samples\+step\+{grid_step}\+timestamp\+\d+\+[-0-9a-f]+\.png$"})
    child.wait_held()
    child.kill()
    after_kill(f"logging the grid of step {grid_step}")
    assert grid_step in _logged_steps(_runs()[0].info.run_id)

    # 4. A seeded-random moment after the resumed process logged its first new step.
    before = len(_logged_steps(_runs()[0].info.run_id))
    child = Child(tmp_path)
    child.wait_until(lambda: len(_logged_steps(_runs()[0].info.run_id)) > before, "a new logged step")
    time.sleep(float(rng.uniform(0.0, 0.5)))  # (at most 0.5 s: in practice before the model upload)
    child.kill()
    after_kill("at a random moment")

    # 5. While MLflow uploads the trained model (the LoggedModel exists, PENDING, its files are on the way).
    child = Child(tmp_path, {"pattern": r"/mlruns/models/m-[0-9a-f]+/artifacts/"})
    child.wait_held()
    child.kill()
    after_kill("uploading the model")
    experiment_id = _runs()[0].info.experiment_id
    assert "PENDING" in {str(m.status) for m in _client().search_logged_models([experiment_id])}
    assert not (project.models / "mlflow_run.json").exists()

    # The last call runs to the end (in-process).
    figures = run_stage(project, params)
    assert figures["steps"] == 9
    print("kills:", kills, "recomputed:", dict(beyond_checkpoint))

    # One run, the same one everywhere, finished; nothing left RUNNING.
    runs = _runs()
    assert len(runs) == 1, [(r.info.run_id, r.info.status) for r in runs]
    run_id = runs[0].info.run_id
    assert runs[0].info.status == "FINISHED"
    assert run_info(project)["run_id"] == run_id
    assert json.loads((folder / "run.json").read_text())["run_id"] == run_id
    assert checkpoint.latest(folder)[1]["run_id"] == run_id
    assert runs[0].data.params["train.steps"] == "9" and runs[0].data.tags["data_hash"] == DATA_HASH

    # The step count reached 9 exactly once: 9 optimizer updates in all, whatever was killed.
    restored = _restore_latest(folder, params)
    assert int(restored.step.numpy()) == 9
    assert int(restored.g_optimizer.iterations.numpy()) == 9 and int(restored.d_optimizer.iterations.numpy()) == 9
    curve = pd.read_csv(project.plots)
    assert curve["step"].tolist() == list(range(1, 10))
    assert json.loads(project.metrics.read_text())["steps"] == 9
    assert not list(folder.glob(".*")), "temporary files of the killed checkpoint write are gone"

    # Metric histories: every step, and a step twice only where a kill made it be computed again.
    client = _client()
    for key in METRICS:
        counts = Counter(m.step for m in client.get_metric_history(run_id, key))
        assert sorted(counts) == list(range(1, 10)), key
        for step, count in counts.items():
            assert 1 <= count <= 1 + beyond_checkpoint[step], (key, step, count)
    last = {}
    for m in sorted(client.get_metric_history(run_id, "loss/d"), key=lambda m: m.timestamp):
        last[m.step] = m.value
    assert [last[s] for s in range(1, 10)] == pytest.approx(curve["loss_d"].tolist(), rel=1e-12)

    # Every sample step has a complete grid in the run (MLflow stages artifacts under a temporary name too).
    grids = Counter()
    artifacts = Path(runs[0].info.artifact_uri.removeprefix("file://")) / "images"
    for png in artifacts.glob("samples+step+*.png"):
        try:
            with Image.open(png) as image:
                image.load()
        except OSError:
            continue
        grids[int(re.search(r"\+step\+(\d+)\+", png.name).group(1))] += 1
    assert sorted(grids) == [2, 4, 6, 8, 9]

    # The model: one READY LoggedModel, the one the run file names; what kills cut short is FAILED, not PENDING.
    models = client.search_logged_models([runs[0].info.experiment_id])
    assert sorted({str(m.status) for m in models} - {"FAILED"}) == ["READY"]
    ready = [m for m in models if str(m.status) == "READY"]
    assert len(ready) == 1 and run_info(project)["model_uri"] == ready[0].model_uri
    assert ready[0].source_run_id == run_id and ready[0].tags["step"] == "9"
    generator = load_generator(project.models / "generator.keras")
    assert tuple(generator(np.zeros((2, 16), np.float32)).shape) == (2, 16, 16, 1)
    # In the checkpoint folder: checkpoints, their records, the pointers, and at most the temporary file
    # that kill 2 cut short (never read: latest.json only ever names renamed files).
    for path in folder.iterdir():
        assert re.fullmatch(r"ckpt-\d{8}\.(npz|json)|latest\.json|run\.json|\.ckpt-\d{8}\.npz\..+", path.name), path


# ---- atomic writes ---------------------------------------------------------------------------------

_EVENTS: list[tuple[str, str, str | None]] | None = None  # (event, path, renamed-to) while recording


def _audit(event: str, args: tuple) -> None:
    if _EVENTS is None or event not in ("open", "os.rename"):
        return
    if event == "os.rename":
        _EVENTS.append(("rename", os.fsdecode(os.fspath(args[0])), os.fsdecode(os.fspath(args[1]))))
        return
    path, mode, flags = args
    if isinstance(path, int):
        return
    writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & (os.O_WRONLY | os.O_RDWR))
    if writing:
        _EVENTS.append(("write", os.fsdecode(os.fspath(path)), None))


_HOOKED = False


def test_every_output_reaches_its_name_by_a_rename(tmp_path, monkeypatch):
    """Every file the train stage writes in the project (outputs, checkpoints, records) is written under a
    temporary name in the same folder and renamed over its final name: a reader never sees half a file.
    (MLflow's own store and artifacts are MLflow's business and are left out.)"""
    global _EVENTS, _HOOKED
    params = tiny_params(train={"steps": 2, "checkpoint_every": 1, "log_every": 1, "sample_every": 2})
    project = make_project(tmp_path, params)
    monkeypatch.chdir(tmp_path)
    if not _HOOKED:  # an audit hook cannot be removed: one, idle unless _EVENTS is a list
        sys.addaudithook(_audit)
        _HOOKED = True
    _EVENTS = []
    try:
        run_stage(project, params)
        events = list(_EVENTS)
    finally:
        _EVENTS = None
    root = tmp_path.resolve()

    def full(path: str) -> str:
        return str((tmp_path / path).resolve())  # relative paths are relative to the project root (cwd)

    def ours(path: str) -> bool:
        path = Path(full(path))
        return root in path.parents and root / "mlruns" not in path.parents and not path.name.startswith("mlflow.db")

    written = {full(p) for kind, p, _ in events if kind == "write" and ours(p)}
    renames = [(full(src), full(dst)) for kind, src, dst in events if kind == "rename" and ours(dst)]
    inputs = {
        project.params_path,
        tmp_path / "dvc.yaml",
        tmp_path / "dvc.lock",
        project.data / "train.npz",
        project.data / "summary.json",
    }
    finals = {full(str(p)) for p in tmp_path.rglob("*") if p.is_file() and ours(str(p))}
    finals -= {full(str(p)) for p in inputs}
    expected = {
        "generator.keras",
        "mlflow_run.json",
        "train.json",
        "train.csv",
        "latest.json",
        "run.json",
        "ckpt-00000001.npz",
        "ckpt-00000001.json",
        "ckpt-00000002.npz",
        "ckpt-00000002.json",
    }
    assert {Path(p).name for p in finals} == expected
    for final in finals:
        assert final not in written, f"{final} was opened for writing under its own name"
        assert final in {dst for _, dst in renames}, f"{final} did not come from a rename"
    for source, final in renames:  # each a temporary file beside its target, written, then renamed
        assert Path(source).parent == Path(final).parent and Path(source).name.startswith(f".{Path(final).name}.")
        assert source in written
    # Nothing else was written under the project (outside MLflow's store), and no temporary file is left.
    assert written == {source for source, _ in renames}
    assert not [p for p in tmp_path.rglob(".*") if p.is_file() and ours(str(p))]
