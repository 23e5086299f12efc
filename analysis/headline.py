"""The answer first: a few plain sentences per data set (the best group, what is distinguishable from it and what
is not, what more seeds would settle) and the verdict matrix, both read off the comparisons table (pure pandas)."""

from __future__ import annotations

import pandas as pd

from .compare import MODERATED_MIN_SEEDS, SETTLE_LIMIT, reversed_verdict
from .groups import has_budgets


def _relative(comparisons: pd.DataFrame, focal: str) -> dict[str, pd.Series]:
    """other group -> its comparison row, with the verdict read as "other vs focal"."""
    out = {}
    for _, row in comparisons.iterrows():
        if focal not in (row["a"], row["b"]):
            continue
        other, v = (row["b"], reversed_verdict(row["verdict"])) if row["a"] == focal else (row["a"], row["verdict"])
        out[other] = row.copy()
        out[other]["verdict"] = v
        out[other]["delta"] = row["delta"] if row["a"] == other else -row["delta"]
        out[other]["turned"] = row["a"] == focal
    return out


def _shadowed(row: pd.Series) -> bool:
    """Whether the moderated test, not used at these seeds, would have decided this open comparison."""
    shadow = row.get("moderated_verdict")
    return isinstance(shadow, str) and shadow not in ("inconclusive", "undetermined")


def _relative_verdict(row: pd.Series) -> str:
    """The moderated test's verdict of a row that `_relative` turned round (other vs focal)."""
    return reversed_verdict(row["moderated_verdict"]) if row["turned"] else row["moderated_verdict"]


def _names(rows: dict[str, pd.Series], verdicts: tuple[str, ...], with_delta: bool = True) -> str:
    picked = [(g, r) for g, r in rows.items() if r["verdict"] in verdicts]
    return ", ".join(f"{g} ({r['delta']:+.4f})" if with_delta else g for g, r in picked)


def _interval(row: pd.Series) -> str:
    if row["ci95_low"] == row["ci95_low"]:
        return f"95 % CI {row['ci95_low']:.4f} to {row['ci95_high']:.4f}"
    return "no interval: its spread cannot be estimated"


PRICE = (("trainable_params", "trainable parameters"), ("train_samples_per_s", "samples/s"))
# Memory: the first of these both groups have, by the report's rule (GPU peaks where measured, else the exact
# figures); never CPU process RSS growth, whose order depends on which trial a reused worker ran first.
MEMORY_PRICE = (("gpu_allocated_mb", "GPU peak memory"), ("saved_activations_mb", "saved activations"),
                ("peak_memory_mb", "peak memory"))  # the last: summaries that name no memory kind (older callers)


def _ratio_of(by_group: pd.DataFrame, g: str, focal: str, col: str) -> bool:
    return col in by_group and by_group.at[focal, col] > 0 and by_group.at[g, col] == by_group.at[g, col]


def _price(by_group: pd.DataFrame, focal: str, others: list[str]) -> str:
    """What each group costs against the focal one: ratios of its trainable parameters, speed and memory."""
    parts = []
    for g in others:
        memory = next(((c, n) for c, n in MEMORY_PRICE if _ratio_of(by_group, g, focal, c)), None)
        ratios = [f"×{by_group.at[g, col] / by_group.at[focal, col]:.2f} {name}"
                  for col, name in (*PRICE, *([memory] if memory else [])) if _ratio_of(by_group, g, focal, col)]
        if ratios:
            parts.append(f"{g} {', '.join(ratios)}")
    return "; ".join(parts)


FAR = 5.0  # a gap this many times the larger group's seed spread is never "merely not distinguishable"


def _gap(row: pd.Series, by_group: pd.DataFrame, focal: str) -> float:
    """|Δ| in units of the larger of the two groups' seed spreads (nan where a spread is unknown)."""
    spread = max(by_group.at[row["a"], "std"], by_group.at[row["b"], "std"])
    return abs(row["delta"]) / spread if spread > 0 else float("nan")


