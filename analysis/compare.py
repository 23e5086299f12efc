"""Comparisons between groups as the design allows: blocked (seeds as blocks), paired t, or Welch; Holm over the
family tested; TOST equivalence; exactly one verdict per comparison (pure pandas over `prepare`d trials)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import stats

VERDICTS = ("better", "worse", "equivalent", "inconclusive")


@dataclass(frozen=True)
class Design:
    """How the groups were pooled: the blocked fit (or None) and the groups left out of it, with why."""

    fit: stats.BlockFit | None
    left_out: dict[str, str]


def higher_is_better(metric: str) -> bool:
    """Losses and squared errors go down; every other metric (accuracy, F1, MCC, correlations) goes up."""
    return not metric.endswith(("loss", "mse"))


def pooled_design(by_group: dict[str, pd.Series], alpha: float) -> Design:
    """Fit group + seed to every group with >= 2 seeds, after leaving out, one at a time, each group whose noise
    differs significantly from the others' (`stats.spread_outlier`): pooling it would misstate every variance."""
    left_out = {g: "fewer than 2 runs" for g, s in by_group.items() if len(s) < 2}
    pool = [g for g in by_group if g not in left_out]
    while len(pool) >= 2:
        values = np.concatenate([by_group[g].to_numpy(float) for g in pool])
        labels, seeds = [g for g in pool for _ in by_group[g]], [s for g in pool for s in by_group[g].index]
        odd = stats.spread_outlier(values, labels, seeds, alpha) if len(pool) >= 3 else None
        if odd is None:
            fit = stats.fit_blocks(values, labels, seeds)
            if fit.df <= 0:
                break
            return Design(fit, left_out)
        left_out[odd[0]] = f"its seed-to-seed spread differs from the other groups' (F test, Bonferroni p = {odd[1]:.2g})"
        pool.remove(odd[0])
    return Design(None, {**left_out, **{g: "no residual degrees of freedom to block with" for g in pool}})


def estimate(a: str, b: str, by_group: dict[str, pd.Series], design: Design) -> stats.Estimate:
    """a - b by the strongest test the design supports: blocked contrast, else paired t, else Welch."""
    if design.fit is not None and a in design.fit.groups and b in design.fit.groups:
        est = design.fit.contrast(a, b)
        if est is not None:
            return est
    sa, sb = by_group[a], by_group[b]
    shared = sa.index.intersection(sb.index)
    if len(shared) >= 2:
        return stats.paired(sa.loc[shared].to_numpy(float), sb.loc[shared].to_numpy(float))
    return stats.welch(sa.to_numpy(float), sb.to_numpy(float))


def pairs_to_test(groups: list[str], reference: str | None) -> list[tuple[str, str]]:
    """Every group against the reference (the article's "vs LoRA base"), or all pairs."""
    if reference is not None:
        return [(g, reference) for g in groups if g != reference]
    return list(itertools.combinations(groups, 2))


def compare(values: pd.DataFrame, metric: str, reference: str | None = None, margin: float = 0.005,
            alpha: float = 0.05) -> tuple[pd.DataFrame, Design]:
    """One row per comparison: estimate, Holm-consistent interval, TOST, verdict and sentence.

    `values` has columns group, seed, value (one row per run, duplicates already dropped).
    """
    by_group = {g: d.set_index("seed")["value"].sort_index() for g, d in values.groupby("group", sort=True)}
    design = pooled_design(by_group, alpha)
    sign = 1 if higher_is_better(metric) else -1
    ranked = sorted(by_group, key=lambda g: (-sign * by_group[g].mean(), g))  # best first: Δ mostly >= 0
    rows = []
    for a, b in pairs_to_test(ranked, reference):
        est = estimate(a, b, by_group, design)
        rows.append({"a": a, "b": b, "metric": metric, "test": est.test, "n_seeds": est.n, "df": est.df,
                     "mean_a": by_group[a].mean(), "mean_b": by_group[b].mean(), "delta": est.delta, "se": est.se,
                     "p": est.p_value(), "p_tost": est.tost_p(margin), "margin": margin, "_est": est})
    if not rows:
        return pd.DataFrame(columns=["a", "b", "test", "delta", "p_holm", "verdict", "sentence"]), design
    df = pd.DataFrame(rows)
    df["p_holm"] = stats.holm(df["p"].tolist())
    df["p_tost_holm"] = stats.holm(df["p_tost"].tolist())
    levels = stats.holm_levels(df["p"].tolist(), alpha)
    eq_levels = stats.holm_levels(df["p_tost"].tolist(), alpha)
    ci = [e.interval(1 - lv) if lv == lv else (np.nan, np.nan) for e, lv in zip(df["_est"], levels)]
    eq = [e.interval(1 - 2 * lv) if lv == lv else (np.nan, np.nan) for e, lv in zip(df["_est"], eq_levels)]
    df["ci_level"] = [1 - lv for lv in levels]
    df["ci_low"], df["ci_high"] = [c[0] for c in ci], [c[1] for c in ci]
    df["eq_level"] = [1 - 2 * lv for lv in eq_levels]
    df["eq_low"], df["eq_high"] = [c[0] for c in eq], [c[1] for c in eq]
    up = higher_is_better(metric)
    df["verdict"] = [_verdict(r, alpha, up) for _, r in df.iterrows()]
    df["sentence"] = [_sentence(r, alpha) for _, r in df.iterrows()]
    return df.drop(columns="_est"), design


def _verdict(row, alpha: float, up: bool) -> str:
    if row["p_tost_holm"] < alpha:
        return "equivalent"
    if row["p_holm"] < alpha:
        return "better" if (row["delta"] > 0) == up else "worse"
    return "inconclusive"


def _pct(level: float) -> str:
    return f"{100 * level:.3g} %"


def _sentence(row, alpha: float) -> str:
    """Δ, the interval that matches the verdict, the test and the Holm p, in one sentence."""
    test = {"blocked": f"blocked on {row['n_seeds']} seeds, {row['df']:.0f} df",
            "paired-t": f"paired t over {row['n_seeds']} seeds", "welch": "Welch, seeds not shared"}[row["test"]]
    head = f"{row['a']} vs {row['b']}: Δ = {row['delta']:+.4f}"
    if not row["p"] == row["p"]:
        return f"{head}: inconclusive (no spread to test against: too few runs or identical values; {test})"
    diff = f"the {_pct(row['ci_level'])} CI [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"
    diff_test = f"({test}; Holm p = {row['p_holm']:.3g})"
    equiv = f"the {_pct(row['eq_level'])} equivalence interval [{row['eq_low']:+.4f}, {row['eq_high']:+.4f}]"
    equiv_test = f"(TOST; Holm p = {row['p_tost_holm']:.3g})"
    verdict, margin = row["verdict"], f"±{row['margin']:g}"
    if verdict == "equivalent":
        also = "; a difference is detectable, but it is smaller than the margin" if row["p_holm"] < alpha else ""
        return f"{head}: equivalent, {equiv} lies within {margin} {equiv_test}{also}"
    if verdict in ("better", "worse"):
        return f"{head}: {row['a']} is {verdict}, {diff} excludes 0 {diff_test}"
    return (f"{head}: inconclusive, the data cannot tell: {diff} includes 0 {diff_test} and {equiv} is not within "
            f"{margin} {equiv_test}; more seeds would narrow both (this is not evidence of no effect)")
