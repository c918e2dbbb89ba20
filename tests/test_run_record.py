"""One run's state, read in one place (resgan.gan.checkpoint.RunRecord): which file wins, what a resumed run
keeps, and the models folder's run pointer."""

from __future__ import annotations

import json

import pytest

from resgan.errors import ResganError
from resgan.gan import checkpoint

HISTORY = [{"step": s, "loss_d": float(s)} for s in (1, 2, 3, 4)]


def test_the_checkpoint_record_names_the_run_before_run_json(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"run_id": "from-run-json"}))
    record = checkpoint.RunRecord.load(
        tmp_path,
        4,
        {
            "step": 4,
            "run_id": "from-checkpoint",
            "history": HISTORY,
            "fid_history": [{"step": 4, "fid": 3.0}],
            "model_uri": "models:/m-1",
            "ada_p": 0.25,
        },
    )
    assert (record.run_id, record.step, record.model_uri, record.ada_p) == ("from-checkpoint", 4, "models:/m-1", 0.25)
    assert record.history == HISTORY and record.run_file == tmp_path / "run.json"


def test_without_a_checkpoint_run_json_names_the_run_at_step_0(tmp_path):
    assert checkpoint.RunRecord.load(tmp_path, 0, {}).run_id is None
    (tmp_path / "run.json").write_text(json.dumps({"launch": "token-only"}))  # killed before the run existed
    assert checkpoint.RunRecord.load(tmp_path, 0, {}).run_id is None
    (tmp_path / "run.json").write_text(json.dumps({"run_id": "r1"}))
    record = checkpoint.RunRecord.load(tmp_path, 0, {})
    assert (record.run_id, record.history, record.fid_history, record.model_uri) == ("r1", [], [], None)


def test_rows_after_the_resumed_step_are_dropped(tmp_path):
    record = checkpoint.RunRecord.load(
        tmp_path, 2, {"step": 4, "history": HISTORY, "fid_history": [{"step": 2}, {"step": 4}], "model_uri": "m"}
    )
    assert [row["step"] for row in record.history] == [1, 2] and record.fid_history == [{"step": 2}]
    assert record.model_uri is None  # logged at step 4, not at the step resumed from


def test_best_json_counts_only_up_to_the_resumed_step_and_with_its_generator(tmp_path):
    checkpoint.RunRecord(tmp_path).write_best({"step": 3, "fid": 1.5})
    assert checkpoint.RunRecord(tmp_path, 4).best() is None  # its generator is missing
    (tmp_path / "best_generator.keras").write_bytes(b"model")
    assert checkpoint.RunRecord(tmp_path, 4).best() == {"step": 3, "fid": 1.5}
    assert checkpoint.RunRecord(tmp_path, 2).best() is None  # recorded at a step that is trained again


def test_the_run_pointer_round_trips_and_a_missing_one_says_what_to_do(tmp_path):
    pointer = {
        "run_id": "r",
        "experiment_id": "1",
        "tracking_uri": "sqlite:///x.db",
        "model_uri": "models:/m-2",
        "checkpoint": "checkpoints/abc",
    }
    checkpoint.write_pointer(tmp_path / "mlflow_run.json", **pointer)
    assert json.loads((tmp_path / "mlflow_run.json").read_text()) == pointer
    assert checkpoint.read_pointer(tmp_path / "mlflow_run.json") == pointer
    with pytest.raises(ResganError, match="not found: run the train stage first"):
        checkpoint.read_pointer(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"model_uri": "m"}))
    with pytest.raises(ResganError, match="holds no run_id"):
        checkpoint.read_pointer(tmp_path / "bad.json")
