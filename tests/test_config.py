"""The params readers: ``load_mlflow_params`` (for the registry commands) fails as ``load_params`` does."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from resgan.config import MlflowParams, ParamsError, load_mlflow_params, load_params

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_mlflow_section_alone_is_enough_and_absent_keys_take_defaults(tmp_path):
    path = _write(tmp_path / "params.yaml", {"mlflow": {"registered_model": "digits", "champion_metric": "kid"}})
    assert load_mlflow_params(path) == MlflowParams(registered_model="digits", champion_metric="kid")
    assert load_mlflow_params(path).experiment == "resgan" and load_mlflow_params(path).tracking_retries == 5
    assert load_mlflow_params(ROOT / "params.yaml") == load_params(ROOT / "params.yaml").mlflow


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("train", "ema_decya", 0.99, "params: unknown key 'train.ema_decya' (did you mean 'train.ema_decay'?)"),
        (
            "mlflow",
            "champion_metrc",
            "fid",
            "params: unknown key 'mlflow.champion_metrc' (did you mean 'mlflow.champion_metric'?)",
        ),
        (
            "mlflow",
            "champion_metric",
            "ssim",
            "params: mlflow.champion_metric: Input should be 'fid', 'kid', 'is', "
            "'pr_precision' or 'pr_recall' (got 'ssim')",
        ),
        ("mlflow", "registered_model", 3, "params: mlflow.registered_model: Input should be a valid string (got 3)"),
    ],
)
def test_a_mistake_anywhere_is_the_same_error_as_for_the_stages(tmp_path, section, key, value, message):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw[section][key] = value
    path = _write(tmp_path / "params.yaml", raw)
    with pytest.raises(ParamsError) as strict:
        load_params(path)
    with pytest.raises(ParamsError) as mlflow_only:
        load_mlflow_params(path)
    assert str(strict.value) == str(mlflow_only.value) == message


def test_unreadable_files_are_the_same_error_too(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("mlflow:\n  registered_model: [unclosed\n")
    cases = ((broken, "params: {} is not valid YAML at line 3"), (tmp_path / "absent.yaml", "params: {} not found"))
    for path, message in cases:
        for read in (load_params, load_mlflow_params):
            with pytest.raises(ParamsError) as caught:
                read(path)
            assert str(caught.value).startswith(message.format(path)), (read.__name__, str(caught.value))
