"""analysis/stats.py and analysis/compare.py: the assumptions behind every number in the report, checked by
simulation (coverage, false-positive rate) and against scipy's reference implementations."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from synthetic import write_study

from analysis import stats
from analysis.compare import compare
from analysis.groups import drop_duplicate_runs, group_labels
from analysis.report import main as report


@pytest.mark.parametrize("n", [3, 5])
def test_t_interval_covers_at_the_repeat_counts_studies_use(n):
    rng = np.random.default_rng(n)
    reps = 4000
    hits = sum(lo <= 0.83 <= hi for lo, hi in (stats.t_interval(rng.normal(0.83, 0.01, n)) for _ in range(reps)))
    assert hits / reps >= 0.93  # nominal 0.95; the old percentile bootstrap gave 0.76 (n=3) and 0.83 (n=5)


def test_t_interval_is_scipys_and_ties_are_never_read_as_certainty():
    x = np.array([0.81, 0.83, 0.84, 0.82])
    ci = sps.ttest_1samp(x, 0).confidence_interval(0.95)
    assert stats.t_interval(x) == pytest.approx((ci.low, ci.high))
    assert np.isnan(stats.t_interval(x[:1])).all()
    tied = np.array([0.7004, 0.7004, 0.7004])  # 194/277 three times: RTE's step is 0.0036
    assert np.isnan(stats.t_interval(tied)).all()  # step unknown: no interval, never (m, m)
    lo, hi = stats.t_interval(tied, resolution=1 / 277)
    half = sps.t.ppf(0.975, 2) * (1 / 277) / np.sqrt(12) / np.sqrt(3)  # the step's own rounding error
    assert (lo, hi) == pytest.approx((0.7004 - half, 0.7004 + half))
    assert stats.spread(np.array([0.8, 0.8 + 1e-15, 0.8])) != stats.spread(np.array([0.8, 0.8 + 1e-15, 0.8])) # nan


def test_welch_and_paired_match_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.8, 0.01, 5), rng.normal(0.81, 0.02, 4)
    w = stats.welch(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert w.p_value() == pytest.approx(ref.pvalue) and w.df == pytest.approx(ref.df)
    assert w.interval(0.95) == pytest.approx(tuple(ref.confidence_interval(0.95)))
    c = rng.normal(0.8, 0.01, 5)
    p = stats.paired(a, c)
    ref = sps.ttest_rel(a, c)
    assert (p.p_value() == pytest.approx(ref.pvalue)
            and p.interval(0.9) == pytest.approx(tuple(ref.confidence_interval(0.9))))


def _balanced(groups: int, seeds: int, rng, effect=None, noise=0.005, seed_sd=0.01) -> pd.DataFrame:
    block = rng.normal(0, seed_sd, seeds)
    effect = effect or [0.0] * groups
    return pd.DataFrame([{"group": f"g{g}", "seed": 42 + s, "value": 0.85 + effect[g] + block[s] + rng.normal(0, noise)}
                         for g in range(groups) for s in range(seeds)])


def test_blocked_fit_is_the_two_way_anova_and_reduces_to_paired_t_for_two_groups():
    rng = np.random.default_rng(2)
    df = _balanced(4, 3, rng)
    fit = stats.fit_blocks(df["value"].to_numpy(), df["group"].tolist(), df["seed"].tolist())
    table = df.pivot(index="group", columns="seed", values="value").to_numpy()
    resid = table - table.mean(1, keepdims=True) - table.mean(0, keepdims=True) + table.mean()
    assert fit.df == (4 - 1) * (3 - 1)
    assert fit.sigma2 == pytest.approx((resid ** 2).sum() / fit.df)
    est = fit.contrast("g1", "g0")
    assert est.delta == pytest.approx(table[1].mean() - table[0].mean())
    assert est.se == pytest.approx(np.sqrt(2 * fit.sigma2 / 3))
    two = df[df["group"].isin(["g0", "g1"])]
    fit2 = stats.fit_blocks(two["value"].to_numpy(), two["group"].tolist(), two["seed"].tolist())
    assert fit2.contrast("g1", "g0").p_value() == pytest.approx(sps.ttest_rel(table[1], table[0]).pvalue)


def test_blocked_fit_handles_unbalanced_blocks_and_refuses_disconnected_groups():
    rng = np.random.default_rng(3)
    df = _balanced(3, 5, rng, effect=[0.0, 0.01, 0.02])
    df = df.drop(df[(df["group"] == "g2") & (df["seed"] >= 45)].index)  # g2 has 3 seeds, the others 5
    fit = stats.fit_blocks(df["value"].to_numpy(), df["group"].tolist(), df["seed"].tolist())
    assert fit.df == len(df) - 5 - 2
    assert fit.contrast("g2", "g0").n == 3
    islands = pd.DataFrame({"group": ["a", "a", "b", "b"], "seed": [1, 2, 3, 4], "value": [0.8, 0.81, 0.7, 0.72]})
    fit = stats.fit_blocks(islands["value"].to_numpy(), islands["group"].tolist(), islands["seed"].tolist())
    assert fit.contrast("a", "b") is None  # no shared seed: the seed effects and the group difference are confounded


def test_blocked_test_has_its_nominal_false_positive_rate_and_more_power_than_welch():
    rng = np.random.default_rng(4)
    false_pos, blocked_hits, welch_hits, reps = 0, 0, 0, 400
    for _ in range(reps):
        null = _balanced(6, 3, rng)
        res, _ = compare(null, "val_accuracy", reference="g0", test="blocked")
        false_pos += (res["p"] < 0.05).sum()
        alt = _balanced(6, 3, rng, effect=[0, 0.012, 0, 0, 0, 0])
        res, _ = compare(alt, "val_accuracy", reference="g0", test="blocked")
        row = res[res["a"] == "g1"].iloc[0]
        blocked_hits += row["p"] < 0.05
        a, b = (alt.loc[alt["group"] == g, "value"].to_numpy() for g in ("g1", "g0"))
        welch_hits += stats.welch(a, b).p_value() < 0.05
    assert false_pos / (reps * 5) == pytest.approx(0.05, abs=0.02)
    assert blocked_hits > 1.5 * welch_hits  # seeds shared across groups: blocking removes their variance


def test_exactly_additive_data_give_no_test_rather_than_p_from_round_off():
    df = pd.DataFrame([{"group": g, "seed": s, "value": 0.8 + eff + 0.01 * s} for g, eff in (("a", 0.0), ("b", 0.1))
                       for s in range(4)])
    fit = stats.fit_blocks(df["value"].to_numpy(), df["group"].tolist(), df["seed"].tolist())
    assert fit.sigma2 == 0 and fit.contrast("b", "a") is None  # was p = 1e-56 from a 1e-33 residual
    res, _ = compare(df, "val_accuracy", test="blocked")
    assert res.iloc[0]["verdict"] == "undetermined"
    res, _ = compare(df.assign(resolution=1 / 872), "val_accuracy", test="blocked")
    assert res.iloc[0]["verdict"] == "better" and res.iloc[0]["p"] > 1e-15


@pytest.mark.parametrize("a, b", [(0.80, 0.70), (0.75, 0.50)])
def test_constant_groups_get_the_same_kind_of_answer_never_p_from_round_off(a, b):
    df = pd.DataFrame({"group": ["x"] * 3 + ["y"] * 3, "seed": [1, 2, 3] * 2, "value": [a] * 3 + [b] * 3})
    for test in ("paired", "blocked"):
        res, _ = compare(df, "val_accuracy", test=test)
        assert res.iloc[0]["verdict"] == "undetermined" and np.isnan(res.iloc[0]["p"])  # spread unknown
        res, _ = compare(df.assign(resolution=1 / 872), "val_accuracy", test=test)
        assert res.iloc[0]["verdict"] == "better" and res.iloc[0]["p"] > 1e-15  # floored at the step's rounding


def test_two_models_are_never_blocks_of_each_other_and_data_sets_are_never_compared():
    rng = np.random.default_rng(8)
    rows = [{"group": f"{m}-{d}-{g}", "seed": 42 + s, "value": 0.85 + rng.normal(0, 0.01), "model_key": m,
             "data_key": d}
            for m, d in (("A", "sst2"), ("B", "sst2"), ("A", "rte")) for g in range(2) for s in range(3)]
    for test in ("paired", "blocked"):
        res, family = compare(pd.DataFrame(rows), "val_accuracy", test=test)
        pairs = {frozenset((a, b)): r for a, b, r in zip(res["a"], res["b"], res.to_dict("records"))}
        cross = pairs[frozenset(("A-sst2-0", "B-sst2-0"))]
        assert cross["pairing"] == "unpaired: different models" and cross["test"] == "welch"
        assert all(len({name.split("-")[1] for name in p}) == 1 for p in pairs)  # never sst2 against rte
        assert family.pairs == len(res) == 6 + 1 and family.not_compared == 15 - 7  # sst2: 4 groups, rte: 2
        if test == "blocked":
            assert sorted(family.fits) == [("A", "rte"), ("A", "sst2"), ("B", "sst2")]  # one fit per stratum


def test_welch_when_seeds_are_not_shared():
    df = pd.DataFrame({"group": ["a"] * 3 + ["b"] * 3, "seed": [1, 2, 3, 4, 5, 6],
                       "value": [0.80, 0.81, 0.82, 0.70, 0.72, 0.71]})
    res, family = compare(df, "val_accuracy", test="blocked")
    assert not family.fits and res.iloc[0]["test"] == "welch" and res.iloc[0]["verdict"] == "better"
    assert res.iloc[0]["pairing"] == "unpaired: fewer than 2 shared seeds"


def test_every_verdict_is_read_off_its_simultaneous_interval():
    rng = np.random.default_rng(6)
    for _ in range(50):
        df = _balanced(5, 4, rng, effect=list(rng.normal(0, 0.006, 5)))
        res, family = compare(df, "val_accuracy", margin=0.005)
        assert family.pairs == 10 and (res["ci_level"] == 1 - 0.05 / 10).all()
        for _, r in res.iterrows():
            excludes_zero = r["ci_low"] > 0 or r["ci_high"] < 0
            assert excludes_zero == (r["p_adj"] < 0.05)
            inside = -0.005 < r["ci_low"] and r["ci_high"] < 0.005
            assert inside == (r["p_equiv_adj"] < 0.05)
            sign = "better" if r["delta"] > 0 else "worse"
            assert r["verdict"] == (f"{sign}, within margin" if excludes_zero and inside else sign if excludes_zero
                                    else "equivalent" if inside else "inconclusive")


def test_a_small_significant_difference_is_better_within_margin_not_equivalent():
    rng = np.random.default_rng(9)
    df = _balanced(2, 8, rng, effect=[0.003, 0.0], noise=0.0003)
    res, _ = compare(df, "val_accuracy", margin=0.005)
    r = res.iloc[0]
    assert r["verdict"] == "better, within margin" and r["ci_low"] > 0 and r["ci_high"] < 0.005
    assert "better, by less than the margin" in r["sentence"]


def test_holm():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([float("nan"), 0.02])[1] == pytest.approx(0.02)


def test_equivalence_and_inconclusive_verdicts_say_what_the_data_supports():
    rng = np.random.default_rng(7)
    block = rng.normal(0, 0.01, 8)  # many seeds, differences of ±0.0005 that cancel: no effect, tight
    tight = pd.DataFrame([{"group": g, "seed": s, "value": 0.85 + block[s] + (0.0005 * (-1) ** s if g == "g1" else 0)}
                          for g in ("g0", "g1") for s in range(8)])
    res, _ = compare(tight, "val_accuracy", margin=0.005)
    assert res.iloc[0]["verdict"] == "equivalent" and "within ±0.005" in res.iloc[0]["sentence"]
    loose = _balanced(2, 2, rng, noise=0.01)
    res, _ = compare(loose, "val_accuracy", margin=0.005)
    assert res.iloc[0]["verdict"] == "inconclusive" and "not evidence of no effect" in res.iloc[0]["sentence"]


def test_lower_is_better_for_losses():
    df = pd.DataFrame({"group": ["a"] * 3 + ["b"] * 3, "seed": [1, 2, 3] * 2,
                       "value": [0.30, 0.31, 0.29, 0.40, 0.42, 0.41]})
    res, _ = compare(df, "val_loss")
    assert (res.iloc[0]["a"], res.iloc[0]["verdict"]) == ("a", "better")


def test_seeds_to_settle_makes_every_outcome_a_verdict_and_noise_floor():
    est = stats.paired(np.array([0.80, 0.81, 0.79]), np.array([0.805, 0.80, 0.80]))
    n = stats.seeds_to_settle(est, 0.95, 0.005)
    half = lambda k: (sps.t.ppf(0.975, k - 1) * est.sd_per_seed * np.sqrt(sps.f.ppf(0.8, k - 1, est.df))  # noqa: E731
                      / np.sqrt(k))
    assert half(n) <= 0.0025 < half(n - 1)  # half-width <= margin/2: either the interval excludes 0 or fits ±margin
    assert stats.seeds_to_settle(stats.paired(np.array([0.8, 0.8]), np.array([0.8, 0.8])), 0.95, 0.005) is None
    assert stats.binomial_se(0.83, 872) == pytest.approx(0.0127, abs=1e-4)  # about 1.3 points on SST-2's dev set
    assert stats.binomial_se(0.94, 872) == pytest.approx(0.0080, abs=1e-4)


def _trials(**over) -> dict:
    base = {"experiment": "e1", "trial_id": "t", "status": "TERMINATED", "scenario": "lora_all", "baseline": None,
            "layers": [0, 1], "components": ["q", "v"], "r": 8, "rank_pattern": "{}", "alpha": None, "seed": 42,
            "model": "minilm-l6", "dataset": "glue/sst2", "learning_rate": 1e-3, "config_extra": None, "value": 0.9,
            "problem": None, "diverged": False}
    return {**base, **over}


def test_groups_are_configurations_and_labels_stay_readable():
    rows = [
        _trials(trial_id="a"), _trials(trial_id="b", seed=43),
        _trials(trial_id="c", experiment="e2", model="roberta-base"),  # same name, other model: another group
        _trials(trial_id="d", r=1), _trials(trial_id="e", rank_pattern='{"v": 4}'),
        _trials(trial_id="f", experiment="e3"),  # the same configuration and seed as "a": the same run
        _trials(trial_id="g", scenario="base", baseline="classifier_only", r=None, layers=[], components=[]),
    ]
    kept, dropped = drop_duplicate_runs(pd.DataFrame(rows))
    assert dropped == 1 and "f" not in set(kept["trial_id"])
    labels = dict(zip(kept["trial_id"], group_labels(kept)))
    assert labels["a"] == labels["b"]
    assert len({labels[t] for t in "acde"}) == 4
    assert labels["d"] == "lora_all r=1" and labels["g"] == "base"
    assert "model=roberta-base" in labels["c"] and "rank_pattern" in labels["e"]


@pytest.mark.parametrize("bad", [{"diverged": True, "value": float("nan")}, {"problem": "corrupt result line"},
                                 {"status": "ERROR"}, {"value": float("inf")}])
def test_an_unusable_run_never_hides_its_good_duplicate(bad):
    first = _trials(trial_id="a", experiment="e1", **bad)  # sorts first, but is not usable
    kept, dropped = drop_duplicate_runs(pd.DataFrame([first, _trials(trial_id="b", experiment="e2")]))
    assert dropped == 0 and set(kept["trial_id"]) == {"a", "b"}  # the good run stays; the bad one is listed
    kept, dropped = drop_duplicate_runs(pd.DataFrame([_trials(trial_id="a"), _trials(trial_id="b", experiment="e2")]))
    assert dropped == 1 and list(kept["trial_id"]) == ["a"]


def _write_study(tmp_path, rows):
    """trials.parquet + epochs.parquet in analyze's schemas from (scenario, lr, seed, sel, dev) rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from analysis.schema import EPOCHS_SCHEMA, TRIALS_SCHEMA

    trials, epochs = [], []
    for i, (scenario, lr, seed, sel, dev) in enumerate(rows):
        head = {"experiment": "e", "trial_id": f"t{i}", "scenario": scenario, "seed": seed, "repeat": seed - 42}
        trials.append({**head, "status": "TERMINATED", "study": "s", "trial_name": f"{scenario}-{lr}-{seed}", "r": 8,
                       "layers": [3] if scenario == "upper" else [0], "components": ["v"], "learning_rate": lr,
                       "model": "m", "dataset": "d",
                       "final_val_accuracy": dev, "final_sel_accuracy": sel, "params_relative_pct": 1.0,
                       "trainable_params": 10, "diverged": False})
        epochs.append({**head, "epoch": 1, "val_accuracy": dev, "sel_accuracy": sel, "val_examples": 872,
                       "sel_examples": 400})
    pq.write_table(pa.Table.from_pylist(trials, schema=TRIALS_SCHEMA), tmp_path / "trials.parquet")
    pq.write_table(pa.Table.from_pylist(epochs, schema=EPOCHS_SCHEMA), tmp_path / "epochs.parquet")
    return tmp_path


