"""The champion rule, as data: which registered version should hold alias ``champion`` after an evaluation.

:func:`decide` is pure (no MLflow): it sees versions as :class:`Standing` rows (number, figure of the
champion metric, feature-extractor id) and returns a :class:`Decision`; :mod:`resgan.model_registry` reads
the rows from the registry and applies the decision. The rule, in order:

1. Figures from a feature extractor that failed its fitness check (``trusted`` False), a figure that was
   not computed, or one that is not finite never move ``champion``.
2. With no champion yet, the candidate becomes champion.
3. The champion evaluated again keeps the alias unless another version's newest figure, from the same
   feature extractor, now beats it; then the best of those takes it.
4. A champion scored with another feature extractor stays (its figures are on another scale), as does a
   champion without the figure; a champion whose figure is not finite is replaced.
5. Otherwise the candidate takes ``champion`` only when it beats the champion's figure in the metric's
   own direction (lower FID/KID, higher IS/precision/recall); a tie keeps the champion.

Figures are compared as the version tags hold them: to 4 significant digits
(:func:`resgan.metrics.registry.rounded`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from resgan.metrics.registry import is_better, rounded


@dataclass(frozen=True)
class Standing:
    """One registered version as the rule sees it."""

    version: int
    value: float | None  # its newest evaluation's figure of the champion metric; None: not measured
    extractor: str | None = None  # the feature extractor's id (name and weights hash); None: unknown


@dataclass(frozen=True)
class Decision:
    """``champion``: the version that should hold the alias now, None to leave the alias where it is."""

    champion: int | None
    reason: str

    def crowns(self, version: int) -> bool:
        return self.champion == version


def decide(
    candidate: Standing,
    champion: Standing | None,
    rivals: list[Standing],
    trusted: bool = True,
    metric: str = "fid",
    key: str = "fid_classifier",
) -> Decision:
    """Apply the rule (module docstring) to ``candidate``, just evaluated (its ``value`` unrounded), the
    current ``champion`` (None: there is none; the candidate itself when the champion was evaluated
    again) and the other versions ``rivals``, by champion metric ``metric`` read from result ``key``."""
    value = candidate.value
    if not trusted:
        return Decision(
            None,
            f"{key} comes from a feature extractor that failed its fitness check: not comparable, so champion stays",
        )
    if value is None:
        return Decision(None, f"{key} was not computed, so champion stays")
    if not math.isfinite(value):  # a NaN champion could never be beaten (every comparison is False)
        return Decision(None, f"{key} is {value}: not comparable, so champion stays as it is")
    if champion is None:
        return Decision(candidate.version, "no champion yet: this version becomes champion")
    if champion.version == candidate.version:
        return _evaluated_again(candidate, rivals, metric, key)
    return _against(candidate, champion, metric, key)


def _evaluated_again(candidate: Standing, rivals: list[Standing], metric: str, key: str) -> Decision:
    """The champion evaluated again: it stays unless a rival's figure, same extractor, now beats it."""
    number, value = candidate.version, candidate.value
    rival = best_rival(rivals, candidate, metric)
    if rival is not None and is_better(metric, rival.value, rounded(value)):
        return Decision(
            rival.version,
            f"champion v{number} evaluated again ({key} {value:.4g}) no longer beats "
            f"v{rival.version}'s {rival.value:.4g}: champion moves to v{rival.version}",
        )
    return Decision(number, f"champion v{number} evaluated again ({key} {value:.4g}): it stays champion")


def _against(candidate: Standing, champion: Standing, metric: str, key: str) -> Decision:
    """A candidate against another version holding ``champion``."""
    number, value, held = candidate.version, candidate.value, champion.value
    if candidate.extractor and (champion.extractor or candidate.extractor) != candidate.extractor:
        # Scores from two feature extractors (e.g. a retrained classifier) are not on one scale.
        return Decision(
            None,
            f"champion v{champion.version} was scored with another feature extractor "
            f"({champion.extractor}, now {candidate.extractor}), so it stays; "
            f"promote by hand with `resgan models promote {number} --alias champion`",
        )
    if held is not None and not math.isfinite(held):
        return Decision(number, f"champion v{champion.version}'s {key} is {held}: this version replaces it")
    if held is None:
        return Decision(
            None,
            f"champion v{champion.version} has no {key} (another feature extractor?); "
            f"it stays; promote by hand with `resgan models promote {number} --alias champion`",
        )
    if is_better(metric, rounded(value), held):  # both as the tags hold them
        return Decision(number, f"{key} {value:.4g} beats champion v{champion.version}'s {held:.4g}")
    return Decision(None, f"{key} {value:.4g} does not beat champion v{champion.version}'s {held:.4g}")


def best_rival(rivals: list[Standing], candidate: Standing, metric: str) -> Standing | None:
    """The best of ``rivals`` other than ``candidate`` by figure, measured with the candidate's feature
    extractor; versions without a finite figure are skipped. None when there is none."""
    best: Standing | None = None
    for other in rivals:
        if other.version == candidate.version or other.extractor != candidate.extractor:
            continue
        if other.value is None or not math.isfinite(other.value):
            continue
        if best is None or is_better(metric, other.value, best.value):
            best = other
    return best
