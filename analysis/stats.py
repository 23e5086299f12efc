"""Statistics for the study read-out (pure functions on arrays): intervals, the blocked (seed) design, paired and
Welch tests, TOST equivalence, Holm, precision planning, the dev-set noise floor and the Pareto front.

Every test here is a t test of one estimate: `Estimate(delta, se, df)`; its p-value, interval and TOST follow from
those three numbers, so the interval in a sentence and its verdict can never disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

BCA_MIN_N = 30  # below this, BCa under-covers on normal data (0.90-0.93 measured at n = 10-30): t only


@dataclass(frozen=True)
class Estimate:
    """A difference (or mean) with its standard error and degrees of freedom, from one of the tests below."""

    delta: float
    se: float
    df: float
    test: str  # blocked | paired-t | welch
    n: int  # seeds shared (blocked, paired-t) or runs in the smaller group (welch)

    def p_value(self) -> float:
        """Two-sided p of H0: delta = 0; nan where the estimate has no spread to test against."""
        if not (self.se > 0 and self.df > 0):
            return float("nan")
        return float(2 * stats.t.sf(abs(self.delta) / self.se, self.df))

    def interval(self, level: float) -> tuple[float, float]:
        """Two-sided `level` t interval of delta."""
        if not (self.se > 0 and self.df > 0):
            return float("nan"), float("nan")
        half = stats.t.ppf(0.5 + level / 2, self.df) * self.se
        return self.delta - half, self.delta + half

    def tost_p(self, margin: float) -> float:
        """TOST p of H0: |delta| >= margin (the larger of the two one-sided p-values)."""
        if not (self.se > 0 and self.df > 0):
            return float("nan")
        p_low = stats.t.sf((self.delta + margin) / self.se, self.df)  # H0: delta <= -margin
        p_high = stats.t.cdf((self.delta - margin) / self.se, self.df)  # H0: delta >= +margin
        return float(max(p_low, p_high))


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student t interval of the mean (scipy's ttest_1samp); (nan, nan) below 2 values, (m, m) without spread."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float("nan"), float("nan")
    if np.ptp(values) == 0:
        return float(values[0]), float(values[0])
    ci = stats.ttest_1samp(values, 0.0).confidence_interval(level)
    return float(ci.low), float(ci.high)


def bca_interval(values: np.ndarray, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """BCa bootstrap interval of the mean (scipy.stats.bootstrap), only from BCA_MIN_N values on; else (nan, nan)."""
    values = np.asarray(values, dtype=float)
    if len(values) < BCA_MIN_N or np.ptp(values) == 0:
        return float("nan"), float("nan")
    res = stats.bootstrap((values,), np.mean, confidence_level=level, method="BCa", n_resamples=4999,
                          random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def welch(a: np.ndarray, b: np.ndarray) -> Estimate:
    """mean(a) - mean(b) with Welch's standard error and Welch–Satterthwaite df (unpaired, unequal variances)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    delta = float(a.mean() - b.mean()) if len(a) and len(b) else float("nan")
    if len(a) < 2 or len(b) < 2:
        return Estimate(delta, float("nan"), float("nan"), "welch", min(len(a), len(b)))
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se > 0 else float("nan")
    return Estimate(delta, se, df, "welch", min(len(a), len(b)))