def _round(seeds: int, groups: list[str], by_group: pd.DataFrame, costs: pd.DataFrame | None) -> str:
    """"adding 7 trials, about 1.2 trial-hours (3.40 at the price given)": what bringing `groups` to `seeds` seeds
    each costs, from each group's measured hours per trial."""
    adds = {g: max(seeds - int(by_group.at[g, "n"]), 0) for g in groups}
    trials = sum(adds.values())
    text = f"{trials} more trial(s)"
    if costs is None or costs.empty or not trials:
        return text
    per = costs.set_index("group")
    hours = sum(k * per.at[g, "trial_hours"] / per.at[g, "trials"] for g, k in adds.items() if g in per.index)
    money = sum(k * per.at[g, "cost"] / per.at[g, "trials"] for g, k in adds.items() if g in per.index)
    if hours > 0:
        text += f", about {hours:.2g} trial-hours"
    return text + (f" ({money:,.2f} at the price given)" if money == money and money > 0 else "")


def _plan(open_: dict[str, pd.Series], by_group: pd.DataFrame, focal: str, costs: pd.DataFrame | None) -> str:
    """Which seeds to add to settle the open comparisons, and what they cost; or why no number of seeds will."""
    settle = [r["seeds_to_settle"] for r in open_.values()]
    detect = [r["seeds_to_detect"] for r in open_.values()]
    it = "it" if len(open_) == 1 else "them"
    groups = [focal, *open_]
    if all(pd.notna(x) for x in settle):
        k = int(max(settle))
        text = (f"Bringing {', '.join(groups)} to {k} seeds each ({_round(k, groups, by_group, costs)}) would settle "
                f"{it} either way (80 % chance of a verdict)")
        if all(pd.notna(x) for x in detect) and max(detect) < k:
            text += f"; {int(max(detect))} would detect differences as large as these, if they are real"
        return text + "."
    if all(pd.notna(x) for x in detect):
        k = int(max(detect))
        return (f"Settling {it} either way would take more than {SETTLE_LIMIT} seeds per group, but {k} each "
                f"({_round(k, groups, by_group, costs)}) would detect differences as large as these, if they are "
                "real.")
    return (f"Settling {it} either way would take more than {SETTLE_LIMIT} seeds per group: the differences are far "
            f"smaller than the seed-to-seed spread, so for practical purposes {it} tie with {focal} (a wider --margin "
            "would let the report say equivalent).")


def _far_sentence(far: dict[str, pd.Series], by_group: pd.DataFrame, focal: str, costs: pd.DataFrame | None) -> str:
    """Gaps far larger than both groups' spreads that the test still cannot call: why, and what settles them."""
    rows = list(far.values())
    gaps = ", ".join(f"{g} ({r['delta']:+.4f}, {_gap(r, by_group, focal):.0f}x)" for g, r in far.items())
    df = sorted({f"{r['df']:.0f}" for r in rows})
    text = (f"Far from {focal}, yet not decidable with {int(min(r['n_seeds'] for r in rows))} seed(s): "
            f"{gaps} (gap, and "
            f"how many times the larger of the two groups' seed spreads it is): each pair's interval rests on its "
            f"own spread with {'/'.join(df)} df, which so few seeds cannot bound")
    shadows = [_relative_verdict(r) for r in rows if _shadowed(r)]
    if shadows:
        kinds = sorted(set(shadows))
        text += (f"; the moderated test, valid from {MODERATED_MIN_SEEDS} seeds, already calls "
                 f"{'them' if len(shadows) > 1 else 'it'} {' or '.join(kinds)} (not a claim)")
    plans = [r["seeds_to_detect"] if pd.notna(r["seeds_to_detect"]) else r["seeds_to_settle"] for r in rows]
    if all(pd.notna(k) for k in plans):
        k = int(max(plans))
        groups = [focal, *far]
        text += (f". {k} seeds each for {', '.join(groups)} ({_round(k, groups, by_group, costs)}) would very likely "
                 f"settle {'them' if len(far) > 1 else 'it'}")
    return text + "."


