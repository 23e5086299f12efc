"""`report --select SETTING`: per placement, the setting value that wins on the selection split; the dev set then
reports only the chosen groups, so no choice was made on the numbers it shows (pure pandas)."""

from __future__ import annotations

import pandas as pd

from record.fields import CONFIRM, TUNE
from record.metrics import SELECTION, on_split
from record.outcome import STOPPED, TERMINATED

from .groups import axis_text, config_keys, group_labels


def selection_metric(metric: str) -> str:
    """The selection split's twin of a dev metric: val_accuracy -> sel_accuracy."""
    return on_split(SELECTION, metric)


def select_settings(good: pd.DataFrame, settings: list[str],
                    higher_is_better: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
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


def staged_settings(trials: pd.DataFrame) -> tuple[str, ...]:
    """The settings a study's tune stage chose per placement (`select:` in its spec), from the trials' records;
    () for studies without stages."""
    if "stage" not in trials or "selected" not in trials:
        return ()
    out: list[str] = []
    for value in trials.loc[trials["stage"].eq(TUNE), "selected"].dropna():
        out += [s for s in _plain(value) if s not in out]
    return tuple(out)


def tuned_and_confirmed(prepared: pd.DataFrame, good: pd.DataFrame,
                        settings: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the usable trials compared on dev: every trial but the tune stage's; one row per placement and candidate).

    `prepared` (every trial, with `group`, `value` and `sel_value`) gives each candidate's tune seeds: how many,
    how many the early stopping ended and at which epoch, and the mean final selection metric of those that ran to
    the end. The chosen candidate is the one the study confirmed (its confirm-stage trials exist), as the sweep's
    searcher chose it, never re-derived here.
    """
    tuned = prepared[prepared["stage"].eq(TUNE)]
    confirmed = prepared[prepared["stage"].eq(CONFIRM)]
    placement = config_keys(prepared.drop(columns=settings))
    rows = []
    for key, cands in tuned.groupby(placement[tuned.index], sort=False):
        chosen = set(confirmed.loc[placement[confirmed.index] == key, "group"])
        for group, seeds in cands.groupby("group", sort=False):
            diverged = seeds["diverged"].fillna(False).astype(bool) if "diverged" in seeds else False
            ran = seeds[seeds["status"].eq(TERMINATED) & ~diverged]  # what the searcher's choice averaged
            stopped = seeds[seeds["status"].eq(STOPPED)]
            first = seeds.iloc[0]
            rows.append({"placement": first["scenario"] + (f" r={int(first['r'])}" if first["r"] == first["r"]
                                                           and first["r"] is not None else ""),
                         "candidate": group, **{s: _plain(first[s]) for s in settings}, "n": len(seeds),
                         "stopped_early": ", ".join(f"epoch {int(e)}" for e in stopped["stopped_at_epoch"])
                         if "stopped_at_epoch" in stopped else "",
                         "sel_mean": ran["sel_value"].mean(), "dev_mean": ran["value"].mean(),
                         # a candidate with a stopped seed ranks below those whose seeds all ran (as chosen)
                         "ran_to_the_end": f"{len(ran)} of {len(seeds)}", "chosen": group in chosen})
    table = pd.DataFrame(rows, columns=["placement", "candidate", *settings, "n", "ran_to_the_end", "stopped_early",
                                        "sel_mean", "dev_mean", "chosen"])
    table["reported_as"] = table["candidate"].where(table["chosen"], "")
    return good[good["stage"].ne(TUNE)], table


def _plain(value):
    return value.tolist() if hasattr(value, "tolist") else value