def paired(a: np.ndarray, b: np.ndarray) -> Estimate:
    """Mean of seed-matched differences a_i - b_i, with the paired t standard error (df = pairs - 1)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(d) < 2:
        return Estimate(float(d.mean()) if len(d) else float("nan"), float("nan"), float("nan"), "paired-t", len(d))
    return Estimate(float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))), len(d) - 1, "paired-t", len(d))


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
    seed_effects: dict  # seed -> fitted seed level (grand mean folded in)
    seed_sizes: dict  # seed -> number of groups observed at it

    def contrast(self, a: str, b: str) -> Estimate | None:
        """Group a minus group b; None when the design does not connect them (not estimable)."""
        i, j = self.groups.index(a), self.groups.index(b)
        c = np.zeros(len(self.groups))
        c[i], c[j] = 1.0, -1.0
        if not np.allclose(self.c_proj @ c, c, atol=1e-8) or self.df <= 0:
            return None
        var = float(c @ self.c_pinv @ c) * self.sigma2
        shared = len(self.seeds_of[a] & self.seeds_of[b])
        return Estimate(float(c @ self.effects), math.sqrt(max(var, 0.0)), self.df, "blocked", shared)


def fit_blocks(values: np.ndarray, groups: list[str], seeds: list) -> BlockFit:
    """Fit the additive group + seed model to one observation per (group, seed) by the intra-block equations.

    Reduced normal equations C tau = Q with C = diag(r) - N diag(1/k) N', Q = T - N diag(1/k) B (N: group x seed
    counts, r/k: group/seed sizes, T/B: group/seed totals): O(groups^2 x seeds), so 10,000 runs take milliseconds,
    where a dense least-squares fit with one column per seed would not.
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
    seeds_of = {g: frozenset(s for s, gg in zip(seeds, groups) if gg == g) for g in glevels}
    return BlockFit(glevels, tau, c_pinv, c_mat @ c_pinv, sigma2, df, seeds_of, dict(zip(slevels, beta)),
                    dict(zip(slevels, k)))


def spread_outlier(values: np.ndarray, groups: list[str], seeds: list, alpha: float) -> tuple[str, float] | None:
    """The group whose noise differs most from the others', if it differs significantly; else None.

    For each group g: fit group + seed without it, take g's seed-matched deviations from the others' seed levels
    (variance sigma_g^2 + sigma^2/k) and F-test their variance against the others' pooled residual variance, two
    sided, Bonferroni over groups. Brown–Forsythe has almost no power at the 3-5 seeds studies use (p = 0.15 for a
    7.5x larger standard deviation at 3 seeds); this leave-one-out F test finds it (it assumes normal noise).
    """
    y = np.asarray(values, dtype=float)
    names = sorted(set(groups))
    best: tuple[str, float] | None = None
    for g in names:
        mine = np.array([gg == g for gg in groups])
        rest = fit_blocks(y[~mine], [gg for gg, m in zip(groups, mine) if not m],
                          [s for s, m in zip(seeds, mine) if not m])
        shared = [(v, s) for v, s, m in zip(y, seeds, mine) if m and s in rest.seed_effects]
        if rest.df <= 0 or len(shared) < 2 or not rest.sigma2 > 0:
            continue
        dev = np.array([v - rest.seed_effects[s] for v, s in shared])
        scale = rest.sigma2 * (1 + np.mean([1 / rest.seed_sizes[s] for _, s in shared]))
        ratio = float(dev.var(ddof=1) / scale)
        one_sided = stats.f.sf(ratio, len(dev) - 1, rest.df) if ratio >= 1 else stats.f.cdf(ratio, len(dev) - 1, rest.df)
        p = min(1.0, 2 * float(one_sided) * len(names))
        if best is None or p < best[1]:
            best = (g, p)
    return best if best is not None and best[1] < alpha else None


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


def holm_levels(p_values: list[float], alpha: float) -> list[float]:
    """The level Holm's step-down tests each hypothesis at: alpha/(m - k + 1) for the k-th smallest p, frozen at
    the first step that fails. A (1 - level) t interval then excludes 0 exactly when Holm rejects."""
    idx = [i for i, p in enumerate(p_values) if p == p]
    order = sorted(idx, key=lambda i: p_values[i])
    m = len(order)
    levels = [float("nan")] * len(p_values)
    stopped: float | None = None
    for rank, i in enumerate(order):
        level = alpha / (m - rank)
        if stopped is None and p_values[i] >= level:
            stopped = level
        levels[i] = stopped if stopped is not None else level
    return levels


def seeds_for_halfwidth(std: float, halfwidth: float, level: float = 0.95, limit: int = 10_000) -> int | None:
    """Smallest n whose t interval half-width t(n-1) * std / sqrt(n) is <= halfwidth; None if std is unknown."""
    if not (std == std) or halfwidth <= 0:
        return None
    if std == 0:
        return 2
    for n in range(2, limit + 1):
        if stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n) <= halfwidth:
            return n
    return limit


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