def headline(summary: pd.DataFrame, comparisons: pd.DataFrame, metric: str, margin: float,
             reference: str | None, costs: pd.DataFrame | None = None) -> list[str]:
    """Plain sentences per comparison stratum (data set, task, eval split): the focal group (the reference, else the
    best mean) and every other group's verdict against it, grouped, with what more seeds would settle and cost
    (`costs`: analysis.cost.group_costs); empty when there is nothing to say."""
    lines: list[str] = []
    if summary.empty:
        return lines
    key = "compare_key" if "compare_key" in summary and reference not in set(summary["group"]) else "data_key"
    several = summary["data_key"].nunique() > 1
    budgets = key == "compare_key" and has_budgets(summary)
    for _, part in summary.groupby(key, sort=False, dropna=False):
        dataset = part["dataset"].iloc[0]
        by_group = part.set_index("group")
        focal = reference if reference in by_group.index else part["group"].iloc[0]  # summary: best mean first
        focal_row = by_group.loc[focal]
        where = f" on {dataset}" if several else ""
        if budgets:
            budget = part["budget"].iloc[0]
            where += " without a budget" if pd.isna(budget) else f" at {int(budget):,} adapter parameters"
        role = "Reference" if focal == reference else "Best mean"
        lines.append(f"{role}{where}: {focal}, {metric} {focal_row['mean']:.4f} over {int(focal_row['n'])} seed(s) "
                     f"({_interval(focal_row)}).")
        rows = _relative(comparisons, focal) if not comparisons.empty else {}
        if not rows:
            if len(part) > 1:
                lines.append(f"Nothing else was compared with {focal}.")
            continue
        said = [
            (("better",), f"Better than {focal}: {{}}."),
            (("worse",), f"Worse than {focal}: {{}}."),
            (("better, within margin", "worse, within margin"),
             f"Different from {focal}, but by less than the ±{margin:g} margin: {{}}."),
            (("equivalent",), f"Equivalent to {focal} (within ±{margin:g}): {{}}."),
        ]
        for verdicts, text in said:
            names = _names(rows, verdicts)
            if names:
                lines.append(text.format(names))
        priced = [g for g, r in rows.items() if r["verdict"] in ("better", "equivalent", "better, within margin",
                                                                 "worse, within margin")]
        price = _price(by_group, focal, priced)
        if price:
            lines.append(f"What they cost against {focal} (median per trial): {price}.")
        open_ = {g: r for g, r in rows.items() if r["verdict"] == "inconclusive"}
        far = {g: r for g, r in open_.items() if _gap(r, by_group, focal) >= FAR}
        near = {g: r for g, r in open_.items() if g not in far}
        if near:
            lines.append(f"Not distinguishable from {focal} yet: {_names(near, ('inconclusive',))}. "
                         + _plan(near, by_group, focal, costs))
        if far:
            lines.append(_far_sentence(far, by_group, focal, costs))
        shadow = [(g, r) for g, r in near.items() if _shadowed(r)]
        if shadow:
            lines.append(f"Of the open comparisons with {focal}, the moderated test would decide on these seeds: "
                         + ", ".join(f"{g} ({_relative_verdict(r)})" for g, r in shadow)
                         + f". Not claims: below {MODERATED_MIN_SEEDS} shared seeds its error rate is not measured;"
                           " from there on it is the report's test.")
        undetermined = _names(rows, ("undetermined",), with_delta=False)
        if undetermined:
            lines.append(f"Cannot be tested against {focal} (no estimable spread: one run, or tied values of a metric "
                         f"whose step is unknown): {undetermined}.")
    return lines


def verdict_matrix(order: list[str], comparisons: pd.DataFrame) -> pd.DataFrame:
    """groups x groups: the verdict of the row group against the column group ("" where not compared)."""
    matrix = pd.DataFrame("", index=order, columns=order, dtype=object)
    for g in order:
        matrix.at[g, g] = "self"
    for _, row in comparisons.iterrows():
        if row["a"] in matrix.index and row["b"] in matrix.index:
            matrix.at[row["a"], row["b"]] = row["verdict"]
            matrix.at[row["b"], row["a"]] = reversed_verdict(row["verdict"])
    compared = [g for g in order if (matrix.loc[g] != "").sum() > 1 or (matrix[g] != "").sum() > 1]
    return matrix.loc[compared, compared] if len(compared) > 1 else matrix.iloc[0:0, 0:0]
