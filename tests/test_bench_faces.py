"""``benchmarks.faces``: the faces benchmark's folders, scores and a quick run on tiny made-up faces.

The faces are drawn here (16x16 grey: an oval face, two eyes and a mouth placed per person, lit from
a different side in each photograph), so no test needs the real photographs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from benchmarks import faces


def make_faces(folder, people: int = 4, photos: int = 8, size: int = 16) -> None:
    """``people`` folders of ``photos`` face-like PNGs each."""
    yy, xx = np.mgrid[:size, :size] / (size - 1) * 2 - 1  # -1..1
    rng = np.random.default_rng(0)
    for p in range(people):
        eye_y, eye_dx, mouth_w = -0.25 + 0.1 * (p % 2), 0.3 + 0.05 * p, 0.2 + 0.08 * (p % 3)
        face = ((xx / 0.7) ** 2 + (yy / 0.9) ** 2 < 1).astype(float) * 0.8
        for dx in (-eye_dx, eye_dx):
            face[(xx - dx) ** 2 + (yy - eye_y) ** 2 < 0.02] = 0.1
        face[(np.abs(xx) < mouth_w) & (np.abs(yy - 0.45) < 0.07)] = 0.2
        (folder / f"person{p:02d}").mkdir(parents=True)
        for i in range(photos):
            angle = 2 * np.pi * i / photos
            light = 0.6 + 0.4 * (np.cos(angle) * xx + np.sin(angle) * yy)
            image = np.clip(face * light + rng.normal(0, 0.02, face.shape), 0, 1)
            Image.fromarray((255 * image).astype(np.uint8)).save(folder / f"person{p:02d}" / f"{i}.png")


def test_the_subset_holds_n_a_person_and_the_rest_is_held_out(tmp_path):
    make_faces(tmp_path / "faces", people=3, photos=7)
    folders = faces.split_people(tmp_path / "faces", tmp_path / "work", per_person=5)
    assert sorted(p.name for p in folders["subset"].iterdir()) == ["person00", "person01", "person02"]
    assert [len(list((folders["subset"] / f"person{p:02d}").glob("*.png"))) for p in range(3)] == [5, 5, 5]
    subset = {f"{p.parent.name}_{p.name}" for p in folders["subset"].rglob("*.png")}
    flat = {p.name for p in folders["subset_flat"].glob("*.png")}
    heldout = {p.name for p in folders["heldout"].glob("*.png")}
    assert flat == subset and len(heldout) == 3 * 2 and not heldout & subset
    assert len(list(folders["all_flat"].glob("*.png"))) == 21
    # The same pixels as the source: a photograph is copied, not redrawn.
    name = min(heldout)
    person, _, file = name.partition("_")
    np.testing.assert_array_equal(
        np.asarray(Image.open(folders["heldout"] / name)), np.asarray(Image.open(tmp_path / "faces" / person / file))
    )


def test_memorization_noise_is_the_binomial_spread_of_a_difference():
    # 0.1 of 1,000 and 0.05 of 400: sqrt(0.09 / 1000 + 0.0475 / 400) = sqrt(0.00009 + 0.00011875) = 0.01445
    assert faces.memorization_noise(0.1, 0.05, 1000, 400) == pytest.approx(0.014449, abs=1e-6)
    assert faces.memorization_noise(0.0, 0.0, 1000, 1000) == 0.0


def test_a_missing_faces_folder_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        faces.main(["--faces", str(tmp_path / "nowhere")])
    assert "pass --faces DIR or set RESGAN_FACES" in str(stop.value) and "nowhere" in str(stop.value)


@pytest.mark.slow
def test_quick_run_on_made_up_faces_scores_and_draws_each_case(tmp_path):
    make_faces(tmp_path / "faces", people=4, photos=10)
    results = tmp_path / "results"
    faces.main(
        [
            "--faces",
            str(tmp_path / "faces"),
            "--quick",
            "--image-size",
            "16",
            "--per-person",
            "6",
            "--images",
            "64",
            "--only",
            "subset_labelled",
            "--only",
            "subset_flat",
            "--results",
            str(results),
        ]
    )
    saved = json.loads((results / "faces_quick.json").read_text())
    assert sorted(saved["cases"]) == ["subset_flat", "subset_labelled"]
    for name, case in saved["cases"].items():
        # 24 photographs, the prepare stage's 10% test split (3) out of them; the other 16 held out.
        assert case["data"]["n_train"] == 21 and case["data"]["n_heldout"] == 16
        assert case["data"]["classes"] == (4 if name == "subset_labelled" else 0)
        key = f"fid_{case['extractor']['name']}"
        assert isinstance(case["extractor"]["trusted"], bool) and case["extractor"]["fitness"]
        for mark in ("at_images", "at_minutes"):
            at = case[mark]
            assert np.isfinite(at[key]) and at[key] >= 0 and 0 <= at["memorization_fraction"] <= 1
        assert case["at_images"]["step"] >= 64 // case["params"]["train"]["batch_size"]
        assert 0 <= case["heldout_memorization"]["fraction"] <= 1 and case["heldout_memorization"]["n"] == 16
        assert (results / f"faces_quick_{name}.png").exists()
