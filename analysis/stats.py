"""Statistics for the study read-out (pure functions on arrays): intervals, the blocked (seed) design, paired and
Welch tests, Holm (a baseline for the benchmarks), planning seeds, the dev-set noise floor and the Pareto front.

Every test here is a t test of one estimate: `Estimate(delta, se, df)`; its p-value, interval and TOST follow from
those three numbers, so the interval in a sentence and its verdict can never disagree. Spreads tell ties on a
discrete metric from certainty (`spread`): a zero spread is never read as a zero-width interval or p = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special, stats


@dataclass(frozen=True)
class Estimate:
    """A difference (or mean) with its standard error and degrees of freedom, from one of the tests below."""

    delta: float
    se: float
    df: float
    test: str  # blocked | paired-t | moderated | welch
    n: int  # seeds shared (blocked, paired-t) or runs in the smaller group (welch)
    sd_per_seed: float = float("nan")  # the spread one more seed adds to the estimate (for planning seeds)
    prior_df: float = 0.0  # df a moderated estimate has beyond its own seeds' (n - 1): a plan keeps them

    def p_value(self) -> float:
        """Two-sided p of H0: delta = 0; nan where the estimate has no spread to test against."""
        if not (self.se > 0 and self.df > 0):
            return float("nan")
        return float(2 * special.stdtr(self.df, -abs(self.delta) / self.se))  # t.sf as a ufunc: 50x faster

    def interval(self, level: float) -> tuple[float, float]:
        """Two-sided `level` t interval of delta."""
        if not (self.se > 0 and self.df > 0):
            return float("nan"), float("nan")
        half = float(special.stdtrit(self.df, 0.5 + level / 2)) * self.se
        return self.delta - half, self.delta + half

    def tost_p(self, margin: float) -> float:
        """TOST p of H0: |delta| >= margin (the larger of the two one-sided p-values)."""
        if not (self.se > 0 and self.df > 0):
            return float("nan")
        p_low = special.stdtr(self.df, -(self.delta + margin) / self.se)  # H0: delta <= -margin
        p_high = special.stdtr(self.df, (self.delta - margin) / self.se)  # H0: delta >= +margin
        return float(max(p_low, p_high))


def spread(values: np.ndarray, resolution: float | None = None, ties: float = 12.0,
           scale: float | None = None) -> float:
    """Sample standard deviation that tells ties from certainty: round-off counts as 0, and where the metric moves in
    steps of `resolution` (1/examples for accuracy) it is at least resolution/sqrt(ties), the spread that rounding to
    that step alone adds (Sheppard: h^2/12 for one value, h^2/6 for a difference of two). nan: not determined
    (fewer than 2 values, or tied values of a metric whose step is unknown). `scale`: the magnitude round-off is
    relative to, where `values` are differences of larger numbers."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float("nan")
    s = float(values.std(ddof=1))
    s = 0.0 if s <= 1e-9 * max(1.0, scale or 0.0, float(np.max(np.abs(values)))) else s
    if resolution:
        s = max(s, resolution / math.sqrt(ties))
    return s if s > 0 else float("nan")


