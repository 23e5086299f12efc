"""The multi-bootstrap of the MultiBERTs (Sellam et al. 2022): a metric's sampling error over new seeds *and* new data
from the same distribution, from each seed's predictions on one eval set (pure numpy; scipy for a t quantile).

Each replicate draws the seeds and the examples jointly, with replacement (the examples as multinomial counts: one
row of an R x E matrix); its statistic is the mean over the drawn seeds of metric(seed, drawn examples), and for two
groups a and b the mean of metric(a, seed, examples) - metric(b, seed, examples) under the same draws (paired: seeds
shared by both are drawn once; unpaired groups, e.g. of two models, draw their seeds apart but share the examples).
The metric comes from weighted confusion counts (one matrix product per count, for all replicates and seeds at
once), so accuracy (any number of classes), F1 of class 1 and MCC (two classes) need no loop over replicates; any
other metric (regression, multi-class F1 or MCC) gives nan: not available.

The interval is estimate +- a multiple of the SE, not bootstrap percentiles: the report reads Bonferroni levels such
as 1 - 0.05/28, whose 0.09 % tails a percentile interval would place from the few most extreme of tens of thousands
of replicates, while the SE settles within a few per cent from a thousand; the statistic is a mean over seeds and
examples, close to normal. At 2-5 seeds the seed part is the weak one, so it is not read at z: the plug-in bootstrap
shrinks a mean's seed variance by (n-1)/n (added back into the SE), and the half-width is the root-sum-of-squares of
the seed part's own half-width (Student's t, n - 1 df: the seed-only interval's) and the examples' part's (z). The
interval over new data and new seeds is never narrower than the paired t over the same seeds, as the wider question
requires (a Welch-Satterthwaite t, tried first, was: at 2 seeds it read a 1-df seed variance as nearly known and
covered 0.975 at a nominal 0.99). It tends to z * SE as seeds grow. With fewer than 2 seeds (in a group, or shared
by a pair) nothing over new seeds can be said: nan, as for the seed-only interval; tied seeds are not certainty
either: the seed part is floored at the metric's rounding error as the seed-only tests floor it (accuracy: step 1/E),
and is undetermined (nan) for tied F1 or MCC, whose step is not known. The joint draw also counts the
seed x example noise twice (in the seed draw and in the example draw), so a paired difference, whose example
effects cancel and leave mostly that noise, is conservative. Measured coverage: tests/test_predictions.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

METRICS = ("accuracy", "f1", "mcc")  # from confusion counts; f1 (of class 1) and mcc with two classes only
REPLICATES = 1000
Seed = int | Sequence[int]  # a numpy SeedSequence entropy: the same seed gives the same draws


def supports(metric: str, num_classes: int | None) -> bool:
    """Whether `metric` (accuracy, f1, mcc) can be bootstrapped for a task of `num_classes` classes."""
    if metric == "accuracy":
        return num_classes is not None and num_classes >= 2
    return metric in METRICS and num_classes == 2


@dataclass(frozen=True)
class Bootstrap:
    """A statistic on the data as observed, its multi-bootstrap SE and each seed sample's part of the variance."""

    estimate: float
    boot_se: float  # SD of the statistic over the replicates
    seed_parts: tuple[tuple[float, int], ...]  # per seed sample: (variance of its mean over the seeds seen, seeds)
    replicates: int

    @property
    def se(self) -> float:
        """The SE over new data and new seeds: the bootstrap's, with the seed variance its plug-in draw loses
        ((n-1)/n of a mean's) added back; nan with fewer than 2 seeds."""
        if not self.seed_parts or any(n < 2 for _, n in self.seed_parts):
            return float("nan")
        return math.sqrt(self.boot_se ** 2 + sum(v / n for v, n in self.seed_parts))

    def interval(self, level: float) -> tuple[float, float]:
        """Two-sided `level` interval: estimate +- the root-sum-of-squares of each part's own half-width, each seed
        part at Student's t with its n - 1 df, the examples' part (the rest of se^2) at z; nan where se is unknown."""
        se = self.se
        if not (se == se and self.estimate == self.estimate):
            return float("nan"), float("nan")
        tail = 0.5 + level / 2
        seeds = sum(stats.t.ppf(tail, n - 1) ** 2 * v for v, n in self.seed_parts)
        examples = max(se ** 2 - sum(v for v, _ in self.seed_parts), 0.0)
        half = math.sqrt(seeds + stats.norm.ppf(tail) ** 2 * examples)
        return self.estimate - half, self.estimate + half


