"""Which step's generator the train stage exports: the best of FID over training, or the last.

FID over training is noisy, the more so with a few hundred real images, and the lowest of a dozen noisy
measurements is lower than its generator deserves. So the lowest-FID step is exported only when it
beats the last step's FID by more than :data:`NOISE_MULTIPLE` times the figure's noise; otherwise the
last step's generator is, having trained longest.

The noise is measured on the run's own data, by every FID over training: the score also gives the gap
between the FIDs of the two halves of its ``num`` images (even and odd, each against the same
reference). Two FIDs of the same generator on two independent sets of ``num`` images differ by a
spread that :func:`fid_spread` estimates from those gaps: a half has ``num / 2`` images, so its FID's
variance is twice that at ``num`` (it goes as 1 / images), the gap's variance 4 times, and the
difference of two ``num``-image FIDs has half the gap's variance: spread = rms(gap) / sqrt(2). The
reference set is the same for every measurement, so its own noise is common to both FIDs and cancels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

NOISE_MULTIPLE = 2.0  # the best must beat the last by more than 2 spreads: 2 standard deviations of a difference


def fid_spread(gaps: Iterable[float]) -> float:
    """The standard deviation of the difference of two FIDs of one generator on two sets of ``num``
    images, from the halves' gaps of FIDs of ``num`` images (non-finite gaps ignored; 0 without any)."""
    finite = [g for g in gaps if math.isfinite(g)]
    return float(np.sqrt(np.mean(np.square(finite))) / math.sqrt(2)) if finite else 0.0


@dataclass(frozen=True)
class ExportDecision:
    """The exported step (``which``: ``best`` or ``last``), both candidates' steps and FIDs, the noise
    (:func:`fid_spread`) the margin was held against, and the reason in a sentence."""

    which: str
    step: int
    best_step: int
    best_fid: float
    last_step: int
    last_fid: float
    noise: float
    reason: str

    @property
    def margin(self) -> float:
        """How much lower the best FID is than the last step's."""
        return self.last_fid - self.best_fid

    def record(self) -> dict:
        """JSON-ready: every field and the margin, rounded."""
        rounded = {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}
        return {**rounded, "margin": round(self.margin, 4), "noise_multiple": NOISE_MULTIPLE}

    def figures(self, key: str) -> dict:
        """The train stage's figures of FID ``key`` (``fid_classifier``): the lowest FID and its step, the
        last step's FID, the noise and the whole decision (``export``)."""
        return {
            f"{key}_best": self.best_fid,
            "best_step": self.best_step,
            f"{key}_last": self.last_fid,
            "fid_noise": round(self.noise, 6),
            "export": self.record(),
        }


def choose_export(curve: Sequence[tuple[int, float]], noise: float, multiple: float = NOISE_MULTIPLE) -> ExportDecision:
    """From FID over training ``curve`` ((step, fid) in step order, its last row the last step trained)
    and its ``noise`` (:func:`fid_spread`): the lowest finite FID's step (the later of equals) when it beats
    the last step's by more than ``multiple * noise``, else the last step. A non-finite last FID loses to
    any finite one; a curve without a finite FID exports the last step."""
    if not curve:
        raise ValueError("choose_export needs FID over training with at least the last step's measurement")
    last_step, last_fid = int(curve[-1][0]), float(curve[-1][1])
    finite = [(int(s), float(f)) for s, f in curve if math.isfinite(f)]
    if not finite:
        return ExportDecision(
            "last",
            last_step,
            last_step,
            last_fid,
            last_step,
            last_fid,
            noise,
            "no finite FID was measured: the last step is exported",
        )
    best_step, best_fid = min(finite, key=lambda row: (row[1], -row[0]))
    threshold = multiple * noise
    if best_step == last_step:
        which, reason = "last", f"the last step's FID {last_fid:.3g} is the lowest measured"
    elif not math.isfinite(last_fid) or last_fid - best_fid > threshold:
        which, reason = (
            "best",
            (
                f"step {best_step}'s FID {best_fid:.3g} beats the last step's {last_fid:.3g} by "
                f"more than {multiple:g} x its noise {noise:.3g}"
            ),
        )
    else:
        which, reason = (
            "last",
            (
                f"step {best_step}'s FID {best_fid:.3g} is within {multiple:g} x its noise "
                f"{noise:.3g} of the last step's {last_fid:.3g}: the last step is exported"
            ),
        )
    return ExportDecision(
        which, best_step if which == "best" else last_step, best_step, best_fid, last_step, last_fid, noise, reason
    )


def decide(fid, export: str, step: int) -> ExportDecision | None:
    """The train stage's decision at step ``step``: :func:`choose_export` on ``fid`` (a
    :class:`resgan.gan.loop.FidTracker`, or None: no decision) when it measured that step. Only ``export``
    (``train.export``) ``best`` with trusted features and the best step's generator kept exports the best
    step (an untrusted extractor's FID may not pick the generator); otherwise the decision says why the last
    step is."""
    rows = [row for row in fid.history if row["step"] <= step] if fid else []
    if not rows or rows[-1]["step"] != step:
        return None
    decision = choose_export([(row["step"], row[fid.key]) for row in rows], fid.noise)
    if decision.which == "best":
        why = (
            "train.export is last"
            if export != "best"
            else "the features failed their fitness check"
            if not fid.score.extractor.trusted
            else "the best step's generator was not kept"
            if fid.best is None or int(fid.best["step"]) != decision.best_step
            else ""
        )
        if why:
            decision = replace(decision, which="last", step=step, reason=f"{decision.reason}, but {why}")
    return decision


def exported(decision: ExportDecision | None, step: int) -> tuple[str, int, str]:
    """Which generator a run that ended at ``step`` exports (``best`` or ``last``), its step and the
    reason in a sentence ('' without a decision)."""
    if decision is None:
        return "last", step, ""
    return decision.which, decision.step, f"{decision.which} step exported: {decision.reason}"


def describe(decision: ExportDecision | None, step: int) -> str:
    """The exported generator in words, for a run that ended at ``step``: ``step 1500's`` or ``the best
    FID's, step 900``, and the reason where there is a decision."""
    which, exported_step, reason = exported(decision, step)
    said = f"the best FID's, step {exported_step}" if which == "best" else f"step {step}'s"
    return f"{said}; {reason}" if reason else said
