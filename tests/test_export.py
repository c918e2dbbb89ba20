"""``resgan.gan.export``: the best step of FID over training is exported only above the noise.

A table of hand-made curves, away from any model or store; the noise from halves' gaps by hand.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from resgan.gan.export import NOISE_MULTIPLE, choose_export, decide, describe, exported, fid_spread


def test_the_spread_of_two_fids_is_the_rms_halves_gap_over_root_two():
    # rms(3, 4) = sqrt((9 + 16) / 2) = 3.5355; / sqrt(2) = 2.5. NaN gaps (too few images) are ignored.
    assert fid_spread([3.0, 4.0, math.nan]) == pytest.approx(2.5)
    assert fid_spread([]) == 0.0 and fid_spread([math.nan]) == 0.0


CURVES = [
    # (curve, noise, which, step): threshold = 2 x noise
    # A noisy "best": step 500's 30.0 beats the last's 31.5 by 1.5, within 2 x 1.0: the last.
    ([(250, 45.0), (500, 30.0), (750, 31.0), (1000, 31.5)], 1.0, "last", 1000),
    # A real one: the last step got worse by 8, four times the threshold: the best.
    ([(250, 45.0), (500, 30.0), (750, 33.0), (1000, 38.0)], 1.0, "best", 500),
    # The same curve with a noisier figure (spread 5: threshold 10): the 8 is noise, the last.
    ([(250, 45.0), (500, 30.0), (750, 33.0), (1000, 38.0)], 5.0, "last", 1000),
    # Just above and just at the threshold (2.0 x 1.5 = 3.0): strictly more than it wins.
    ([(100, 10.0), (200, 13.01)], 1.5, "best", 100),
    ([(100, 10.0), (200, 13.0)], 1.5, "last", 200),
    # The last is the lowest, and equals go to the later step.
    ([(100, 20.0), (200, 12.0)], 0.0, "last", 200),
    ([(100, 12.0), (200, 12.0), (300, 15.0)], 0.0, "best", 200),
    # Noiseless (no gaps): any lower FID wins.
    ([(100, 12.0), (200, 12.5)], 0.0, "best", 100),
    # A diverged last step (NaN) loses to any finite FID; no finite FID at all: the last.
    ([(100, 12.0), (200, math.nan)], 1.0, "best", 100),
    ([(100, math.nan), (200, math.inf)], 1.0, "last", 200),
]


@pytest.mark.parametrize("curve, noise, which, step", CURVES)
def test_the_best_step_wins_only_by_more_than_the_noise(curve, noise, which, step):
    decision = choose_export(curve, noise)
    assert (decision.which, decision.step) == (which, step)
    assert decision.last_step == curve[-1][0] and decision.noise == noise
    if which == "best":
        assert decision.margin > NOISE_MULTIPLE * noise or not math.isfinite(decision.last_fid)
        assert str(step) in decision.reason and "beats" in decision.reason


def test_the_record_gives_both_figures_the_noise_and_the_reason():
    decision = choose_export([(250, 45.0), (500, 30.0), (750, 31.0), (1000, 31.5)], 1.0)
    record = decision.record()
    assert record == {
        "which": "last",
        "step": 1000,
        "best_step": 500,
        "best_fid": 30.0,
        "last_step": 1000,
        "last_fid": 31.5,
        "noise": 1.0,
        "margin": 1.5,
        "noise_multiple": 2.0,
        "reason": "step 500's FID 30 is within 2 x its noise 1 of the last step's 31.5: the last step is exported",
    }
    with pytest.raises(ValueError):
        choose_export([], 1.0)


def _tracker(rows, trusted=True, best_step=500):
    """What the train stage's decision reads of a FidTracker: its rows, key, noise, extractor and kept best."""
    return SimpleNamespace(
        history=[{"step": s, "fid_classifier": f} for s, f in rows],
        key="fid_classifier",
        noise=1.0,
        score=SimpleNamespace(extractor=SimpleNamespace(trusted=trusted)),
        best=None if best_step is None else {"step": best_step, "fid_classifier": 30.0},
    )


REAL_BEST = [(250, 45.0), (500, 30.0), (750, 33.0), (1000, 38.0)]  # 38 - 30 = 8 > 2 x 1.0: the best wins


@pytest.mark.parametrize(
    ("export", "trusted", "best_step", "which", "step", "but"),
    [
        ("best", True, 500, "best", 500, ""),
        ("last", True, 500, "last", 1000, ", but train.export is last"),
        ("best", False, 500, "last", 1000, ", but the features failed their fitness check"),
        ("best", True, None, "last", 1000, ", but the best step's generator was not kept"),
        ("best", True, 750, "last", 1000, ", but the best step's generator was not kept"),
    ],
)
def test_the_stage_exports_the_best_only_when_asked_trusted_and_kept(export, trusted, best_step, which, step, but):
    decision = decide(_tracker(REAL_BEST, trusted, best_step), export, 1000)
    assert (decision.which, decision.step, decision.best_step, decision.last_fid) == (which, step, 500, 38.0)
    assert decision.reason.endswith("by more than 2 x its noise 1" + but)
    assert exported(decision, 1000) == (which, step, f"{which} step exported: {decision.reason}")
    assert decision.figures("fid_classifier") == {
        "fid_classifier_best": 30.0,
        "best_step": 500,
        "fid_classifier_last": 38.0,
        "fid_noise": 1.0,
        "export": decision.record(),
    }


def test_without_a_measurement_of_the_last_step_the_last_step_is_exported_without_a_reason():
    assert decide(None, "best", 1000) is None
    assert decide(_tracker(REAL_BEST[:3]), "best", 1000) is None  # stopped before measuring step 1000
    assert exported(None, 1000) == ("last", 1000, "")
    assert describe(None, 1000) == "step 1000's"
    best = decide(_tracker(REAL_BEST), "best", 1000)
    assert describe(best, 1000) == f"the best FID's, step 500; best step exported: {best.reason}"