NOT_AVAILABLE = Bootstrap(float("nan"), float("nan"), (), 0)


def example_counts(n_examples: int, replicates: int = REPLICATES, seed: Seed = 0) -> np.ndarray:
    """R x E multinomial counts: how often each example is drawn in each replicate (rows sum to E), float32."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_examples, np.full(n_examples, 1.0 / n_examples), size=replicates).astype(np.float32)


def seed_draws(n_seeds: int, replicates: int, seed: Seed) -> np.ndarray:
    """R x S indices of the seeds each replicate draws (with replacement)."""
    return np.random.default_rng(seed).integers(0, n_seeds, size=(replicates, n_seeds))


def metric_by_seed(metric: str, labels: np.ndarray, predictions: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """R x S: the metric of each seed's predictions (S x E class ids) on the examples of each row of `counts`
    (R x E weights; a row of ones is the data as observed), from weighted confusion counts."""
    labels, predictions = np.asarray(labels), np.atleast_2d(np.asarray(predictions))
    counts = np.atleast_2d(np.asarray(counts, dtype=np.float32))
    total = counts.sum(axis=1, keepdims=True).astype(np.float64)
    if metric == "accuracy":
        return (counts @ (predictions == labels).T.astype(np.float32)).astype(np.float64) / total
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r}: not one of {', '.join(METRICS)}")
    predicted = (predictions == 1).astype(np.float32)
    actual = (labels == 1).astype(np.float32)
    tp = (counts @ (predicted * actual).T).astype(np.float64)
    fp = (counts @ predicted.T).astype(np.float64) - tp
    fn = (counts @ actual).astype(np.float64)[:, None] - tp
    tn = total - tp - fp - fn
    if metric == "f1":  # 0 where there is no positive at all, as scikit-learn's zero_division=0
        num, den = 2 * tp, 2 * tp + fp + fn
    else:  # Matthews: 0 where a margin is empty, as scikit-learn
        num, den = tp * tn - fp * fn, np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def observed(metric: str, labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """The metric of each seed's predictions on every example once (S values)."""
    return metric_by_seed(metric, labels, predictions, np.ones((1, len(labels)), np.float32))[0]


def step_of(metric: str, n_examples: int) -> float | None:
    """The step a metric moves in on `n_examples` rows: 1/n for accuracy; None (unknown) for F1 and MCC."""
    return 1.0 / n_examples if metric == "accuracy" and n_examples else None


def _seed_part(values: np.ndarray, step: float | None, ties: float) -> tuple[float, int]:
    """(variance of the mean over these seeds, seeds), as the seed-only tests read it (`analysis.stats.spread`):
    round-off is 0; tied values are not certainty: at least the rounding error of the metric's step (step^2/12 for
    a value, step^2/6 for a difference), and nan (undetermined) where the step is not known."""
    n = len(values)
    if n < 2:
        return float("nan"), n
    var = float(np.var(values, ddof=1))
    var = 0.0 if math.sqrt(var) <= 1e-9 * max(1.0, float(np.max(np.abs(values)))) else var
    var = max(var, step * step / ties) if step else var
    return (var / n if var > 0 else float("nan")), n


def _drawn_mean(by_seed: np.ndarray, draws: np.ndarray) -> np.ndarray:
    return np.take_along_axis(by_seed, draws, axis=1).mean(axis=1)


