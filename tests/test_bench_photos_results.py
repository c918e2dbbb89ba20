"""The photographs benchmark's bookkeeping on tiny fake results (no training): two invocations that each
trained one run of a budget (``--only textbook``, then ``--only resgan``) leave both runs in the JSON,
the targets compare them, and the picture shows both from their kept samples."""

from __future__ import annotations

import json

import numpy as np

from benchmarks.photos import kept_grids, save


def _run(tmp_path, name: str, fid: float, accuracy: float, shade: int) -> dict:
    samples = tmp_path / f"cifar10_200k_{name}.npz"
    labels = np.arange(30) % 3
    np.savez(samples, images=np.full((30, 4, 4, 3), shade, np.uint8), labels=labels)
    return {
        "samples": str(samples),
        "images": 200_000,
        "fid_classifier": fid,
        "class_accuracy_over_scorer": accuracy,
    }


def test_two_invocations_keep_both_runs_and_the_picture_shows_both(tmp_path):
    out = tmp_path / "photos.json"
    scorer = {"scorer": {"accuracy_real_test": 0.8}}
    first = {**scorer, "budgets": {}}  # read before the second one wrote
    second = {**scorer, "budgets": {}}
    stale = _run(tmp_path, "resgan", 99.0, 0.2, 9)  # what the file held when the first one started
    first["budgets"]["200k"] = {"resgan": dict(stale)}
    second["budgets"]["200k"] = {"resgan": _run(tmp_path, "resgan", 30.0, 0.7, 200)}
    save(second, out, {("200k", "resgan")})
    first["budgets"]["200k"]["textbook"] = _run(tmp_path, "textbook", 120.0, 0.1, 50)
    save(first, out, {("200k", "textbook")})

    written = json.loads(out.read_text())
    assert set(written["budgets"]["200k"]) == {"resgan", "textbook"}
    assert written["targets"]["fid_over_textbook_200k"] == {"value": 0.25, "target": "<= 1/3", "met": True}
    assert written["targets"]["class_accuracy_over_scorer_200k"]["met"] is True

    grids, titles = {"textbook": np.zeros((1, 1, 3), np.uint8), "real": np.zeros((1, 1, 3), np.uint8)}, {}
    titles.update({"textbook": "textbook now", "real": "real"})
    kept_grids(written["budgets"]["200k"], grids, titles, classes=3)
    assert list(grids) == ["real", "resgan", "textbook"] and list(titles) == list(grids)
    assert titles["resgan"] == "resgan: 200k images, FID 30.00" and titles["textbook"] == "textbook now"
    resgan = grids["resgan"]
    assert resgan.shape[0] > 3 * 4 and resgan.max() == 200  # a row of 10 per class from the kept samples