def test_select_chooses_on_the_selection_split_and_reports_only_the_chosen_on_dev(tmp_path, capsys):
    from tune_jobs.cli import main

    rows = [(sc, lr, seed, sel + 0.001 * seed, dev + 0.002 * (seed % 2))
            for sc, lr, sel, dev in [("upper", 1e-3, 0.80, 0.90), ("upper", 4e-3, 0.85, 0.86),  # dev would pick 1e-3
                                     ("lower", 1e-3, 0.82, 0.84), ("lower", 4e-3, 0.78, 0.88)]
            for seed in (42, 43, 44)]
    pq_dir = _write_study(tmp_path, rows)
    assert main(["report", str(pq_dir), "--out", str(tmp_path / "rep"), "--select", "learning_rate"]) == 0
    summary = pd.read_csv(tmp_path / "rep" / "summary.csv")
    assert sorted(summary["group"]) == ["lower r=8 lr=0.001", "upper r=8 lr=0.004"]
    assert summary.set_index("group").loc["upper r=8 lr=0.004", "mean"] == pytest.approx(0.86 + 0.002 / 3)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Selection of learning_rate on the selection split" in md and "| upper | upper r=8 lr=0.004 |" in md
    comparisons = pd.read_csv(tmp_path / "rep" / "comparisons.csv")
    assert len(comparisons) == 1  # the family tested is the chosen groups only


