"""The dev set's own sampling error in the report: per group and per comparison, the multi-bootstrap over the dev
examples and the seeds (`analysis.bootstrap`) from predictions.parquet, beside the seed-only figures.

Runs are matched to their predictions by (experiment, trial_id). A group gets figures only when every one of its runs
has predictions of the same eval split (same examples, same labels): otherwise its seeds would not be the ones the
seed-only figures use. The examples are drawn once per data set (the same counts for every group on it), so the pairs
of a comparison are resampled jointly, and each group's replicates are computed once, not once per pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from record import metrics

from . import bootstrap

PAIR_COLUMNS = ("data_delta", "data_se", "data_ci_low", "data_ci_high")


@dataclass(frozen=True)
class GroupDraws:
    """One group's predictions under its data set's example counts: seeds in order, R x S replicates, S observed."""

    data_key: str
    seeds: np.ndarray
    by_seed: np.ndarray
    seen: np.ndarray
    step: float | None  # the metric's step on these examples (1/E for accuracy), as the seed-only tests floor ties


def trial_slices(predictions: pa.Table) -> dict[tuple[str, str], slice]:
    """(experiment, trial_id) -> its rows of predictions.parquet (`analyze` writes each trial's rows together; {}
    when they are not). Works on the key columns' dictionary indices chunk by chunk, never on 8.7M strings."""
    exp, tid = predictions.column("experiment"), predictions.column("trial_id")
    if [len(c) for c in exp.chunks] != [len(c) for c in tid.chunks]:
        exp, tid = exp.combine_chunks(), tid.combine_chunks()
        exp, tid = pa.chunked_array([exp]), pa.chunked_array([tid])
    runs: list[list] = []  # [name, start, stop] of each run of rows with one key, in order
    offset = 0
    for e, t in zip(exp.chunks, tid.chunks):
        if not pa.types.is_dictionary(e.type):
            e, t = e.dictionary_encode(), t.dictionary_encode()
        ei, ti = (a.indices.to_numpy(zero_copy_only=False).astype(np.int64) for a in (e, t))
        key = ei * (len(t.dictionary) + 1) + ti
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, np.int64)
        stops = np.r_[starts[1:], len(key)]
        names = zip(e.dictionary.take(pa.array(ei[starts])).to_pylist(),
                    t.dictionary.take(pa.array(ti[starts])).to_pylist())
        for name, start, stop in zip(names, starts, stops):
            if runs and runs[-1][0] == name and runs[-1][2] == offset + start:  # a trial across two chunks
                runs[-1][2] = offset + int(stop)
            else:
                runs.append([name, offset + int(start), offset + int(stop)])
        offset += len(key)
    out = {name: slice(start, stop) for name, start, stop in runs}
    return out if len(out) == len(runs) else {}


def _group_matrix(runs: pd.DataFrame, slices: dict, example, label, prediction):
    """(seeds, labels, S x E predictions) of one group's runs, or None unless every run has the same examples."""
    parts = []
    for exp, tid, seed in zip(runs["experiment"], runs["trial_id"], runs["seed"]):
        rows = slices.get((str(exp), str(tid)))
        if rows is None:
            return None
        parts.append((seed, rows))
    parts.sort(key=lambda p: p[0])
    first = parts[0][1]
    n = first.stop - first.start
    if any(rows.stop - rows.start != n for _, rows in parts) or not np.array_equal(example[first], np.arange(n)):
        return None
    labels = label[first]
    if any(not np.array_equal(label[rows], labels) or not np.array_equal(example[rows], example[first])
           for _, rows in parts[1:]):
        return None
    return np.array([s for s, _ in parts]), labels, np.stack([prediction[rows] for _, rows in parts])


def _classes(runs: pd.DataFrame, labels: np.ndarray, preds: np.ndarray) -> int:
    named = runs["num_labels"].dropna() if "num_labels" in runs else pd.Series(dtype=float)
    return int(named.iloc[0]) if len(named) else int(max(labels.max(initial=0), preds.max(initial=0))) + 1


def group_draws(good: pd.DataFrame, predictions: pa.Table, metric: str, replicates: int = bootstrap.REPLICATES,
                seed: int = 0) -> dict[str, GroupDraws]:
    """Per group whose runs all have predictions and whose metric can be bootstrapped: its replicates."""
    name = metrics.metric_of(metric).name if metrics.metric_of(metric) else ""
    if not metric.startswith(metrics.DEV) or name not in bootstrap.METRICS or predictions.num_rows == 0:
        return {}  # predictions are of the dev split only
    slices = trial_slices(predictions)
    example, label, prediction = (predictions.column(c).to_numpy() for c in ("example", "label", "prediction"))
    counts: dict[tuple[str, int], np.ndarray] = {}  # (data set, examples) -> R x E, shared by its groups
    out = {}
    for group, runs in good.groupby("group", sort=True):
        found = _group_matrix(runs, slices, example, label, prediction)
        if found is None:
            continue
        seeds, labels, preds = found
        if not bootstrap.supports(name, _classes(runs, labels, preds)):
            continue
        key = (str(runs["data_key"].iloc[0]), len(labels))
        if key not in counts:
            counts[key] = bootstrap.example_counts(len(labels), replicates, [seed, len(counts)])
        out[group] = GroupDraws(key[0], seeds, bootstrap.metric_by_seed(name, labels, preds, counts[key]),
                                bootstrap.observed(name, labels, preds), bootstrap.step_of(name, len(labels)))
    return out


