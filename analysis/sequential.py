"""Seeds to a decision (`repeats: {min, max, until: decided}`): after each round of seeds, only the groups whose
comparison with the best group is still open get one more seed (pure; the sweep's searcher and bench/evidence.py
both call `rounds`).

The rule looks at most L = max - min + 1 times (after min seeds, then after each added seed), and every look is
the report's own comparison at level alpha / L: a Bonferroni split of alpha over the planned looks, so the chance of
any false claim at any look, the report's final one included, stays <= alpha whatever the rule stopped on. The
report reads the same L from each trial's `looks` and tests at alpha / L. Each look sees exactly seeds 0..n-1 of
every group, all finished: the design is the same under any concurrency, completion order or resume.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from record.metrics import higher_is_better

from .compare import DEFAULT_MARGIN, DEFAULT_TEST, compare

PENDING = object()  # `value_of` for a run that has not finished yet
OPEN = ("inconclusive", "undetermined")


@dataclass(frozen=True)
class Arm:
    """One group under the rule: its seeds in run order (up to its max), how many it always runs, and whether it
    may get more (a fixed-repeat group takes part in the comparisons but never grows)."""

    group: str
    seeds: tuple
    min: int
    grows: bool = True


def open_groups(values: pd.DataFrame, metric: str, alpha: float, looks: int, reference: str | None = None,
                margin: float = DEFAULT_MARGIN, test: str = DEFAULT_TEST) -> set[str]:
    """Groups in a comparison with the focal group (`reference`, else the best mean) that the report's test at
    `alpha` over `looks` leaves open (inconclusive, or no spread yet), and the focal group itself when any is open.
    The family is the report's (all pairs, or all against the reference), so "decided" here is decided there."""
    if values["group"].nunique() < 2:
        return set()
    res, _ = compare(values, metric, reference=reference, margin=margin, alpha=alpha, test=test, plans=False,
                     looks=looks)
    if res.empty:
        return set()
    means = values.groupby("group")["value"].mean()
    focal = reference if reference in means.index else (means.idxmax() if higher_is_better(metric) else means.idxmin())
    mine = res[(res["a"] == focal) | (res["b"] == focal)]
    still = mine[mine["verdict"].isin(OPEN)]
    return set(still["a"]) | set(still["b"])


def rounds(arms: Sequence[Arm], value_of: Callable[[str, object], object], metric: str, alpha: float, looks: int,
           reference: str | None = None, resolution: float | None = None, test: str = DEFAULT_TEST) -> dict[str, int]:
    """Seeds each group needs as far as the finished runs tell: min, plus one per look at which it was still open,
    up to min + looks - 1. `value_of(group, seed)`: the run's final metric, None (diverged: left out) or PENDING.
    A look waits until every run it would read has finished."""
    counts = {a.group: a.min for a in arms}
    for _ in range(looks - 1):
        rows = []
        for a in arms:
            for seed in a.seeds[:counts[a.group]]:
                v = value_of(a.group, seed)
                if v is PENDING:
                    return counts
                if v is not None:
                    rows.append((a.group, seed, float(v)))
        values = pd.DataFrame(rows, columns=["group", "seed", "value"]).assign(resolution=resolution or np.nan)
        still = open_groups(values, metric, alpha, looks, reference, test=test)
        grow = [a for a in arms if a.grows and a.group in still
                and counts[a.group] < min(len(a.seeds), a.min + looks - 1)]
        if not grow:
            break
        for a in grow:
            counts[a.group] += 1
    return counts


__all__ = ["Arm", "OPEN", "PENDING", "open_groups", "rounds"]
