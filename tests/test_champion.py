"""The champion rule as data: every case of :func:`resgan.champion.decide` in one table, no store.

Each row: the candidate just evaluated, the current champion (None: none yet), the other versions, whether
the candidate's feature extractor is trusted, the champion metric, then the version that must hold
``champion`` afterwards (None: the alias is left where it is) and a piece of the reason a person reads.
"""

from __future__ import annotations

import math

import pytest

from resgan.champion import Decision, Standing, best_rival, decide

NAN = math.nan
A, B = "classifier:aaaaaaaaaaaa", "classifier:bbbbbbbbbbbb"  # two feature extractors' ids (other weights)

CASES = [
    # id, candidate, champion, rivals, trusted, metric, champion after, reason
    ("no champion yet", Standing(1, 10.0, A), None, [], True, "fid", 1, "no champion yet"),
    ("better", Standing(2, 9.0, A), Standing(1, 10.0, A), [], True, "fid", 2, "9 beats champion v1's 10"),
    ("worse", Standing(2, 12.5, A), Standing(1, 10.0, A), [], True, "fid", None, "12.5 does not beat champion v1's 10"),
    ("tie", Standing(2, 10.0, A), Standing(1, 10.0, A), [], True, "fid", None, "does not beat"),
    # Compared as the tags hold them, to 4 significant digits: 9.99996 is 10.0, a tie, not a win.
    (
        "better only below 4 digits",
        Standing(2, 9.99996, A),
        Standing(1, 10.0, A),
        [],
        True,
        "fid",
        None,
        "does not beat",
    ),
    ("better in 4 digits", Standing(2, 9.9949, A), Standing(1, 10.0, A), [], True, "fid", 2, "9.995 beats"),
    ("higher score is better", Standing(2, 3.0), Standing(1, 2.0), [], True, "is", 2, "beats champion v1"),
    ("lower score is worse", Standing(2, 1.5), Standing(1, 2.0), [], True, "is", None, "does not beat"),
    (
        "untrusted extractor, better",
        Standing(2, 1.0, A),
        Standing(1, 10.0, A),
        [],
        False,
        "fid",
        None,
        "failed its fitness check",
    ),
    ("untrusted extractor, no champion", Standing(1, 1.0, A), None, [], False, "fid", None, "failed its fitness check"),
    ("not computed", Standing(2, None, A), Standing(1, 10.0, A), [], True, "fid", None, "was not computed"),
    ("not finite", Standing(2, NAN, A), None, [], True, "fid", None, "is nan: not comparable"),
    (
        "other extractor",
        Standing(2, 1.0, B),
        Standing(1, 30.0, A),
        [],
        True,
        "fid",
        None,
        f"scored with another feature extractor ({A}, now {B})",
    ),
    ("champion's extractor unknown", Standing(2, 1.0, B), Standing(1, 30.0, None), [], True, "fid", 2, "beats"),
    (
        "champion without the figure",
        Standing(2, 1.0),
        Standing(1, None),
        [],
        True,
        "fid",
        None,
        "has no fid_classifier (another feature extractor?)",
    ),
    (
        "champion not finite",
        Standing(3, 60.0),
        Standing(1, NAN),
        [],
        True,
        "fid",
        3,
        "is nan: this version replaces it",
    ),
    (
        "champion again, still best",
        Standing(1, 14.0, A),
        Standing(1, 14.0, A),
        [Standing(2, 15.0, A)],
        True,
        "fid",
        1,
        "evaluated again (fid_classifier 14): it stays champion",
    ),
    (
        "champion again, now worse",
        Standing(1, 30.0, A),
        Standing(1, 30.0, A),
        [Standing(2, 15.0, A), Standing(3, 12.0, A), Standing(4, 20.0, A)],
        True,
        "fid",
        3,
        "no longer beats v3's 12: champion moves to v3",
    ),
    (
        "champion again, tie with a rival",
        Standing(1, 15.0, A),
        Standing(1, 15.0, A),
        [Standing(2, 15.0, A)],
        True,
        "fid",
        1,
        "it stays champion",
    ),
    (
        "champion again, better rival from other weights",
        Standing(1, 30.0, A),
        Standing(1, 30.0, A),
        [Standing(2, 1.0, B)],
        True,
        "fid",
        1,
        "it stays champion",
    ),
    (
        "champion again, rivals without a finite figure",
        Standing(1, 30.0, A),
        Standing(1, 30.0, A),
        [Standing(2, NAN, A), Standing(3, None, A)],
        True,
        "fid",
        1,
        "it stays champion",
    ),
    (
        "champion again, untrusted",
        Standing(1, 30.0, A),
        Standing(1, 30.0, A),
        [Standing(2, 1.0, A)],
        False,
        "fid",
        None,
        "failed its fitness check",
    ),
]


@pytest.mark.parametrize(
    "candidate, champion, rivals, trusted, metric, after, reason",
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_the_champion_rule(candidate, champion, rivals, trusted, metric, after, reason):
    key = "fid_classifier" if metric == "fid" else "is_classifier_mean"
    decision = decide(candidate, champion, rivals, trusted, metric, key)
    assert isinstance(decision, Decision)
    assert decision.champion == after, decision.reason
    assert reason in decision.reason
    assert decision.crowns(candidate.version) == (after == candidate.version)


def test_the_best_rival_is_the_best_figure_from_the_same_weights():
    me = Standing(1, 30.0, A)
    rivals = [me, Standing(2, 15.0, A), Standing(3, 5.0, B), Standing(4, 12.0, A), Standing(5, NAN, A)]
    assert best_rival(rivals, me, "fid") == Standing(4, 12.0, A)
    assert best_rival(rivals, me, "is") == Standing(2, 15.0, A)  # higher is better for a score
    assert best_rival([me, Standing(3, 5.0, B)], me, "fid") is None