def with_dev_error(summary: pd.DataFrame, comparisons: pd.DataFrame, good: pd.DataFrame,
                   predictions: pa.Table | None, metric: str, replicates: int = bootstrap.REPLICATES,
                   seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`summary` with seed_se (the mean's SE over new seeds) and data_se (over new dev data and new seeds), and
    `comparisons` with data_delta, data_se, data_ci_low, data_ci_high (each row's own ci_level); nan where not
    available. Unchanged without predictions."""
    if predictions is None:
        return summary, comparisons
    draws = group_draws(good, predictions, metric, replicates, seed)
    seed_se = summary["std"] / np.sqrt(summary["n"]) if "std" in summary else np.nan
    summary = summary.assign(seed_se=seed_se, data_se=[_group_se(draws.get(g), [seed, 1, i])
                                                       for i, g in enumerate(summary["group"])])
    model = good.drop_duplicates("group").set_index("group")["model_key"].to_dict() if len(good) else {}
    rows = [_pair(draws.get(a), draws.get(b), model.get(a) == model.get(b), level, [seed, 2, i])
            for i, (a, b, level) in enumerate(zip(comparisons.get("a", []), comparisons.get("b", []),
                                                  comparisons.get("ci_level", [])))]
    extra = pd.DataFrame(rows, columns=list(PAIR_COLUMNS), index=comparisons.index, dtype=float)
    return summary, pd.concat([comparisons, extra], axis=1)


def _group_se(d: GroupDraws | None, seed: list[int]) -> float:
    return bootstrap.mean_from(d.by_seed, d.seen, seed, d.step).se if d is not None else float("nan")


def _pair(a: GroupDraws | None, b: GroupDraws | None, same_model: bool, level: float, seed: list[int]) -> list[float]:
    """data_delta, data_se, data_ci_low, data_ci_high of a - b: paired on the seeds they share (same model, at least
    2 shared), else unpaired; nan unless both groups have draws on the same data set."""
    if a is None or b is None or a.data_key != b.data_key or a.by_seed.shape[0] != b.by_seed.shape[0]:
        return [float("nan")] * 4
    shared, ia, ib = np.intersect1d(a.seeds, b.seeds, return_indices=True)
    if same_model and len(shared) >= 2:
        by_a, by_b = (d.by_seed if len(i) == len(d.seeds) else d.by_seed[:, i] for d, i in ((a, ia), (b, ib)))
        est = bootstrap.difference_from(by_a, by_b, a.seen[ia], b.seen[ib], True, seed, a.step)
    else:
        est = bootstrap.difference_from(a.by_seed, b.by_seed, a.seen, b.seen, False, seed, a.step)
    return [est.estimate, est.se, *est.interval(level)]


def note(summary: pd.DataFrame, comparisons: pd.DataFrame, predictions: pa.Table | None, metric: str) -> str:
    """One sentence on what the two intervals answer, and where the data + seeds figures are missing, why."""
    what = ("Two intervals per comparison, at the same level: 'interval low/high' varies the seeds only (on this "
            "dev set, over new seeds); 'data + seeds low/high' is the multi-bootstrap of Sellam et al. (2022), "
            "resampling the dev examples and the seeds together (on new data from the same distribution and new "
            "seeds; its seed part read at Student's t, as the seed-only interval, its examples' part at z, so it is "
            "never narrower than the paired t on the same seeds). Per group, 'SE over seeds' and 'SE over data + "
            "seeds' answer the same two questions for its mean, and 'dev-set SE' is the binomial SE of one accuracy "
            "on this many examples. Verdicts are read off the seed-only interval.")
    name = metrics.metric_of(metric).name if metrics.metric_of(metric) else metric
    if predictions is None:
        return ("The intervals above vary the seeds only: they answer how a difference would vary on this dev set "
                "over new seeds. An interval over new data from the same distribution as well needs the trials' "
                "predictions: no predictions.parquet beside trials.parquet (made by a lora-sweep before trials "
                "wrote them; rerun `lora-sweep analyze` on experiments that have them).")
    if not metric.startswith(metrics.DEV) or name not in bootstrap.METRICS:
        return what + f" Not available for {metric}: predictions are of the dev split, and the bootstrap " \
                      "computes accuracy, and F1 and MCC of two classes, only."
    missing = int(summary["data_se"].isna().sum()) if "data_se" in summary else len(summary)
    if missing:
        return what + f" Not available for {missing} group(s): some of their runs have no predictions (made " \
                      "before trials wrote them, or diverged), or their task is not a two-class one for F1/MCC, " \
                      "or a single seed."
    return what
