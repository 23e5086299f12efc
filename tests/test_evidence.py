"""Every claim of issue 18, by simulation through the report's own code path (bench/evidence.py), with fewer
replications than the bench: the bounds below allow about 2.5 standard errors of simulation noise over the target
(the full figures, at 2,000 replications, are in BENCHMARKS.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("evidence",
                                               Path(__file__).resolve().parents[1] / "bench" / "evidence.py")
evidence = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(evidence)


@pytest.mark.parametrize("n, examples, sd", [(3, 277, 0.002), (5, 277, 0.002), (3, 872, 0.005), (5, 277, 0.01)])
def test_group_intervals_cover_on_tied_accuracies(n, examples, sd):
    cov, shown = evidence.coverage(600, n, examples, sd)
    assert shown == 1.0  # a known step: every group gets an interval, none of zero width
    assert cov >= 0.93 - 0.02  # target 0.93 (0.948-0.99 at 2,000 replications); was 0.54-0.88 with ties


@pytest.mark.parametrize("kind, scale, seeds", [("normal", 5, 3), ("normal", 3, 5), ("t3", 1, 3), ("collapse", 1, 5)])
def test_unequal_spreads_and_heavy_tails_keep_the_family_error_rate(kind, scale, seeds):
    rates = evidence.fwer(200, seeds, scale, kind, methods=("paired",))
    assert rates["paired"] <= 0.05 + 0.035  # the pooled fit measured 0.07-0.12 with one group at 2-5x the spread


def test_cross_model_comparisons_are_unpaired_and_keep_their_level():
    assert evidence.models(200) <= 0.05 + 0.02  # pooled across models: 0.148


def test_no_claim_contradicts_its_interval_and_false_claims_stay_rare():
    for step in (0.02, 0.003):  # groups at 0,0,0,M,M,M; M = 0.003 is a difference smaller than the margin
        out = evidence.claims(120, step=step)
        assert out["verdicts_contradicting_interval"] == 0
        assert out["any_false_claim"] <= 0.05 + 0.04  # sign or equivalence, over both: one family
        assert out["joint_coverage"] >= 0.95 - 0.04  # the intervals are simultaneous


@pytest.mark.parametrize("effect", [0.0, 0.006])
def test_seeds_to_settle_reaches_a_verdict(effect):
    out = evidence.settle(60, effect)
    assert out["settle_seeds"] > 3 and out["settled"] >= 0.8 - 0.1


def test_seeds_to_detect_finds_a_real_difference():
    out = evidence.settle(60, 0.02)  # 4x the margin, yet often inconclusive at 3 seeds
    assert out["detect_seeds"] > 3 and out["detected"] >= 0.8 - 0.1


# ---------------------------------------------------------------- issue 30: moderated variances, seeds to a decision


@pytest.mark.parametrize("shape, seeds", [("one group 5x", 4), ("two groups 3x", 5), ("spreads 1x..5x", 4),
                                          ("unbalanced seeds", 4), ("cross-model pairs", 5)])
def test_the_default_test_keeps_the_family_error_rate_in_hard_shapes(shape, seeds):
    rates = evidence.family_error(150, seeds, shape, {"default": {}})
    assert rates["default"] <= 0.05 + 0.045  # 2.5 SE at 150 replications; full tables at 2,000 in BENCHMARKS


def test_the_default_test_decides_most_of_the_components_study_at_five_seeds():
    out = evidence.decided(40, 5, {"default": {}, "paired t": {"test": "paired"}})
    assert out["default decided"] >= 20 - 1.5 and out["default any wrong sign"] <= 0.1
    assert out["default decided"] > out["paired t decided"] + 2  # the paired t alone: about 17 of 28


def test_until_decided_spends_fewer_trials_than_seven_fixed_seeds_on_the_components_shape():
    shape = [m - evidence.COMPONENTS[0] for m in evidence.COMPONENTS]
    out = evidence.sequential(16, shape, scales=evidence.COMPONENT_SCALES)
    assert out["decided trials"] < out["fixed trials"] == 56
    assert out["decided vs g0"] >= 5 and out["decided any false"] <= 0.15
