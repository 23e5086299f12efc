"""The answer first: a few plain sentences per data set (the best group, what is distinguishable from it and what
is not, what more seeds would settle) and the verdict matrix, both read off the comparisons table (pure pandas)."""

from __future__ import annotations

import pandas as pd

from .compare import SETTLE_LIMIT, reversed_verdict


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
    return out


def _names(rows: dict[str, pd.Series], verdicts: tuple[str, ...], with_delta: bool = True) -> str:
    picked = [(g, r) for g, r in rows.items() if r["verdict"] in verdicts]
    return ", ".join(f"{g} ({r['delta']:+.4f})" if with_delta else g for g, r in picked)


def _interval(row: pd.Series) -> str:
    if row["ci95_low"] == row["ci95_low"]:
        return f"95 % CI {row['ci95_low']:.4f} to {row['ci95_high']:.4f}"
    return "no interval: its spread cannot be estimated"


PRICE = (("trainable_params", "trainable parameters"), ("train_samples_per_s", "samples/s"),
         ("peak_memory_mb", "peak memory"))


def _price(by_group: pd.DataFrame, focal: str, others: list[str]) -> str:
    """What each group costs against the focal one: ratios of its trainable parameters, speed and memory."""
    parts = []
    for g in others:
        ratios = [f"×{by_group.at[g, col] / by_group.at[focal, col]:.2f} {name}" for col, name in PRICE
                  if col in by_group and by_group.at[focal, col] > 0 and by_group.at[g, col] == by_group.at[g, col]]
        if ratios:
            parts.append(f"{g} {', '.join(ratios)}")
    return "; ".join(parts)


def headline(summary: pd.DataFrame, comparisons: pd.DataFrame, metric: str, margin: float,
             reference: str | None) -> list[str]:
    """Plain sentences per comparison stratum (data set, task, eval split): the focal group (the reference, else the
    best mean) and every other group's verdict against it, grouped; empty when there is nothing to say."""
    lines: list[str] = []
    if summary.empty:
        return lines
    several = summary["data_key"].nunique() > 1
    for _, part in summary.groupby("data_key", sort=False, dropna=False):
        dataset = part["dataset"].iloc[0]
        by_group = part.set_index("group")
        focal = reference if reference in by_group.index else part["group"].iloc[0]  # summary: best mean first
        focal_row = by_group.loc[focal]
        where = f" on {dataset}" if several else ""
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
        open_ = [(g, r) for g, r in rows.items() if r["verdict"] == "inconclusive"]
        if open_:
            settle = [int(r["seeds_to_settle"]) for _, r in open_ if pd.notna(r.get("seeds_to_settle"))]
            detect = [int(r["seeds_to_detect"]) for _, r in open_ if pd.notna(r.get("seeds_to_detect"))]
            it = "it" if len(open_) == 1 else "them"
            more = (f" About {max(settle)} seeds per group would settle {it} (80 % chance of a verdict either way)"
                    if len(settle) == len(open_) else f" Settling {it} either way would take more than {SETTLE_LIMIT} seeds")
            if detect and len(detect) == len(open_) and (len(settle) < len(open_) or max(detect) < max(settle)):
                more += (f"; about {max(detect)} would detect differences as large as these, if they are real")
            more += "."
            lines.append(f"Not distinguishable from {focal} yet: {_names(rows, ('inconclusive',))}.{more}")
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