def t_interval(values: np.ndarray, level: float = 0.95, resolution: float | None = None) -> tuple[float, float]:
    """Student t interval of the mean with `spread`'s standard deviation (scipy's ttest_1samp when values differ by
    more than the step); (nan, nan) when the spread is not determined, never a zero-width interval from ties."""
    values = np.asarray(values, dtype=float)
    s = spread(values, resolution)
    if not s == s:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * s / math.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def welch(a: np.ndarray, b: np.ndarray, resolution: float | None = None) -> Estimate:
    """mean(a) - mean(b) with Welch's standard error and Welch–Satterthwaite df (unpaired, unequal variances);
    each group's spread by `spread` (ties floored at the metric's step, round-off as 0)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    delta = float(a.mean() - b.mean()) if len(a) and len(b) else float("nan")
    sa, sb = spread(a, resolution), spread(b, resolution)
    if not (sa == sa and sb == sb):
        return Estimate(delta, float("nan"), float("nan"), "welch", min(len(a), len(b)))
    va, vb = sa ** 2 / len(a), sb ** 2 / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return Estimate(delta, se, df, "welch", min(len(a), len(b)), math.sqrt(sa ** 2 + sb ** 2))


def paired(a: np.ndarray, b: np.ndarray, resolution: float | None = None) -> Estimate:
    """Mean of seed-matched differences a_i - b_i, with the paired t standard error (df = pairs - 1); the
    differences' spread by `spread` (floored at step/sqrt(6), the rounding of two values)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = a - b
    delta = float(d.mean()) if len(d) else float("nan")
    s = spread(d, resolution, ties=6.0, scale=float(np.max(np.abs(np.concatenate([a, b])))) if len(d) else None)
    if not s == s:
        return Estimate(delta, float("nan"), float("nan"), "paired-t", len(d))
    return Estimate(delta, s / math.sqrt(len(d)), len(d) - 1, "paired-t", len(d), s)


def trigamma_inverse(x: float) -> float:
    """y with polygamma(1, y) = x, by Newton's method on 1/trigamma (Smyth 2004, limma's trigammaInverse)."""
    if x > 1e7:
        return 1 / math.sqrt(x)
    if x < 1e-6:
        return 1 / x
    y = 0.5 + 1 / x
    for _ in range(50):
        tri = float(special.polygamma(1, y))
        step = tri * (1 - tri / x) / float(special.polygamma(2, y))
        y += step
        if -step / y < 1e-8:
            break
    return y


@dataclass(frozen=True)
class VariancePrior:
    """A scaled inverse chi-square prior for the pairs' difference variances of one stratum: `var` with `df`
    degrees of freedom (inf: all pairs share one variance), from `pairs` observed variances."""

    df: float
    var: float
    pairs: int

    def moderate(self, var: float, df: float) -> tuple[float, float]:
        """(posterior variance, its df): (df0 s0^2 + df s^2) / (df0 + df) with df0 + df degrees of freedom."""
        if math.isinf(self.df):
            return self.var, math.inf
        return (self.df * self.var + df * var) / (self.df + df), self.df + df


def fit_variance_prior(variances: np.ndarray, dfs: np.ndarray, weight: float = 1.0) -> VariancePrior | None:
    """Smyth's (2004) moment estimator of the prior (limma's fitFDist): log variances, centred by their expected
    log-chi-square offset, have variance trigamma(df0/2) + mean trigamma(df/2). `weight` scales the fitted df0: one
    study's pairs share groups, so their variances are correlated and look more alike than independent ones would,
    and a group with a larger spread is shrunk toward the others (bench/evidence.py calibrates the weight that keeps
    the family's error rate). None below 3 usable pairs."""
    v, d = np.asarray(variances, dtype=float), np.asarray(dfs, dtype=float)
    ok = (v > 0) & np.isfinite(v) & (d > 0)
    v, d = v[ok], d[ok]
    if len(v) < 3:
        return None
    e = np.log(v) - special.digamma(d / 2) + np.log(d / 2)
    excess = float(e.var(ddof=1) - np.mean(special.polygamma(1, d / 2)))
    if excess <= 0:
        return VariancePrior(math.inf, float(np.exp(e.mean())), len(v))
    df0 = 2 * trigamma_inverse(excess)
    var0 = float(np.exp(e.mean() + special.digamma(df0 / 2) - np.log(df0 / 2)))
    return VariancePrior(weight * df0, var0, len(v))


