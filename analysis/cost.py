"""What a study cost, measured: trial-hours, resource-hours (GPU or CPU, at each trial's `resources`) and money per
group and for the whole study, from trials.parquet (pure pandas; `plan --calibrate` projects the same figures)."""

from __future__ import annotations

import json
import math

import pandas as pd

from record.fields import TUNE


def resource_of(resources: object) -> tuple[str, float]:
    """("GPU", n) or ("CPU", n) from a trial's recorded `resources` ({"cpu": 4, "gpu": 1}); ("trial", 1) when
    the trial predates the record (its hours are then trial-hours)."""
    if isinstance(resources, str):
        resources = json.loads(resources) if resources else None
    if not isinstance(resources, dict):
        return "trial", 1.0
    if resources.get("gpu"):
        return "GPU", float(resources["gpu"])
    return "CPU", float(resources.get("cpu", 1) or 1)


def _hours(frame: pd.DataFrame) -> tuple[float, float, str]:
    """(trial-hours, resource-hours, resource kind) of some trials; kind "mixed" if they used different kinds."""
    seconds = frame["total_time_s"].fillna(0.0).astype(float)
    kinds = [resource_of(r) for r in frame.get("resources", pd.Series([None] * len(frame), index=frame.index))]
    names = {k for k, _ in kinds}
    resource_s = sum(s * amount for s, (_, amount) in zip(seconds, kinds))
    return float(seconds.sum()) / 3600, resource_s / 3600, names.pop() if len(names) == 1 else "mixed"


def group_costs(good: pd.DataFrame, summary: pd.DataFrame, price: float | None) -> pd.DataFrame:
    """Per group, in the summary's order: trials, trial-hours, resource-hours and money at `price` per resource-hour.
    No "metric per resource-hour": a mean accuracy divided by hours is a rate of nothing (a fast classifier-only run
    would top it); the headline prices each verdict instead."""
    rows = []
    for group, g in good.groupby("group", sort=False):
        trial_h, resource_h, kind = _hours(g)
        rows.append({"group": group, "trials": len(g), "trial_hours": trial_h, "resource": kind,
                     "resource_hours": resource_h, "cost": resource_h * price if price is not None else math.nan})
    out = pd.DataFrame(rows, columns=["group", "trials", "trial_hours", "resource", "resource_hours", "cost"])
    order = {g: i for i, g in enumerate(summary["group"])} if not summary.empty else {}
    return out.sort_values("group", key=lambda s: s.map(order)).reset_index(drop=True)


def study_cost(trials: pd.DataFrame, good: pd.DataFrame, price: float | None) -> dict:
    """The whole study's bill: every trial that ran (usable or not), and how much of it went to runs left out."""
    trial_h, resource_h, kind = _hours(trials)
    tuning = trials["stage"].eq(TUNE) if "stage" in trials else pd.Series(False, index=trials.index)
    _, tuned_h, _ = _hours(trials[tuning])
    _, wasted_h, _ = _hours(trials[~tuning].drop(good.index.intersection(trials.index), errors="ignore"))
    return {"trials": len(trials), "trial_hours": trial_h, "resource_hours": resource_h, "resource": kind,
            "cost": resource_h * price if price is not None else None, "left_out_resource_hours": wasted_h,
            "tuned": int(tuning.sum()), "tuning_resource_hours": tuned_h, "price": price}


def cost_sentence(bill: dict) -> str:
    """One line for the headline: what this answer cost."""
    unit = {"trial": "trial-hours (no resources recorded)", "mixed": "resource-hours (mixed GPU/CPU)"}.get(
        bill["resource"], f"{bill['resource']}-hours")
    text = f"This answer cost {bill['resource_hours']:.3g} {unit} over {bill['trials']} trials"
    if bill["resource"] not in ("trial",):
        text += f" ({bill['trial_hours']:.3g} trial-hours)"
    if bill["cost"] is not None:
        amount = f"{bill['cost']:,.2f}" if bill["cost"] >= 1 else f"{bill['cost']:.3g}"
        text += f", {amount} at {bill['price']:g} per {bill['resource']}-hour"
    if bill.get("tuned"):
        text += (f"; {bill['tuning_resource_hours']:.3g} of those hours went to the tuning stage "
                 f"({bill['tuned']} trials)")
    if bill["left_out_resource_hours"] > 0:
        text += f"; {bill['left_out_resource_hours']:.3g} of those hours went to runs left out"
    return text + "."
