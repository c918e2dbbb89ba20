"""Bad params, fuzzed: random mutations of the project's params.yaml are rejected naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resgan.config import SECTIONS, ParamsError, load_params, parse_params

ROOT = Path(__file__).resolve().parents[2]
VALID = yaml.safe_load((ROOT / "params.yaml").read_text())
KEYS = [(section, key) for section, values in VALID.items() for key in values]
BAD_VALUES = st.sampled_from(["abc", "", -1, 0, -0.5, 10**12, 1e300, 1.5, True, None, [], {}, [1, 2], {"a": 1}])


def _dotted(section: str, key: str) -> str:
    return f"{section}.{key}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(KEYS), BAD_VALUES)
def test_a_mutated_value_is_accepted_or_rejected_naming_its_key(where, value):
    section, key = where
    raw = yaml.safe_load(yaml.safe_dump(VALID))
    raw[section][key] = value
    try:
        params = parse_params(raw)
    except ParamsError as error:
        assert _dotted(section, key) in str(error), str(error)
        assert "\n" not in str(error)
    else:  # accepted: then the value really is of the field's type and range, and it was kept
        assert getattr(getattr(params, section), key) == (tuple(value) if isinstance(value, list) else value)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(SECTIONS)), st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))
def test_unknown_keys_are_rejected_with_their_name(section, key):
    raw = yaml.safe_load(yaml.safe_dump(VALID))
    if key in raw[section]:
        return
    raw[section][key] = 1
    with pytest.raises(ParamsError, match=rf"unknown key '{section}\.{key}'"):
        parse_params(raw)


def test_a_typo_suggests_the_nearest_key():
    raw = yaml.safe_load(yaml.safe_dump(VALID))
    raw["train"]["ema_decya"] = raw["train"].pop("ema_decay")
    with pytest.raises(ParamsError, match=r"unknown key 'train.ema_decya' \(did you mean 'train.ema_decay'\?\)"):
        parse_params(raw)


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_a_missing_section_is_named(tmp_path, section):
    raw = yaml.safe_load(yaml.safe_dump(VALID))
    del raw[section]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=rf"no section '{section}'"):
        load_params(path)


def test_the_project_params_are_valid_and_equal_the_defaults():
    from resgan.config import Params

    assert load_params(ROOT / "params.yaml") == Params()


def test_bad_params_stop_the_cli_before_tensorflow_is_imported(tmp_path):
    raw = yaml.safe_load(yaml.safe_dump(VALID))
    raw["train"]["lr_g"] = "fast"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    code = (
        "import sys\nfrom resgan.cli import main\nsys.argv = ['resgan', 'train', '--params', sys.argv[1]]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    print('exit', e.code, 'tensorflow' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "exit 1 False"
    assert result.stderr.strip().splitlines() == [
        "error: params: train.lr_g: Input should be a valid number (got 'fast')"
    ]
