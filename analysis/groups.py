"""What a group is: one configuration (everything that decides what a trial computes, seed aside).

Names are labels, not identity: two scenarios that share a name but differ in model, data, placement, rank or any
training setting are two groups, and one configuration run in several experiments (final.yaml's `lora_all r=8` and
rank.yaml's) is one group whose identical (configuration, seed) runs are counted once.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from record import fields
from record.outcome import TERMINATED

# What a trial computes (its fields' roles say which), plus config keys the schema does not know and the
# compute_dtype that `precision: auto` became on the machine (bf16 or fp32).
CONFIGURATION = [*fields.CONFIGURATION, "config_extra", "compute_dtype"]
LABEL_AXES = fields.LABEL_ORDER  # label parts tried in this order until every group's label is unique


def _canonical(value) -> str:
    """A hashable, order-stable text of one config value (lists arrive from Parquet as numpy arrays)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, float) and value != value:
        value = None
    if value is pd.NA or value is pd.NaT:
        value = None
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        value = value.item()
    return json.dumps(value, sort_keys=True, default=str)


def config_keys(trials: pd.DataFrame) -> pd.Series:
    """One text key per row: the canonical JSON of its configuration columns."""
    cols = [c for c in CONFIGURATION if c in trials.columns]
    if trials.empty:
        return pd.Series([], dtype=str, index=trials.index)
    parts = [trials[c].map(_canonical) for c in cols]
    return pd.Series(["|".join(row) for row in zip(*parts)], index=trials.index, dtype=str)


def usable_mask(trials: pd.DataFrame) -> pd.Series:
    """Runs a comparison may use: finished, with a finite value, no flagged problem, not diverged."""
    ok = trials["status"].eq(TERMINATED) & np.isfinite(trials["value"].astype(float))
    if "problem" in trials:
        ok &= trials["problem"].isna()
    if "diverged" in trials:
        ok &= ~trials["diverged"].fillna(False).astype(bool)
    return ok


def drop_duplicate_runs(trials: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep the first usable run of identical (configuration, seed) runs across experiments; return (trials, number
    dropped). Only usable runs (`usable_mask`) count as copies: a diverged, errored or flagged run never hides a good
    duplicate, and stays listed as what it is. `trials` needs `value` (the metric compared)."""
    keyed = trials.assign(config_key=config_keys(trials))
    unusable = ~usable_mask(keyed)
    order = keyed.assign(_unusable=unusable).sort_values(["_unusable", "experiment", "trial_id"], kind="stable")
    dup = order.duplicated(["config_key", "seed"], keep="first") & ~order["_unusable"]
    kept = order[~dup].drop(columns="_unusable").sort_index()
    return kept, int(dup.sum())


def strata_keys(trials: pd.DataFrame) -> pd.DataFrame:
    """model_key and data_key per row: seeds are shared blocks only within one model on one data set and task.
    compare_key: what groups are compared within, the data set and, for ranks chosen for a parameter budget, that
    budget (placements at equal cost are compared with each other, not across budgets; the baselines, which have
    no budget, with each other)."""
    def key(cols: tuple[str, ...]) -> pd.Series:
        present = [c for c in cols if c in trials.columns]
        if not present or trials.empty:
            return pd.Series("", index=trials.index, dtype=str)
        return pd.Series(["|".join(r) for r in zip(*(trials[c].map(_canonical) for c in present))], index=trials.index)
    data_key = key(("dataset", "task", "eval_split", "text_columns", "label_column"))
    budget = trials["budget"] if "budget" in trials else pd.Series(None, index=trials.index, dtype=object)
    budget_text = budget.map(lambda b: "" if b is None or b != b else f"|budget={int(b)}")
    return pd.DataFrame({"model_key": key(("model", "model_init")), "data_key": data_key,
                         "compare_key": data_key + budget_text.astype(str)}, index=trials.index)


def has_budgets(frame: pd.DataFrame) -> bool:
    """Whether some group's ranks were chosen for a parameter budget (`lora.budgets`)."""
    return "budget" in frame and bool(frame["budget"].notna().any())


def axis_text(col: str, value) -> str:
    """`r=8`, `lr=0.001`, `bs=32`: a setting as it appears in a group label (its short name from record.fields)."""
    if col == "r":
        return f"r={int(value)}" if value == value and value is not None else ""
    if col == "budget":
        return f"b={fields.count_text(int(value))}" if value == value and value is not None else ""
    return f"{fields.short(col)}={_canonical(value).strip(chr(34))}"


def group_labels(trials: pd.DataFrame) -> pd.Series:
    """Readable, unique label per configuration: its scenario name(s) (with `r=R` for LoRA, or `b=332k` for ranks
    chosen for a parameter budget), then only the settings that tell same-named groups apart (`upper r=8
    lr=0.001`), then the experiment name where nothing else does."""
    if trials.empty:
        return pd.Series([], dtype=str, index=trials.index)
    keys = trials["config_key"] if "config_key" in trials else config_keys(trials)
    keyed = trials.assign(config_key=keys)
    firsts = keyed.drop_duplicates("config_key").set_index("config_key")
    names = keyed.groupby("config_key", sort=False)["scenario"].agg(lambda s: "=".join(sorted(set(map(str, s)))))
    labels = {}
    for key, row in firsts.iterrows():
        lora = row.get("baseline") is None or row.get("baseline") != row.get("baseline")
        r, budget = row.get("r"), row.get("budget")
        if lora and budget == budget and budget is not None:
            labels[key] = names[key] + " " + axis_text("budget", budget)
        else:
            labels[key] = names[key] + (" " + axis_text("r", r) if lora and r == r and r is not None else "")
    axes = [*LABEL_AXES[1:], *(c for c in CONFIGURATION if c not in LABEL_AXES), "experiment"]
    for col in (c for c in axes if c in firsts.columns):
        by_label: dict[str, list[str]] = {}
        for key, label in labels.items():
            by_label.setdefault(label, []).append(key)
        for same in (ks for ks in by_label.values() if len(ks) > 1):
            if len({_canonical(firsts.at[k, col]) for k in same}) > 1:
                for k in same:
                    v = firsts.at[k, col]
                    labels[k] += f" [{v}]" if col == "experiment" else " " + axis_text(col, v)
    return keys.map(labels)