def test_select_needs_a_selection_split(tmp_path, capsys):
    from tune_jobs.cli import main

    pq_dir = _write_study(tmp_path, [("upper", lr, s, None, 0.9) for lr in (1e-3, 4e-3) for s in (42, 43)])
    assert main(["report", str(pq_dir), "--out", str(tmp_path / "rep"), "--select", "learning_rate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no sel_accuracy" in err[0] and "data.selection" in err[0]
    assert main(["report", str(pq_dir), "--out", str(tmp_path / "rep"), "--select", "learnin_rate"]) == 2
    assert "--select" in capsys.readouterr().err


def test_noise_floor_of_the_selection_split_uses_its_own_size(tmp_path):
    from tune_jobs.cli import main

    rows = [(sc, 1e-3, seed, 0.80 + 0.01 * (seed % 3), 0.85) for sc in ("upper", "lower") for seed in (42, 43, 44)]
    pq_dir = _write_study(tmp_path, rows)
    assert main(["report", str(pq_dir), "--out", str(tmp_path / "rep"), "--metric", "sel_accuracy"]) == 0
    summary = pd.read_csv(tmp_path / "rep" / "summary.csv")
    for _, g in summary.iterrows():
        assert g["examples"] == 400 and g["noise_floor_se"] == pytest.approx(stats.binomial_se(g["mean"], 400))


def test_a_tied_group_beside_a_spread_one_is_a_report_not_a_traceback(tmp_path):
    from tune_jobs.cli import main

    rows = [("upper", 1e-3, s, None, 194 / 277) for s in (42, 43, 44)]  # three tied values, as on RTE
    rows += [("lower", 1e-3, s, None, v / 277) for s, v in ((42, 180), (43, 186), (44, 183))]
    pq_dir = _write_study(tmp_path, rows)
    assert main(["report", str(pq_dir), "--out", str(tmp_path / "rep")]) == 0  # was: 'yerr' must not be negative
    summary = pd.read_csv(tmp_path / "rep" / "summary.csv").set_index("group")
    lo, hi = summary.loc["upper r=8", ["ci95_low", "ci95_high"]]
    assert lo < 194 / 277 < hi  # 872 rows in this helper: the step is 1/872, and the interval is never (m, m)


def test_help_texts_print_percent_signs_as_written(capsys):
    from tune_jobs.cli import main

    for sub in ("plan", "report"):
        with pytest.raises(SystemExit):
            main([sub, "--help"])
        out = capsys.readouterr().out
        assert "%%" not in out and "%" in out


def test_a_verdict_read_the_other_way_round():
    from analysis.compare import reversed_verdict

    assert [reversed_verdict(v) for v in ("better", "worse, within margin", "equivalent", "inconclusive")] == \
        ["worse", "better, within margin", "equivalent", "inconclusive"]


# ---------------------------------------------------------------- moderated variances (issue 30)


@pytest.mark.parametrize("x", [1e-4, 0.05, 0.5, 2.0, 40.0, 1e8])
def test_trigamma_inverse_inverts_scipys_trigamma(x):
    from scipy import special

    assert special.polygamma(1, stats.trigamma_inverse(x)) == pytest.approx(x, rel=1e-6)


def test_variance_prior_recovers_a_known_scaled_inverse_chi_square_prior():
    rng = np.random.default_rng(3)
    d0, s0, df, pairs = 8.0, 2e-5, 4, 4000
    true_var = d0 * s0 / rng.chisquare(d0, pairs)  # sigma^2 ~ s0 d0 / chi2(d0), independent as Smyth assumes
    observed = true_var * rng.chisquare(df, pairs) / df
    prior = stats.fit_variance_prior(observed, np.full(pairs, df))
    assert prior.df == pytest.approx(d0, rel=0.2) and prior.var == pytest.approx(s0, rel=0.1)
    assert stats.fit_variance_prior(observed, np.full(pairs, df), weight=0.5).df == pytest.approx(prior.df / 2)
    same = stats.fit_variance_prior(np.full(10, s0) * rng.chisquare(df, 10) / df, np.full(10, df))
    assert same is not None and same.var > 0  # equal variances: a finite or infinite df, never an error
    assert stats.fit_variance_prior(observed[:2], np.full(2, df)) is None  # fewer than 3 pairs: no prior


def test_moderated_estimate_is_the_posterior_variance_with_its_df_capped():
    rng = np.random.default_rng(4)
    a, b = rng.normal(0.80, 0.01, 5), rng.normal(0.79, 0.01, 5)
    prior = stats.VariancePrior(6.0, 1e-4, 28)
    plain = stats.paired(a, b)
    est = stats.moderated(a, b, prior, df_cap=100)
    expected = (6 * 1e-4 + 4 * plain.sd_per_seed ** 2) / 10
    assert est.se == pytest.approx(np.sqrt(expected / 5)) and est.df == 10 and est.prior_df == 6
    assert stats.moderated(a, b, prior, df_cap=7).df == 7  # never more df than the pooled additive fit has


def _components(seeds: int, rng) -> pd.DataFrame:
    means = [0.833, 0.821, 0.820, 0.809, 0.805, 0.794, 0.790, 0.715]
    block = rng.normal(0, 0.01, seeds)
    return pd.DataFrame([{"group": f"g{g}", "seed": 42 + s,
                          "value": m + block[s] + rng.normal(0, 0.004 * (1 + (g == 7)))}
                         for g, m in enumerate(means) for s in range(seeds)])


def test_auto_moderates_from_three_shared_seeds_and_shows_what_it_would_say_below():
    from analysis.compare import MODERATED_MIN_SEEDS

    rng = np.random.default_rng(5)
    assert MODERATED_MIN_SEEDS == 3
    res, family = compare(_components(2, rng), "val_accuracy")
    assert family.test == "auto" and set(res["test"]) == {"paired-t"} and res["moderated_verdict"].notna().all()
    assert (res["moderated_verdict"].isin(("better", "worse")).sum() > res["verdict"].isin(("better", "worse")).sum())
    assert res["sentence"].str.contains("the moderated test would call it").any()
    res, family = compare(_components(MODERATED_MIN_SEEDS, rng), "val_accuracy")
    assert set(res["test"]) == {"moderated"} and res["moderated_verdict"].isna().all()
    assert res["pairing"].str.contains("variance moderated over 28 pairs").all()
    assert (res["df"] <= family.priors[("", "")].cap).all()


def test_a_sequential_design_spends_alpha_over_its_looks():
    rng = np.random.default_rng(6)
    df = _components(5, rng)
    one, f1 = compare(df, "val_accuracy")
    four, f4 = compare(df, "val_accuracy", looks=4)
    assert f4.level == pytest.approx(1 - 0.05 / 28 / 4) and f1.level == pytest.approx(1 - 0.05 / 28)
    assert ((four["ci_high"] - four["ci_low"]) > (one["ci_high"] - one["ci_low"])).all()


COMPONENT_GROUPS = [{"scenario": s, "mean": m, "scale": 2.0 if s == "classifier_only" else 1.0, "seconds": 360.0}
                    for s, m in zip(("all", "up", "down", "o", "v", "k", "q", "classifier_only"),
                                    (0.833, 0.821, 0.820, 0.809, 0.805, 0.794, 0.790, 0.715))]


def test_headline_never_calls_a_gap_far_beyond_the_spreads_merely_not_distinguishable(tmp_path):
    pq_dir = write_study(tmp_path / "pq", COMPONENT_GROUPS, seeds=2, examples=872)
    assert report([str(pq_dir), "--out", str(tmp_path / "r")]) == 0
    text = (tmp_path / "r" / "report.md").read_text()
    head = text[:text.index("## Verdicts")]
    assert "Far from all r=8, yet not decidable with 2 seed(s):" in head and "classifier_only (-0.1" in head
    assert "Not distinguishable from all r=8 yet:" not in head or "classifier_only (" not in \
        head.split("Not distinguishable from all r=8 yet:")[1].split("\n")[0]
    assert "more trial(s), about" in head and "trial-hours" in head  # what the next round costs, measured
    assert "moderated test would say (not a claim)" in text  # the table's labelled column


def test_report_of_a_sequential_study_spends_alpha_over_its_looks(tmp_path):
    groups = [dict(g, looks=8) for g in COMPONENT_GROUPS]
    pq_dir = write_study(tmp_path / "pq", groups, seeds=5, examples=872)
    assert report([str(pq_dir), "--out", str(tmp_path / "r")]) == 0
    text = (tmp_path / "r" / "report.md").read_text()
    assert "over the 8 looks of the sequential design" in text
    comparisons = pd.read_csv(tmp_path / "r" / "comparisons.csv")
    assert comparisons["ci_level"].iloc[0] == pytest.approx(1 - 0.05 / 28 / 8)
