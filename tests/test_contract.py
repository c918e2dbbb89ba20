"""Each stage reads exactly the params dvc.yaml gives it: a change to any param it reads re-runs it, and a
change to one it does not read leaves it alone. The stages read params through a view of their declared
sections and keys (resgan.config.ParamsView), which refuses any other read and records what was read."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
import yaml
from conftest import tiny_params

from resgan.config import UndeclaredParamError

ROOT = Path(__file__).resolve().parents[1]


def declared() -> dict[str, set[str]]:
    """dvc.yaml's params per stage (entries naming params.yaml: a section or ``section.key``)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        entries = set()
        for entry in stage.get("params", []):
            assert isinstance(entry, str), f"{name}: params from another file ({entry}) are not read by any stage"
            entries.add(entry)
        out[name] = entries
    return out


def test_every_stage_module_reads_what_dvc_yaml_declares_for_it():
    stages = declared()
    assert set(stages) == {"prepare", "classifier", "train", "sample", "evaluate"}
    for name, entries in stages.items():
        module = importlib.import_module(f"resgan.stages.{name}")
        assert set(module.PARAMS) == entries, (
            f"stage {name}: dvc.yaml declares {sorted(entries)}, the stage reads {sorted(module.PARAMS)}"
        )


def test_the_drift_once_found_stays_fixed():
    stages = declared()
    # train records prepare.* with its run, so dvc.yaml gives it prepare; the batch sizes of the
    # evaluation and the sample stage are theirs alone (FID over training measures 256 images a batch).
    assert "prepare" in stages["train"]
    assert not {"evaluate.batch_size", "sample.batch_size", "evaluate", "sample"} & stages["train"]


def test_a_view_refuses_what_is_not_declared_and_records_what_is_read():
    params = tiny_params()
    view = params.view(("train", "sample.grid", "mlflow"), "train")
    assert view.train is params.train and view.sample.grid == 16
    with pytest.raises(
        UndeclaredParamError, match="the train stage reads params 'sample.batch_size', which dvc.yaml does not give it"
    ):
        _ = view.sample.batch_size
    with pytest.raises(UndeclaredParamError, match="the train stage reads params 'evaluate'"):
        _ = view.evaluate
    assert view.read == {"train", "sample.grid"}
    flat = view.flat()
    assert set(flat) == {k for k in params.flat() if k.startswith(("train.", "mlflow."))} | {"sample.grid"}
    assert view.read == {"train", "sample.grid", "mlflow"}
    # A stage handed a caller's view narrows it, and its reads are recorded in the caller's view too.
    inner = view.view(("mlflow", "evaluate"), "inner")
    assert inner.mlflow is params.mlflow
    with pytest.raises(UndeclaredParamError, match="the inner stage reads params 'evaluate'"):
        _ = inner.evaluate


@pytest.mark.slow
def test_each_stage_reads_every_param_it_declares_and_no_other(tmp_path, monkeypatch):
    """The tiny pipeline in-process (prepare, classifier, train with FID over training, sample, evaluate),
    each stage handed a view of what dvc.yaml declares for it: no stage reads anything else (the view
    raises), and every declared section or key is read."""
    from resgan.stages import classifier, evaluate, prepare, sample, train

    stages = declared()
    params = tiny_params(
        train={"steps": 2, "eval_every": 2, "eval_num": 20, "checkpoint_every": 2},
        evaluate={"features": "classifier", "metrics": ["fid", "ssim"], "ssim_pairs": 10},
        sample={"num": 40},
        classifier={"kind": "classifier"},
    )
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    views = {name: params.view(tuple(entries), name) for name, entries in stages.items()}
    data, models = tmp_path / "data", tmp_path / "models"
    prepare.run(views["prepare"].prepare, data)
    classifier.run(views["classifier"].classifier, data, models / "classifier.keras", tmp_path / "classifier.json")
    train.run(
        views["train"],
        train.TrainPaths(
            params=tmp_path / "params.yaml",
            data=data,
            models=models,
            checkpoints=tmp_path / "checkpoints",
            metrics=tmp_path / "train.json",
            plots=tmp_path / "train.csv",
            classifier=models / "classifier.keras",
            fid=tmp_path / "fid.csv",
        ),
    )
    sample.run(views["sample"], models / "generator.keras", tmp_path / "samples")
    evaluate.run(
        views["evaluate"],
        tmp_path / "samples" / "samples.npz",
        data,
        models / "classifier.keras",
        models / "mlflow_run.json",
        tmp_path / "eval.json",
        tmp_path / "plots",
    )
    for name, entries in stages.items():
        assert views[name].read == entries, f"stage {name} declares {sorted(entries)}, read {sorted(views[name].read)}"
    assert os.path.exists(tmp_path / "eval.json")
