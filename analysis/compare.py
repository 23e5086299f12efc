"""Comparisons between groups, one family: per-pair tests, simultaneous (Bonferroni) intervals, and exactly one
verdict per pair read off its interval (pure pandas over `prepare`d trials).

Why this design (each choice measured in bench/evidence.py, figures in BENCHMARKS.md):
- Default test (`auto`): the paired t on seed-matched differences (Welch where seeds are not shared), its variance
  moderated (empirical Bayes, Smyth 2004) where a pair shares MODERATED_MIN_SEEDS seeds: shrunk toward a prior
  fitted to every pair of the stratum, but never below either group's typical pair variance, so a group with a
  larger seed-to-seed spread cannot make the others' comparisons anti-conservative, as it does in a pooled fit
  (a variance screen to exclude such groups itself inflated the error rate). Below that many seeds the plain
  paired t decides and the moderated verdict is shown beside it, not as a claim. `test="paired"` and
  `test="moderated"` force one; `test="blocked"` keeps the pooled group + seed fit, one fit per stratum.
- Strata: seeds are blocks only within one model on one data set; across models a comparison is Welch, labelled
  unpaired; across data sets (or tasks) nothing is compared.
- One family: every interval is at level 1 - alpha/m for the m pairs tested, so all hold together with
  probability >= 1 - alpha, and each verdict (better, worse, equivalent, or both "better, within margin") is read
  off that interval: the chance of any false claim in the table is at most alpha, and no verdict can contradict
  the interval shown beside it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from record.metrics import higher_is_better

from . import stats

VERDICTS = ("better", "better, within margin", "equivalent", "worse, within margin", "worse", "inconclusive",
            "undetermined")
TESTS = ("auto", "paired", "moderated", "blocked")
DEFAULT_TEST = "auto"  # moderated where a pair shares MODERATED_MIN_SEEDS seeds, else the paired t
PRIOR_WEIGHT = 0.5  # share of the fitted prior df a moderated test uses (calibrated in bench/evidence.py)
MODERATED_MIN_SEEDS = 3  # from 3 shared seeds on it keeps the family-wise error rate (bench/evidence.py, BENCHMARKS)
DEFAULT_MARGIN = 0.005  # half an accuracy point: a difference smaller than this is negligible (the report's default)
SETTLE_LIMIT = 1000  # seeds per group beyond which a plan is not worth printing


@dataclass(frozen=True)
class Family:
    """How the pairs were tested: the test asked for, the level of every interval, and the blocked fits used."""

    test: str  # auto | paired | moderated | blocked
    alpha: float
    pairs: int  # m: the comparisons in the family
    fits: dict = field(default_factory=dict)  # (model, data) -> stats.BlockFit, with test = blocked
    not_compared: int = 0  # pairs on different data sets or tasks, never compared
    priors: dict = field(default_factory=dict)  # (model, data) -> StratumPrior, for moderated pairs
    looks: int = 1  # a sequential design's planned looks (`until: decided`): alpha is split over them too

    @property
    def level(self) -> float:
        """Confidence level of each interval: 1 - alpha/(m looks) (Bonferroni), so that all m hold together at
        every look of the design."""
        return 1 - self.alpha / max(self.pairs, 1) / self.looks


def pairs_to_test(groups: list[str], reference: str | None) -> list[tuple[str, str]]:
    """Every group against the reference (the article's "vs LoRA base"), or all pairs."""
    if reference is not None:
        return [(g, reference) for g in groups if g != reference]
    return list(itertools.combinations(groups, 2))


def _step(resolutions: list) -> float | None:
    """The coarsest known step among groups (None when no group's step is known)."""
    known = [r for r in resolutions if r is not None and r == r]
    return max(known) if known else None


def _fits(values: pd.DataFrame, by_group: dict[str, pd.Series], step: dict[str, float | None]) -> dict:
    """One blocked group + seed fit per (model, data) stratum, over its groups with >= 2 runs."""
    fits = {}
    for stratum, d in values.groupby(["model_key", "data_key"], sort=True):
        names = [g for g in sorted(d["group"].unique()) if len(by_group[g]) >= 2]
        if len(names) < 2:
            continue
        fit = stats.fit_blocks(np.concatenate([by_group[g].to_numpy(float) for g in names]),
                               [g for g in names for _ in by_group[g]], [s for g in names for s in by_group[g].index],
                               _step([step[g] for g in names]))
        if fit.df > 0:
            fits[stratum] = fit
    return fits


def shared_values(sa: pd.Series, sb: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The two groups' values on the seeds they share, seed-matched (by_group's series are sorted by seed)."""
    _, i, j = np.intersect1d(sa.index.to_numpy(), sb.index.to_numpy(), assume_unique=True, return_indices=True)
    return sa.to_numpy(float)[i], sb.to_numpy(float)[j]


@dataclass(frozen=True)
class StratumPrior:
    """The variance prior of one (model, data) stratum, fitted to all its seed-matched pairs; each group's typical
    pair variance (the median over its pairs); and the df cap of a moderated pair (the additive fit's residual df).

    A pair is shrunk toward the larger of the prior's variance and its two groups' typical pair variances: the
    prior assumes exchangeable pairs, and the pairs of a group noisier than the rest are not, so without that floor
    they were shrunk toward the quiet pairs and the family-wise error rose to 0.06-0.09 with one group at 3-5x the
    spread (bench/evidence.py); the floor only ever raises a variance."""

    prior: stats.VariancePrior
    level: dict[str, float]
    cap: int

    def for_pair(self, a: str, b: str) -> stats.VariancePrior:
        """The prior the pair a - b is shrunk toward."""
        return replace(self.prior, var=max(self.prior.var, self.level.get(a, 0.0), self.level.get(b, 0.0)))


def _priors(values: pd.DataFrame, by_group: dict[str, pd.Series], step: dict[str, float | None],
            weight: float) -> dict:
    """(model, data) stratum -> StratumPrior: what `moderated` shrinks each pair's difference variance toward.
    Strata with fewer than 3 such pairs have none: their pairs keep the paired t."""
    priors = {}
    for stratum, d in values.groupby(["model_key", "data_key"], sort=True):
        names = [g for g in sorted(d["group"].unique()) if len(by_group[g]) >= 2]
        variances, dfs, mine = [], [], {g: [] for g in names}
        for a, b in itertools.combinations(names, 2):
            x, y = shared_values(by_group[a], by_group[b])
            if len(x) >= 2:
                est = stats.paired(x, y, _step([step[a], step[b]]))
                if est.sd_per_seed == est.sd_per_seed:
                    variances.append(est.sd_per_seed ** 2)
                    dfs.append(est.df)
                    mine[a].append(variances[-1])
                    mine[b].append(variances[-1])
        prior = stats.fit_variance_prior(np.array(variances), np.array(dfs), weight)
        if prior is None:
            continue
        cap = stats.fit_blocks(np.concatenate([by_group[g].to_numpy(float) for g in names]),
                               [g for g in names for _ in by_group[g]], [s for g in names for s in by_group[g].index],
                               _step([step[g] for g in names])).df
        priors[stratum] = StratumPrior(prior, {g: float(np.median(v)) for g, v in mine.items() if v}, cap)
    return priors


def estimate(a: str, b: str, by_group: dict[str, pd.Series], same_model: bool, fit: stats.BlockFit | None,
             resolution: float | None, prior: StratumPrior | None = None,
             min_seeds: int = 2) -> tuple[stats.Estimate, str]:
    """(a - b, how it was paired): a blocked contrast, else the paired t on shared seeds (moderated toward the
    stratum's prior, given one, from `min_seeds` shared seeds on), else Welch."""
    if fit is not None and a in fit.groups and b in fit.groups:
        est = fit.contrast(a, b)
        if est is not None:
            return est, "seeds as blocks, pooled over the model's groups"
    sa, sb = by_group[a], by_group[b]
    if not same_model:
        return stats.welch(sa.to_numpy(float), sb.to_numpy(float), resolution), "unpaired: different models"
    x, y = shared_values(sa, sb)
    if len(x) >= 2:
        if prior is not None and len(x) >= min_seeds:
            return stats.moderated(x, y, prior.for_pair(a, b), prior.cap, resolution), \
                f"paired on {len(x)} shared seeds, variance moderated over {prior.prior.pairs} pairs"
        return stats.paired(x, y, resolution), f"paired on {len(x)} shared seeds"
    return stats.welch(sa.to_numpy(float), sb.to_numpy(float), resolution), \
        "unpaired: fewer than 2 shared seeds"


def reversed_verdict(verdict: str) -> str:
    """The same verdict read the other way round (b vs a): better <-> worse; the others are symmetric."""
    for one, other in (("better", "worse"), ("worse", "better")):
        if verdict.startswith(one):
            return other + verdict[len(one):]
    return verdict


def verdict(low: float, high: float, margin: float, delta: float, up: bool) -> str:
    """The one verdict an interval supports: a sign when it excludes 0, equivalence when it lies within ±margin,
    both when both hold; undetermined without an interval."""
    if not (low == low and high == high):
        return "undetermined"
    excludes_zero, within = low > 0 or high < 0, -margin < low and high < margin
    if excludes_zero:
        sign = "better" if (delta > 0) == up else "worse"
        return f"{sign}, within margin" if within else sign
    return "equivalent" if within else "inconclusive"


def compare(values: pd.DataFrame, metric: str, reference: str | None = None, margin: float = DEFAULT_MARGIN,
            alpha: float = 0.05, test: str = DEFAULT_TEST, prior_weight: float = PRIOR_WEIGHT,
            plans: bool = True, looks: int = 1) -> tuple[pd.DataFrame, Family]:
    """One row per comparison: estimate, simultaneous interval, verdict, seeds to settle, sentence (`plans`:
    False leaves out the seed plans and sentences, for simulations that read only the verdicts).

    `values` has columns group, seed, value (one row per run, duplicates already dropped) and optionally
    model_key and data_key (the strata), compare_key (pairs are tested only within one; default data_key) and
    resolution (the metric's step, 1/examples for accuracy; nan: unknown).
    `looks`: the planned looks of a sequential design (analysis.sequential), over which alpha is split.
    """
    values = values.assign(**{c: values[c] if c in values else default for c, default in
                              (("model_key", ""), ("data_key", ""), ("resolution", np.nan))})
    compared = dict(zip(values["group"], values["compare_key"] if "compare_key" in values else values["data_key"]))
    ordered = values.sort_values(["group", "seed"], kind="stable")
    by_group = {g: pd.Series(d["value"].to_numpy(float), index=d["seed"].to_numpy())
                for g, d in ordered.groupby("group", sort=True)}
    firsts = values.drop_duplicates("group")
    stratum = dict(zip(firsts["group"], zip(firsts["model_key"], firsts["data_key"])))  # group -> (model, data)
    step = values.groupby("group")["resolution"].max().to_dict()
    fits = _fits(values, by_group, step) if test == "blocked" else {}
    priors = _priors(values, by_group, step, prior_weight) if test in ("moderated", "auto") else {}
    min_seeds = MODERATED_MIN_SEEDS if test == "auto" else 2
    up = higher_is_better(metric)
    sign = 1 if up else -1
    means = {g: float(v.to_numpy().mean()) for g, v in by_group.items()}
    ranked = sorted(by_group, key=lambda g: (-sign * means[g], g))  # best first: Δ mostly >= 0
    candidates = pairs_to_test(ranked, reference)
    # an explicit reference is compared with every group on its data set, across budgets too (the user asked)
    tested = [(a, b) for a, b in candidates if compared[a] == compared[b]
              or (reference in (a, b) and stratum[a][1] == stratum[b][1])]
    family = Family(test, alpha, len(tested), fits, len(candidates) - len(tested), priors, looks)
    rows = []
    for a, b in tested:
        same_model = stratum[a][0] == stratum[b][0]
        here = stratum[a]
        prior = priors.get(here) if same_model else None
        est, pairing = estimate(a, b, by_group, same_model, fits.get(here) if same_model else None,
                                _step([step[a], step[b]]), prior, min_seeds)
        low, high = est.interval(family.level)
        shadow, plan = None, (est, 2)  # plan: the estimate seed plans start from, and the fewest seeds they assume
        if prior is not None and est.test == "paired-t":  # too few seeds for moderation: say what it would decide
            alt, _ = estimate(a, b, by_group, same_model, None, _step([step[a], step[b]]), prior)
            shadow, plan = verdict(*alt.interval(family.level), margin, alt.delta, up), (alt, min_seeds)
        rows.append({"a": a, "b": b, "metric": metric, "test": est.test, "pairing": pairing, "n_seeds": est.n,
                     "df": est.df, "mean_a": means[a], "mean_b": means[b], "delta": est.delta,
                     "se": est.se, "ci_level": family.level, "ci_low": low, "ci_high": high, "p": est.p_value(),
                     "p_adj": _adjusted(est.p_value(), family.pairs * looks), "margin": margin,
                     "p_equiv_adj": _adjusted(est.tost_p(margin), 2 * family.pairs * looks),
                     "verdict": verdict(low, high, margin, est.delta, up), "moderated_verdict": shadow, "_plan": plan})
    if not rows:
        return pd.DataFrame(columns=["a", "b", "test", "delta", "ci_low", "ci_high", "verdict", "seeds_to_settle",
                                     "sentence"]), family
    df = pd.DataFrame(rows)
    if not plans:
        return df.drop(columns="_plan"), family
    open_ = df["verdict"] == "inconclusive"
    df["seeds_to_settle"] = [stats.seeds_to_settle(e, family.level, margin, limit=SETTLE_LIMIT, at_least=k) if o
                             else None for (e, k), o in zip(df["_plan"], open_)]
    df["seeds_to_detect"] = [stats.seeds_to_detect(e, family.level, limit=SETTLE_LIMIT, at_least=k) if o else None
                             for (e, k), o in zip(df["_plan"], open_)]
    df = df.astype({"seeds_to_settle": "Int64", "seeds_to_detect": "Int64"})
    df["sentence"] = [_sentence(r, family) for _, r in df.iterrows()]
    return df.drop(columns="_plan"), family


def _adjusted(p: float, times: int) -> float:
    """Bonferroni: min(1, p x times); nan stays nan (no test was possible)."""
    return float(np.minimum(1.0, p * times))


def _pct(level: float) -> str:
    return f"{100 * level:.3g} %"


def _sentence(row, family: Family) -> str:
    """Δ, the interval the verdict is read off, how it was tested, and the verdict in words."""
    test = {"blocked": f"blocked, {row['df']:.0f} df", "paired-t": "paired t", "welch": "Welch",
            "moderated": f"moderated paired t, {row['df']:.0f} df"}[row["test"]]
    head = f"{row['a']} vs {row['b']}: Δ = {row['delta']:+.4f}"
    how = f"({test}, {row['pairing']})"
    if row["verdict"] == "undetermined":
        return (f"{head}: undetermined: the spread cannot be estimated (fewer than 2 runs, or tied values of a "
                f"metric whose step is unknown) {how}")
    ci = f"the {_pct(row['ci_level'])} interval [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"
    margin = f"±{row['margin']:g}"
    v = row["verdict"]
    if v in ("better", "worse"):
        return f"{head}: {row['a']} is {v}: {ci} excludes 0 {how}"
    if v.endswith("within margin"):
        return (f"{head}: {row['a']} is {v.split(',')[0]}, by less than the margin: {ci} excludes 0 and lies "
                f"within {margin} {how}")
    if v == "equivalent":
        return f"{head}: equivalent: {ci} lies within {margin} {how}"
    settle = row.get("seeds_to_settle")
    more = (f"; about {settle} seeds per group would settle it either way (80 % chance)" if pd.notna(settle) else
            f"; more than {SETTLE_LIMIT} seeds per group would be needed to settle it")
    detect = row.get("seeds_to_detect")
    if pd.notna(detect) and (pd.isna(settle) or detect < settle):
        more += f", about {detect} to detect a difference as large as this one if it is real"
    shadow = row.get("moderated_verdict")
    if isinstance(shadow, str) and shadow not in ("inconclusive", "undetermined"):
        more += (f"; the moderated test would call it {shadow} on these seeds (not a claim: it keeps its error rate "
                 f"from {MODERATED_MIN_SEEDS} shared seeds on)")
    return (f"{head}: inconclusive, the data cannot tell: {ci} includes 0 and is not within {margin} {how}"
            f"{more} (this is not evidence of no effect)")