def moderated(a: np.ndarray, b: np.ndarray, prior: VariancePrior, df_cap: float,
              resolution: float | None = None) -> Estimate:
    """The paired t of `paired` with the differences' variance shrunk toward the stratum's prior (empirical Bayes,
    Smyth 2004): df = prior df + pairs - 1, at most `df_cap` (the additive fit's residual df: the pooled fit's)."""
    base = paired(a, b, resolution)
    if not (base.se > 0 and base.df > 0):
        return Estimate(base.delta, base.se, base.df, "moderated", base.n)
    var, df = prior.moderate(base.sd_per_seed ** 2, base.df)
    sd = math.sqrt(var)
    df = min(df, df_cap)
    return Estimate(base.delta, sd / math.sqrt(base.n), df, "moderated", base.n, sd, max(df - base.df, 0.0))


@dataclass(frozen=True)
class BlockFit:
    """Intra-block least-squares fit of y = mu + group + seed + e (additive; balanced or not, complete or not)."""

    groups: list[str]
    effects: np.ndarray  # group effects (identified up to a constant; contrasts are what counts)
    c_pinv: np.ndarray  # pseudo-inverse of the reduced normal-equation matrix C
    c_proj: np.ndarray  # C C^+ : projects a contrast onto the estimable space
    sigma2: float  # pooled residual variance
    df: int  # residual degrees of freedom: N - seeds - rank(C)
    seeds_of: dict[str, frozenset]

    def contrast(self, a: str, b: str) -> Estimate | None:
        """Group a minus group b; None when the design does not connect them (not estimable)."""
        i, j = self.groups.index(a), self.groups.index(b)
        c = np.zeros(len(self.groups))
        c[i], c[j] = 1.0, -1.0
        if not np.allclose(self.c_proj @ c, c, atol=1e-8) or self.df <= 0:
            return None
        var = float(c @ self.c_pinv @ c) * self.sigma2
        shared = len(self.seeds_of[a] & self.seeds_of[b])
        if not var > 0:
            return None
        # one more seed of each group adds the spread of a difference of two runs: sqrt(2 sigma^2)
        return Estimate(float(c @ self.effects), math.sqrt(var), self.df, "blocked", shared, math.sqrt(2 * self.sigma2))


