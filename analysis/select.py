"""`report --select SETTING`: per placement, the setting value that wins on the selection split; the dev set then
reports only the chosen groups, so no choice was made on the numbers it shows (pure pandas)."""

from __future__ import annotations

import pandas as pd

from record.metrics import SELECTION, on_split

from .groups import axis_text, config_keys, group_labels


def selection_metric(metric: str) -> str:
    """The selection split's twin of a dev metric: val_accuracy -> sel_accuracy."""
    return on_split(SELECTION, metric)


def select_settings(good: pd.DataFrame, settings: list[str], higher_is_better: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the analysed trials of the chosen groups, relabelled; one row per placement and candidate value).

    `good` has `group`, `sel_value` (final selection metric) and `value` (final dev metric). A placement is a
    configuration with `settings` left out; the candidate with the best mean `sel_value` over its seeds wins.
    """
    placement = config_keys(good.drop(columns=settings))
    frame = good.assign(_placement=placement)
    rows = []
    for _, cands in frame.groupby("_placement", sort=False):
        means = cands.groupby("group").agg(sel_mean=("sel_value", "mean"), dev_mean=("value", "mean"),
                                           n=("value", "size"))
        best = means["sel_mean"].idxmax() if higher_is_better else means["sel_mean"].idxmin()
        first = cands.drop_duplicates("group").set_index("group")
        for group, m in means.iterrows():
            rows.append({"placement": first.at[group, "scenario"], "candidate": group,
                         **{s: _plain(first.at[group, s]) for s in settings}, "n": int(m["n"]),
                         "sel_mean": m["sel_mean"], "dev_mean": m["dev_mean"], "chosen": group == best})
    table = pd.DataFrame(rows)
    chosen = frame[frame["group"].isin(table.loc[table["chosen"], "candidate"])].drop(columns="_placement")
    labels = group_labels(chosen.drop(columns="group"))
    for s in settings:  # the chosen value stays visible in every table and figure
        labels = labels + " " + pd.Series([axis_text(s, v) for v in chosen[s]], index=chosen.index)
    renamed = dict(zip(chosen["group"], labels))
    table["reported_as"] = table["candidate"].map(renamed)
    return chosen.assign(group=labels), table


def _plain(value):
    return value.tolist() if hasattr(value, "tolist") else value