def mean_from(by_seed: np.ndarray, seen: np.ndarray, seed: Seed = 0, step: float | None = None) -> Bootstrap:
    """One group's mean over seeds and examples: `by_seed` (R x S, from `metric_by_seed`), `seen` (S observed) and
    the metric's `step` (`step_of`)."""
    part = _seed_part(seen, step, 12.0)
    if by_seed.shape[1] < 2:
        return Bootstrap(float(np.mean(seen)), float("nan"), (part,), len(by_seed))
    stat = _drawn_mean(by_seed, seed_draws(by_seed.shape[1], len(by_seed), seed))
    return Bootstrap(float(np.mean(seen)), float(stat.std(ddof=1)), (part,), len(by_seed))


def difference_from(by_a: np.ndarray, by_b: np.ndarray, seen_a: np.ndarray, seen_b: np.ndarray, paired: bool,
                    seed: Seed = 0, step: float | None = None) -> Bootstrap:
    """a - b from each group's `by_seed` under the same example counts. paired: columns are the same seeds, drawn
    once for both; otherwise each group's seeds are drawn apart. `step`: the metric's (`step_of`)."""
    replicates = len(by_a)
    if paired:
        diff, seen = by_a - by_b, seen_a - seen_b
        part = _seed_part(seen, step, 6.0)
        if diff.shape[1] < 2:
            return Bootstrap(float(np.mean(seen)), float("nan"), (part,), replicates)
        stat = _drawn_mean(diff, seed_draws(diff.shape[1], replicates, seed))
        return Bootstrap(float(np.mean(seen)), float(stat.std(ddof=1)), (part,), replicates)
    parts = (_seed_part(seen_a, step, 12.0), _seed_part(seen_b, step, 12.0))
    estimate = float(np.mean(seen_a) - np.mean(seen_b))
    if min(by_a.shape[1], by_b.shape[1]) < 2:
        return Bootstrap(estimate, float("nan"), parts, replicates)
    base = _entropy(seed)
    stat = (_drawn_mean(by_a, seed_draws(by_a.shape[1], replicates, [*base, 0]))
            - _drawn_mean(by_b, seed_draws(by_b.shape[1], replicates, [*base, 1])))
    return Bootstrap(estimate, float(stat.std(ddof=1)), parts, replicates)


def group_mean(metric: str, labels: np.ndarray, predictions: np.ndarray, replicates: int = REPLICATES,
               seed: Seed = 0) -> Bootstrap:
    """A group's mean over its seeds (rows of `predictions`, S x E) and the examples; NOT_AVAILABLE for a metric
    that is not accuracy, F1 or MCC."""
    if metric not in METRICS:
        return NOT_AVAILABLE
    counts = example_counts(len(labels), replicates, [*_entropy(seed), 0])
    return mean_from(metric_by_seed(metric, labels, predictions, counts), observed(metric, labels, predictions),
                     [*_entropy(seed), 1], step_of(metric, len(labels)))


def difference(metric: str, labels: np.ndarray, predictions_a: np.ndarray, predictions_b: np.ndarray,
               paired: bool = True, replicates: int = REPLICATES, seed: Seed = 0) -> Bootstrap:
    """a - b: paired (row k of both is the same seed) or unpaired, examples resampled jointly for both;
    NOT_AVAILABLE for a metric that is not accuracy, F1 or MCC."""
    if metric not in METRICS:
        return NOT_AVAILABLE
    counts = example_counts(len(labels), replicates, [*_entropy(seed), 0])
    by = [metric_by_seed(metric, labels, p, counts) for p in (predictions_a, predictions_b)]
    seen = [observed(metric, labels, p) for p in (predictions_a, predictions_b)]
    return difference_from(*by, *seen, paired, [*_entropy(seed), 1], step_of(metric, len(labels)))


def _entropy(seed: Seed) -> list[int]:
    return [seed] if isinstance(seed, (int, np.integer)) else list(seed)