def fit_blocks(values: np.ndarray, groups: list[str], seeds: list, resolution: float | None = None) -> BlockFit:
    """Fit the additive group + seed model to one observation per (group, seed) by the intra-block equations.

    Reduced normal equations C tau = Q with C = diag(r) - N diag(1/k) N', Q = T - N diag(1/k) B (N: group x seed
    counts, r/k: group/seed sizes, T/B: group/seed totals): O(groups^2 x seeds), so 10,000 runs take milliseconds,
    where a dense least-squares fit with one column per seed would not. A residual variance at round-off level is
    0 (exactly additive data have no error to test against); with a known `resolution` it is at least h^2/12.
    """
    y = np.asarray(values, dtype=float)
    glevels = sorted(set(groups))
    slevels = sorted(set(seeds), key=lambda s: (str(type(s)), s))
    gi = np.array([glevels.index(g) for g in groups]) if glevels else np.zeros(0, int)
    s_index = {s: k for k, s in enumerate(slevels)}
    si = np.array([s_index[s] for s in seeds], dtype=int)
    n_mat = np.zeros((len(glevels), len(slevels)))
    np.add.at(n_mat, (gi, si), 1.0)
    r, k = n_mat.sum(axis=1), n_mat.sum(axis=0)
    t_tot, b_tot = np.bincount(gi, y, len(glevels)), np.bincount(si, y, len(slevels))
    c_mat = np.diag(r) - (n_mat / k) @ n_mat.T
    q = t_tot - (n_mat / k) @ b_tot
    c_pinv = np.linalg.pinv(c_mat, hermitian=True)
    tau = c_pinv @ q
    rank = int(np.linalg.matrix_rank(c_mat, hermitian=True)) if len(glevels) else 0
    beta = (b_tot - n_mat.T @ tau) / k  # seed effects (with the mean folded in) given tau
    resid = y - tau[gi] - beta[si]
    df = len(y) - len(slevels) - rank
    sigma2 = float(resid @ resid / df) if df > 0 else float("nan")
    if sigma2 == sigma2:
        sigma2 = 0.0 if math.sqrt(sigma2) <= 1e-9 * max(1.0, float(np.max(np.abs(y)))) else sigma2
        sigma2 = max(sigma2, resolution ** 2 / 12) if resolution else sigma2
    seeds_of = {g: frozenset(s for s, gg in zip(seeds, groups) if gg == g) for g in glevels}
    return BlockFit(glevels, tau, c_pinv, c_mat @ c_pinv, sigma2, df, seeds_of)


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (nan stays nan and does not count as a test)."""
    idx = [i for i, p in enumerate(p_values) if p == p]
    order = sorted(idx, key=lambda i: p_values[i])
    m = len(order)
    adjusted = [float("nan")] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def seeds_to_settle(est: Estimate, level: float, margin: float, power: float = 0.8, limit: int = 1000,
                    at_least: int = 2) -> int | None:
    """Seeds after which a comparison reaches a verdict whatever the true difference, with chance >= `power`.

    At a `level` interval half-width <= margin/2 every outcome is a verdict: either the interval excludes 0
    (better/worse) or |delta| <= margin/2 and the interval lies within ±margin (equivalent). The future spread is
    taken with its uncertainty: s_new^2 / s_pilot^2 ~ F(n - 1, pilot df), so the half-width stays under margin/2
    with probability `power` when t(n-1) * s_pilot * sqrt(F_power) / sqrt(n) <= margin/2 (a moderated estimate
    keeps its prior df: t and F on n - 1 + prior df). None: not estimable (no spread yet) or more than `limit`
    seeds. At least `at_least` seeds (the test the plan assumes may need that many).
    """
    sd, df = est.sd_per_seed, est.df
    if not (sd == sd and sd > 0 and df == df and df > 0):
        return None
    n = np.arange(max(at_least, 2), limit + 1)
    future = n - 1 + est.prior_df
    half = special.stdtrit(future, 0.5 + level / 2) * sd * np.sqrt(stats.f.ppf(power, future, df)) / np.sqrt(n)
    enough = np.flatnonzero(half <= margin / 2)
    return int(n[enough[0]]) if len(enough) else None


def seeds_to_detect(est: Estimate, level: float, power: float = 0.8, limit: int = 1000,
                    at_least: int = 2) -> int | None:
    """Seeds at which a difference as large as the one observed would be detected (interval excludes 0) with chance
    `power`: the smallest n with (t_level + t_power) * sd / sqrt(n) <= |delta|, t on n - 1 (+ a moderated
    estimate's prior) df. A plan conditional on the observed |delta| being real (under no effect, no number of
    seeds detects one); None if not estimable."""
    sd, delta = est.sd_per_seed, abs(est.delta)
    if not (sd == sd and sd > 0 and delta > 0):
        return None
    n = np.arange(max(at_least, 2), limit + 1)
    future = n - 1 + est.prior_df
    need = (special.stdtrit(future, 0.5 + level / 2) + special.stdtrit(future, power)) * sd / np.sqrt(n)
    enough = np.flatnonzero(need <= delta)
    return int(n[enough[0]]) if len(enough) else None


def binomial_se(accuracy: float, n_examples: int | float) -> float:
    """Standard error of an accuracy measured on n examples: sqrt(p (1 - p) / n)."""
    if not (n_examples and n_examples > 0) or not (0 <= accuracy <= 1):
        return float("nan")
    return math.sqrt(accuracy * (1 - accuracy) / n_examples)


def pareto_front(cost: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Boolean mask of points no other point beats (lower or equal cost and higher or equal value, one strictly)."""
    cost, value = np.asarray(cost, dtype=float), np.asarray(value, dtype=float)
    mask = np.ones(len(cost), dtype=bool)
    for i in range(len(cost)):
        dominated = (cost <= cost[i]) & (value >= value[i]) & ((cost < cost[i]) | (value > value[i]))
        mask[i] = not dominated.any()
    return mask
