"""`lora-sweep report`: experiments (analysed first, `analysis.sources`) or trials.parquet/epochs.parquet -> the
answer in the terminal; summary, comparisons, verdicts, figures; report.md and a self-contained report.html.

    python -m analysis.report EXPERIMENT... | DIR [--out REPORT_DIR] [--metric val_accuracy] [--reference GROUP]

Load (Parquet) -> prepare (final-epoch metric, one group per configuration, duplicate runs dropped) -> summarize /
compare (pure pandas, `analysis.compare`) -> draw (`analysis.plots`) -> render (`analysis.document`).
"""

from __future__ import annotations

import argparse
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from record import metrics
from record.errors import EXIT_OK, InputError, did_you_mean, one_of, run_guarded
from record.outcome import STOPPED, TERMINATED
from record.predictions import PREDICTIONS_FILE

from . import cost, stats
from .compare import (
    DEFAULT_MARGIN,
    DEFAULT_TEST,
    MODERATED_MIN_SEEDS,
    PRIOR_WEIGHT,
    SETTLE_LIMIT,
    TESTS,
    VERDICTS,
    Family,
    compare,
)
from .dev_error import note as dev_error_note
from .dev_error import with_dev_error
from .document import Block, Column, to_html, to_markdown
from .groups import CONFIGURATION, drop_duplicate_runs, group_labels, has_budgets, strata_keys, usable_mask
from .headline import headline, verdict_matrix
from .select import select_settings, selection_metric, staged_settings, tuned_and_confirmed

OPTIMISTIC = ("best_val_accuracy",)  # max over epochs on the reported set: never a verdict's metric


@dataclass(frozen=True)
class ReportOptions:
    """What is compared and how strictly."""

    metric: str | None = None  # an epoch metric, its final-epoch value per trial; None: the study's primary metric
    reference: str | None = None  # a group label or scenario name; None = all pairs
    margin: float = DEFAULT_MARGIN  # equivalence margin, in the metric's units
    alpha: float = 0.05
    select: tuple[str, ...] = ()  # settings chosen per placement on the selection split (e.g. learning_rate)
    test: str = DEFAULT_TEST  # auto | paired | moderated | blocked (analysis.compare.TESTS)
    price: float | None = None  # money per resource-hour (GPU-hour, or CPU-hour for trials without GPUs)


def load(dir_: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """trials and epochs frames from `analyze`'s Parquet files."""
    trials_path, epochs_path = dir_ / "trials.parquet", dir_ / "epochs.parquet"
    for p in (trials_path, epochs_path):
        if not p.is_file():
            raise InputError(str(p), f"missing; run `lora-sweep analyze EXPERIMENT --out {dir_}` first")
    trials, epochs = _read_parquet(trials_path, dir_), _read_parquet(epochs_path, dir_)
    if trials.empty:
        raise InputError(str(trials_path), "has no trials")
    return trials, epochs


def load_predictions(dir_: Path) -> pa.Table | None:
    """predictions.parquet from `analyze` as an Arrow table (millions of rows, read column-wise), or None where
    there is none (an output of a lora-sweep before predictions)."""
    import pyarrow.parquet as pq

    path = dir_ / PREDICTIONS_FILE
    if not path.is_file():
        return None
    try:  # score is not needed here, and the costliest column to read
        return pq.read_table(path, columns=["experiment", "trial_id", "example", "label", "prediction"])
    except (pa.ArrowException, OSError) as err:  # ArrowInvalid: cut short or damaged
        raise _unreadable(path, dir_, err) from None


def _unreadable(path: Path, dir_: Path, err: Exception) -> InputError:
    """One line for a Parquet file of `analyze` that cannot be read (cut short by a full disk or a copy, damaged)."""
    import re

    why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    why = re.sub(r"^Could not open Parquet input source '[^']*': ", "", why).split(". ")[0].rstrip(".")
    return InputError(str(path), f"not a readable Parquet file, truncated or damaged ({why[:100]})",
                      allowed=f"re-run `lora-sweep analyze EXPERIMENT --out {dir_}` to write it again")


def _read_parquet(path: Path, dir_: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (pa.ArrowException, OSError) as err:
        raise _unreadable(path, dir_, err) from None


def final_epoch(trials: pd.DataFrame, epochs: pd.DataFrame, column: str) -> pd.Series:
    """Per trial (aligned to `trials`), `column` at its last epoch; nan where it was not reported."""
    if column not in epochs.columns or epochs.empty:
        return pd.Series(np.nan, index=trials.index, dtype=float)
    last = epochs.sort_values("epoch").groupby(["experiment", "trial_id"], sort=False).tail(1)
    keyed = last.set_index(["experiment", "trial_id"])[column]
    return pd.Series(pd.MultiIndex.from_frame(trials[["experiment", "trial_id"]]).map(keyed.to_dict().get),
                     index=trials.index, dtype=float)


def primary_metric(trials: pd.DataFrame) -> str:
    """The metric the studies optimized (the task's: val_mcc for CoLA, ...); val_accuracy for older experiments."""
    named = trials["primary_metric"].dropna().unique() if "primary_metric" in trials else []
    if len(named) > 1:
        raise InputError("--metric", f"these experiments optimized different metrics ({', '.join(sorted(named))});"
                               " name the one to compare")
    return named[0] if len(named) else metrics.LEGACY_PRIMARY


def check_metric(metric: str, epochs: pd.DataFrame) -> str:
    """The epoch metric to compare (a `val_*`/`sel_*` column of the metric table); `final_` is implied. Refuses
    the optimistic best-epoch figures, non-metric columns (memory, speed, epoch) and metrics no trial reported."""
    name = metric.removeprefix("final_")
    if metric in OPTIMISTIC or name.startswith("best_"):
        raise InputError("--metric", f"{metric} is the best epoch on the same dev set it reports (optimistic); "
                               "compare final-epoch values, e.g. --metric val_accuracy")
    reported = sorted(c for c in epochs.columns if metrics.is_split_metric(c) and epochs[c].notna().any())
    if not metrics.is_split_metric(name) or name not in epochs.columns:
        raise InputError("--metric", f"{metric!r} is not a metric column; {did_you_mean(name, reported)}metrics these "
                               f"trials report: {', '.join(reported)}")
    if name not in reported and reported:  # (none reported at all: no finished epoch; the report lists why)
        lacking = sorted(epochs["experiment"].dropna().unique()) if "experiment" in epochs else []
        raise InputError("--metric", f"no trial reports {name}: experiment(s) {', '.join(lacking) or '?'} lack it "
                               f"(made before it existed, or another task); metrics these trials report: "
                               f"{', '.join(reported)}")
    return name


def prepare(trials: pd.DataFrame, epochs: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, int]:
    """Trials with `value` (final-epoch metric), `examples` (rows of the split it was measured on), `resolution`
    (the metric's step there, nan if unknown), strata keys, `config_key` and `group`; duplicates dropped."""
    examples = final_epoch(trials, epochs, metrics.examples_column(metric) or "val_examples")
    trials = trials.assign(value=final_epoch(trials, epochs, metric), examples=examples,
                           resolution=[metrics.resolution(metric, n) or np.nan for n in examples])
    kept, dropped = drop_duplicate_runs(trials)
    return pd.concat([kept, strata_keys(kept)], axis=1).assign(group=group_labels(kept)), dropped


def usable(trials: pd.DataFrame) -> pd.DataFrame:
    """Finished trials with a value and no flagged problem; diverged and errored ones are listed, never averaged."""
    return trials[usable_mask(trials)]


def _why(row: pd.Series) -> str:
    """diverged | errored | flagged | no value, with the reason, in one line."""
    first = lambda text: str(text).strip().splitlines()[0][:160] if text and text == text else ""  # noqa: E731
    if row.get("diverged") is True or row.get("diverged") == 1:
        return f"diverged: {first(row.get('diverged_reason')) or 'non-finite loss'}"
    if row.get("status") == STOPPED:
        return f"stopped early: at epoch {int(row['stopped_at_epoch'])} of the tuning stage (ASHA on the selection " \
               "split); its candidate's row in the selection table"
    if row.get("status") != TERMINATED:
        return f"errored: {first(row.get('error')) or 'status ' + str(row.get('status'))}"
    if row.get("problem") and row.get("problem") == row.get("problem"):
        return f"flagged: {first(row['problem'])}"
    return "no value: the metric is missing or not finite at the final epoch"


def problems(trials: pd.DataFrame) -> pd.DataFrame:
    """Every trial that `usable` leaves out, with why (diverged, errored or unfinished, flagged, no value)."""
    bad = trials.drop(usable(trials).index)
    cols = [c for c in ("experiment", "trial_name", "status", "epochs_completed") if c in bad]
    return bad[cols].assign(why=[_why(r) for _, r in bad.iterrows()])


def summarize(good: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per group: n, mean, std, Student t 95 % interval (ties on a stepped metric floored at its step, never zero
    width; none where the spread cannot be estimated), the split's noise floor, parameters, memory and speed."""
    rows = []
    for group, g in good.groupby("group", sort=False):
        v = g["value"].to_numpy(float)
        step = g["resolution"].max()
        step = step if step == step else None
        lo, hi = stats.t_interval(v, resolution=step)
        examples = g["examples"].median()
        rows.append({
            "group": group, "scenario": g["scenario"].iloc[0], "r": g["r"].iloc[0],
            "budget": g["budget"].iloc[0] if "budget" in g else None, "compare_key": g["compare_key"].iloc[0],
            "experiments": ",".join(sorted(g["experiment"].unique())), "model": g["model"].iloc[0],
            "dataset": g["dataset"].iloc[0], "data_key": g["data_key"].iloc[0], "metric": metric, "n": len(v),
            "seeds": ",".join(str(int(s)) for s in sorted(g["seed"].dropna())),
            "mean": v.mean(), "std": stats.spread(v, step), "median": float(np.median(v)), "ci95_low": lo,
            "ci95_high": hi, "ci95_halfwidth": (hi - lo) / 2, "examples": examples, "resolution": step,
            "noise_floor_se": stats.binomial_se(v.mean(), examples) if metrics.metric_of(metric).name == "accuracy"
            else np.nan,
            "trainable_params": g["trainable_params"].median(),
            "params_relative_pct": g["params_relative_pct"].median(),
            **memory_figures(g),
            "train_samples_per_s": g["mean_train_samples_per_s"].median(),
        })
    if not rows:
        return pd.DataFrame(columns=["group", "n", "mean", "ci95_low", "ci95_high", "params_relative_pct"])
    out = pd.DataFrame(rows).sort_values("mean", ascending=not metrics.higher_is_better(metric), ignore_index=True)
    if has_budgets(out):  # at equal cost: each budget's placements together, smallest budget first
        out = out.sort_values("budget", kind="stable", na_position="last", ignore_index=True)
    unmeasured = [c for c in MEMORY_MEASURED if out[c].isna().all()]  # a CPU-only study has no GPU columns, ...
    return out.drop(columns=unmeasured)


TRAINABLE_STATE_BYTES = 4 * 4  # per fp32 trainable parameter: weight, gradient, AdamW's two moments (4 bytes each)
MEMORY_MEASURED = ("gpu_allocated_mb", "peak_reserved_mb", "rss_growth_mb")  # kept only where some group has one


def memory_figures(g: pd.DataFrame) -> dict:
    """A group's memory, one meaning per column (medians over its trials):

    - saved_activations_mb, trainable_state_mb: exact and device-independent (bytes autograd saves for backward;
      weights + gradients + AdamW moments of the trainable parameters). Where a trial predates the trainable-state
      record it is computed from trainable_params x 16 bytes (fp32 weight, grad, two moments; trainable parameters
      stay fp32 under bf16/fp16 autocast) and trainable_state_estimated says so.
    - gpu_allocated_mb, peak_reserved_mb: on a GPU, torch's peak allocated (tensors) and reserved (caching allocator).
    - rss_growth_mb: on a CPU, the growth of the process's peak RSS over the trial: a Ray worker process is reused,
      so the trial that ran first in a worker absorbs its start-up growth; order-dependent, never a ranking.
    """
    col = lambda name: g[name] if name in g else pd.Series(np.nan, index=g.index, dtype=float)  # noqa: E731
    kind = col("memory_kind")
    state = col("trainable_state_mb").astype(float)
    missing = state.isna() & col("trainable_params").notna()
    state = state.where(~missing, col("trainable_params").astype(float) * TRAINABLE_STATE_BYTES / 2**20)
    peak = col("peak_memory_mb").astype(float)
    return {
        "saved_activations_mb": col("saved_activations_mb").astype(float).median(),
        "trainable_state_mb": state.median(), "trainable_state_estimated": bool(missing.any()),
        "gpu_allocated_mb": peak[kind.eq("cuda_allocated")].median(),
        "peak_reserved_mb": col("peak_reserved_mb").astype(float).median(),
        "rss_growth_mb": peak[kind.eq("cpu_rss")].median(),
    }


def resolve_reference(reference: str | None, good: pd.DataFrame) -> str | None:
    """A group label, or a scenario name that names exactly one group."""
    if reference is None:
        return None
    labels = sorted(good["group"].unique())
    if reference in labels:
        return reference
    matching = sorted(good.loc[good["scenario"] == reference, "group"].unique())
    if len(matching) == 1:
        return matching[0]
    if matching:
        raise InputError("--reference", f"no single group {reference!r}; pick one (scenario {reference} has several "
                                        f"groups: {', '.join(matching)})")
    raise InputError("--reference", f"no group {reference!r}", allowed=one_of(reference, labels))


@dataclass(frozen=True)
class Readout:
    """Everything the report shows, computed once."""

    opts: ReportOptions
    trials: pd.DataFrame
    good: pd.DataFrame
    summary: pd.DataFrame
    comparisons: pd.DataFrame
    family: Family
    dropped: int
    reference: str | None
    selection: pd.DataFrame | None  # with --select: every candidate per placement, the chosen ones marked
    read: tuple[int, int]  # (trials, experiments) as read, before duplicates were dropped
    costs: pd.DataFrame  # per group: trials, trial-hours, resource-hours, money, metric per resource-hour
    bill: dict  # the whole study's (analysis.cost.study_cost)
    data_note: str = ""  # what the seed-only and the data + seeds intervals answer, and where the latter is missing


def read_out(trials: pd.DataFrame, epochs: pd.DataFrame, opts: ReportOptions, predictions: pa.Table | None = None
             ) -> Readout:
    """Prepare, (select,) summarize and compare; raises InputError for a bad metric, setting or reference."""
    metric = check_metric(opts.metric or primary_metric(trials), epochs)
    opts = ReportOptions(metric, opts.reference, opts.margin, opts.alpha, opts.select, opts.test, opts.price)
    if opts.test not in TESTS:
        raise InputError("--test", f"{opts.test!r} is not a test; use one of {', '.join(TESTS)}")
    prepared, dropped = prepare(trials, epochs, metric)
    good, selection = usable(prepared), None
    staged = staged_settings(prepared)
    if staged and opts.select:
        raise InputError("--select", f"these trials chose {', '.join(staged)} themselves (the spec's select:, tune "
                               "then confirm); the report shows that choice", allowed="drop --select")
    if staged:
        opts = ReportOptions(metric, opts.reference, opts.margin, opts.alpha, staged, opts.test, opts.price)
        sel_values = final_epoch(prepared, epochs, selection_metric(metric))
        good, selection = tuned_and_confirmed(prepared.assign(sel_value=sel_values), good, list(staged))
    elif opts.select:
        good, selection = _select(good, trials, epochs, opts)
    reference = resolve_reference(opts.reference, good)
    summary = summarize(good, metric)
    comparisons, family = compare(good[["group", "seed", "value", "model_key", "data_key", "compare_key",
                                        "resolution"]], metric,
                                  reference, opts.margin, opts.alpha, opts.test, looks=planned_looks(good))
    summary, comparisons = with_dev_error(summary, comparisons, good, predictions, metric)  # dev data + seeds
    return Readout(opts, prepared, good, summary, comparisons, family, dropped, reference, selection,
                   (len(trials), trials["experiment"].nunique()), cost.group_costs(good, summary, opts.price),
                   cost.study_cost(trials, good, opts.price),  # every trial read: duplicates cost too
                   dev_error_note(summary, comparisons, predictions, metric))


def planned_looks(good: pd.DataFrame) -> int:
    """The most looks any compared trial's design planned (`repeats: {until: decided}`); 1 for fixed designs."""
    looks = good["looks"].dropna() if "looks" in good else pd.Series(dtype=float)
    return int(looks.max()) if len(looks) else 1


def _select(good: pd.DataFrame, trials: pd.DataFrame, epochs: pd.DataFrame, opts: ReportOptions):
    unknown = [s for s in opts.select if s not in CONFIGURATION or s not in trials.columns]
    if unknown:
        settings = [c for c in CONFIGURATION if c in trials.columns]
        raise InputError("--select", f"{unknown[0]!r} is not a training setting of these trials",
                         allowed=did_you_mean(unknown[0], settings) + "e.g. learning_rate, batch_size, epochs")
    sel = selection_metric(opts.metric)
    values = final_epoch(good, epochs, sel)
    if values.isna().all():
        raise InputError("--select", f"the trials report no {sel} (no selection split): choosing on the dev "
                               "set would bias the very numbers it reports; add data.selection to the spec")
    return select_settings(good.assign(sel_value=values), list(opts.select), metrics.higher_is_better(opts.metric))


SUMMARY_COLUMNS = (
    Column("group", "group"), Column("n", "seeds"), Column("mean", "mean", "{:.4f}"), Column("std", "SD", "{:.4f}"),
    Column("ci95_low", "95 % CI low", "{:.4f}"), Column("ci95_high", "95 % CI high", "{:.4f}"),
    Column("noise_floor_se", "dev-set SE", "{:.4f}"), Column("seed_se", "SE over seeds", "{:.4f}"),
    Column("data_se", "SE over data + seeds", "{:.4f}"), Column("params_relative_pct", "trainable %", "{:.3g}"),
    Column("train_samples_per_s", "samples/s", "{:,.0f}"),
)
# Memory, one meaning per column. Exact: device-independent, comparable across groups and machines.
EXACT_MEMORY = (Column("saved_activations_mb", "saved activations MB (exact)", "{:,.0f}"),
                Column("trainable_state_mb", "trainable state MB (exact)", "{:,.1f}"))
GPU_MEMORY = (Column("gpu_allocated_mb", "GPU peak allocated MB", "{:,.0f}"),
              Column("peak_reserved_mb", "GPU peak reserved MB", "{:,.0f}"))
RSS_MEMORY = (Column("rss_growth_mb", "process RSS growth MB (order-dependent)", "{:,.0f}"),)


def summary_columns(summary: pd.DataFrame) -> tuple[Column, ...]:
    """The summary table's columns; memory led by what ranks groups correctly on the study's device: on a GPU the
    measured peaks (allocated, reserved), then the exact figures; otherwise the exact figures, then CPU process RSS
    growth last (order-dependent: labelled, explained in "How to read this")."""
    gpu = "gpu_allocated_mb" in summary and summary["gpu_allocated_mb"].notna().all()
    memory = (*GPU_MEMORY, *EXACT_MEMORY) if gpu else (*EXACT_MEMORY, *GPU_MEMORY)
    budget = (Column("budget", "budget (adapter params)", "{:,.0f}"),) if has_budgets(summary) else ()
    return (SUMMARY_COLUMNS[0], *budget, *SUMMARY_COLUMNS[1:-1], *memory, *RSS_MEMORY, SUMMARY_COLUMNS[-1])
COMPARISON_COLUMNS = (
    Column("a", "a"), Column("b", "b"), Column("verdict", "verdict"),
    Column("moderated_verdict", "moderated test would say (not a claim)"), Column("delta", "Δ = a − b", "{:+.4f}"),
    Column("ci_low", "interval low", "{:+.4f}"), Column("ci_high", "interval high", "{:+.4f}"),
    Column("se", "SE over seeds", "{:.4f}"), Column("data_se", "SE over data + seeds", "{:.4f}"),
    Column("data_ci_low", "data + seeds low", "{:+.4f}"), Column("data_ci_high", "data + seeds high", "{:+.4f}"),
    Column("test", "test"), Column("n_seeds", "seeds"), Column("p_adj", "p (×m)", "{:.3g}"),
    Column("seeds_to_settle", "seeds to settle"), Column("seeds_to_detect", "seeds to detect Δ"),
)
COST_COLUMNS = (
    Column("group", "group"), Column("trials", "trials"), Column("trial_hours", "trial-hours", "{:.3g}"),
    Column("resource", "billed in"), Column("resource_hours", "resource-hours", "{:.3g}"),
    Column("cost", "cost", "{:,.4g}"),
)
PROBLEM_COLUMNS = (
    Column("experiment", "experiment"), Column("trial_name", "trial"), Column("status", "status"),
    Column("why", "why left out"), Column("epochs_completed", "epochs done"),
)


def comparisons_shown(comparisons: pd.DataFrame) -> pd.DataFrame:
    """The comparisons table as the page shows it: each plan cell says what its sentence says, never blank: a
    number of seeds, "> 1000" where more than SETTLE_LIMIT seeds per group would be needed, "—" where a verdict was
    reached (nothing to settle), "n/a" where the spread cannot be estimated. comparisons.csv keeps the numbers."""
    if comparisons.empty or "seeds_to_settle" not in comparisons:
        return comparisons

    def plan(seeds, verdict: str, delta: float) -> str:
        if pd.notna(seeds):
            return f"{int(seeds)}"
        if verdict == "undetermined":
            return "n/a"
        if verdict != "inconclusive":
            return "—"
        return "none: Δ = 0" if delta == 0 else f"> {SETTLE_LIMIT}"

    rows = list(zip(comparisons["verdict"], comparisons["delta"]))
    return comparisons.assign(
        seeds_to_settle=[plan(s, v, 1.0) for s, (v, _) in zip(comparisons["seeds_to_settle"], rows)],
        seeds_to_detect=[plan(s, v, d) for s, (v, d) in zip(comparisons["seeds_to_detect"], rows)])


def figure_caption(name: str, ro: Readout) -> str:
    """What a figure shows and what to look at in it (the page's caption and the image's alt text)."""
    from .plots import memory_basis

    m, margin = ro.opts.metric, ro.opts.margin
    budgeted = has_budgets(ro.summary)
    focal = ro.reference or (ro.summary["group"].iloc[0] if not ro.summary.empty else "")
    basis = memory_basis(ro.good) if name == "memory_by_layer" else None
    reserved = "peak_reserved_mb" in ro.good and ro.good["peak_reserved_mb"].notna().any()
    memory = ("bytes saved for backward plus trainable state (exact, the same on any device)" if basis == "exact"
              else "GPU peak allocated (solid)" + (" and reserved (dashed)" if reserved else ""))
    captions = {
        "accuracy_by_scenario": f"Final {m} of every run, one row per group (dots: runs; red bar: the group's mean; "
                                "shade: density). Look at how far rows overlap: groups whose runs interleave are "
                                "the ones the comparisons cannot tell apart yet.",
        "accuracy_vs_params": (f"Mean final {m} (bars: 95 % t interval) of each placement at each parameter "
                               "budget, best first; dashed lines: the groups without a budget (baselines). Compare "
                               "within a panel: its placements train the same adapter parameters (within one "
                               "module's rank step), so what differs is where they train, not how much. The "
                               "comparisons test pairs within one budget only.") if budgeted else
                              (f"Mean final {m} (bars: 95 % t interval) against trainable parameters, % of full "
                               "fine-tuning. Look at the red Pareto front: no group off it has a higher mean with "
                               "fewer parameters (means, not verdicts: the comparisons say which gaps are real). "
                               "Groups at the same % stand side by side, named in the legend."),
        "loss_curves": "Mean train and validation loss per epoch, one line per group. Look for validation loss "
                       "rising while train loss falls (over-fitting), or curves still falling at the last epoch "
                       "(more epochs would change the answer).",
        "forest": f"Each group's difference in final {m} from {focal}, with its simultaneous interval; the shaded "
                  f"band is the ±{margin:g} equivalence margin. Look at where each bar lies: clear of 0, a difference; "
                  "inside the band, equivalent; across 0 and an edge of the band, inconclusive.",
        "memory_by_layer": f"Memory when a single layer is adapted, by layer: {memory}, gradient checkpointing off "
                           "and on. Look at the slope: an adapter in a layer makes backward keep activations from "
                           "that layer upward, so lower layers should cost more; check whether checkpointing "
                           "flattens the slope here.",
    }
    return captions.get(name, name.replace("_", " "))


def _memory_text(summary: pd.DataFrame) -> str:
    """How to read the memory columns that this summary has."""
    has = lambda c: c in summary and summary[c].notna().any()  # noqa: E731
    text = ("Memory, one meaning per column. Saved activations and trainable state are exact: the bytes autograd "
            "keeps for backward at the peak step, and the trainable parameters' weights, gradients and AdamW's two "
            "moments; they rank placements the same on any device (frozen weights, the same for every placement, "
            "are in neither).")
    if "trainable_state_estimated" in summary and summary["trainable_state_estimated"].fillna(False).astype(bool).any():
        text += (f" Trainable state of trials recorded before it was measured is computed: trainable parameters × "
                 f"{TRAINABLE_STATE_BYTES} bytes (fp32 weight, gradient, two moments).")
    if has("gpu_allocated_mb"):
        text += (" On a GPU: peak allocated (torch's tensors) and peak reserved (what its caching allocator held, "
                 "which other processes on the GPU cannot use).")
    if has("rss_growth_mb"):
        text += (" Process RSS growth (CPU trials) is how much the process's peak resident memory grew during the "
                 "trial: Ray reuses worker processes, so whichever trial ran first in a worker absorbs the "
                 "start-up growth, and later ones show little. It depends on the order trials ran, not on the "
                 "placement: never rank by it.")
    return text


def _blocks(ro: Readout, figures: dict[str, bytes]) -> list[Block]:
    o, bad = ro.opts, problems(ro.trials)
    studies = ", ".join(sorted(ro.trials["study"].dropna().unique())) or "(no study name)"
    verdicts = ro.comparisons["verdict"].value_counts().to_dict() if not ro.comparisons.empty else {}
    kinds = bad["why"].str.split(":").str[0].value_counts().to_dict() if not bad.empty else {}
    matrix = verdict_matrix(list(ro.summary["group"]), ro.comparisons)
    lines = answer(ro)
    blocks = [
        Block("h1", f"lora-sweep report: {studies}"),
        Block("headline", items=tuple(lines)) if lines else Block("p", "No group has a usable run."),
        Block("p", f"{ro.read[0]} trials in {ro.read[1]} experiment(s): {len(ro.good)} analysed in "
                   f"{ro.good['group'].nunique()} group(s) (one group = one configuration); left out and listed "
                   f"below: {kinds.get('diverged', 0)} diverged, {kinds.get('errored', 0)} errored or unfinished, "
                   f"{kinds.get('flagged', 0)} flagged, {kinds.get('no value', 0)} without a final value"
                   + (f", {kinds['stopped early']} stopped early in the tuning stage" if kinds.get('stopped early')
                      else "") + "; "
                   + (f"{ro.bill['tuned']} tuning-stage trials are in the selection table, not compared on dev; "
                      if ro.bill.get('tuned') else "")
                   + f"{ro.dropped} duplicate run(s) dropped (the same configuration "
                   "and seed found again, in another experiment or under another scenario name; only usable runs "
                   "count as copies)."),
    ]
    if not matrix.empty:
        blocks += [Block("h2", "Verdicts at a glance"),
                   Block("p", "Each cell: the row group against the column group. '?' = inconclusive (the data "
                              "cannot tell yet), '(< margin)' = a real difference smaller than the margin."),
                   Block("matrix", "verdicts", table=matrix)]
    blocks += [
        Block("h2", f"{o.metric} per group (final epoch)"),
        Block("table", "summary", table=ro.summary, columns=summary_columns(ro.summary)),
        *_selection_blocks(ro),
        Block("h2", "How to read this"),
        Block("list", items=_reading_text(ro)),
        Block("h2", "Comparisons"),
        Block("p", ", ".join(f"{verdicts[v]} {v}" for v in VERDICTS if v in verdicts)
              if verdicts else "Fewer than two comparable groups: nothing to compare."),
        Block("table", "comparisons", table=comparisons_shown(ro.comparisons), columns=COMPARISON_COLUMNS),
        *([Block("details", "Each comparison in words", items=tuple(ro.comparisons["sentence"]))]
          if "sentence" in ro.comparisons and not ro.comparisons.empty else []),
        *([Block("p", ro.data_note)] if ro.data_note and not ro.comparisons.empty else []),
        Block("h2", "What it cost"),
        Block("p", "Measured per trial (Ray's time_total_s: set-up, training, evaluation, checkpoints) × the resources "
                   "Ray reserved for it (`resources` of the spec); the study's total counts every trial read, those "
                   "left out included. " + ("" if o.price is not None else "Add --price-per-hour P for money.")),
        Block("table", "costs", table=ro.costs,
              columns=tuple(c for c in COST_COLUMNS if c.name != "cost" or o.price is not None)),
        Block("h2", "Diverged, errored or flagged trials"),
        Block("table", "problems", table=bad, columns=PROBLEM_COLUMNS),
    ]
    if figures:
        blocks.append(Block("h2", "Figures"))
        blocks += [Block("figure", name, png=png, caption=figure_caption(name, ro)) for name, png in figures.items()]
    return blocks


def _selection_columns(table: pd.DataFrame, settings: tuple[str, ...]) -> tuple[Column, ...]:
    """The selection table's columns: counts as integers, settings as written, means to 4 decimals."""
    formats = {"n": "{}", "sel_mean": "{:.4f}", "dev_mean": "{:.4f}", **{s: "{}" for s in settings}}
    return tuple(Column(c, c, formats.get(c, "{}")) for c in table.columns)


def _selection_blocks(ro: Readout) -> list[Block]:
    if ro.selection is None:
        return []
    sel = selection_metric(ro.opts.metric)
    columns = _selection_columns(ro.selection, ro.opts.select)
    if "stopped_early" in ro.selection:  # the study's own tune stage (select: in its spec)
        return [Block("h2", f"Tune, then confirm: {', '.join(ro.opts.select)} chosen on the selection split"),
                Block("p", f"Each placement's candidates trained with the tune stage's seeds (some stopped early by "
                           f"ASHA, within the placement, on {sel}); the candidate with the best mean final {sel} "
                           "among those that ran to the end was then trained with new seeds, and only those confirm-"
                           "stage trials are compared on the dev set above and below: no dev number chose anything. "
                           "dev_mean of the tune seeds is for reference only."),
                Block("table", "selection", table=ro.selection, columns=columns)]
    return [Block("h2", f"Selection of {', '.join(ro.opts.select)} on the selection split"),
            Block("p", f"Per placement, the value with the best mean final {sel} (rows held out of the train split, "
                       f"never trained on) is chosen; the tables above and below report only the chosen groups, on "
                       f"the dev set, which no choice touched. dev_mean of the candidates not chosen is shown for "
                       "reference only: picking by it would be selection on the reported set."),
            Block("table", "selection", table=ro.selection, columns=columns)]


def _reading_text(ro: Readout) -> tuple[str, ...]:
    """The method in short points, each a fact a reader needs to trust (or doubt) a verdict."""
    o, fam = ro.opts, ro.family
    if o.test == "blocked":
        how = ("Comparisons within one model and data set are contrasts of the additive group + seed model fitted to "
               "that stratum's groups (--test blocked: pooled residual variance, which assumes every group has the "
               "same seed-to-seed spread).")
    else:
        how = ("Each comparison is a paired t on the seeds both groups share (repeat k uses the same seed "
               "everywhere), so a group with a larger spread affects mainly its own comparisons.")
        if o.test in ("moderated", "auto"):
            from_ = "" if o.test == "moderated" else f" from {MODERATED_MIN_SEEDS} shared seeds on"
            how += (f" Its variance is moderated{from_} (empirical Bayes, Smyth 2004): shrunk toward a prior fitted "
                    f"to every seed-matched pair of the model and data set (prior df at {PRIOR_WEIGHT:g} of the "
                    "fitted, df capped at the additive fit's), which keeps the family's error rate within "
                    "simulation error even when one or two groups are several times noisier (bench/evidence.py).")
        if o.test == "auto":
            how += (f" Below {MODERATED_MIN_SEEDS} shared seeds moderation is not measured to keep that rate, "
                    "so the plain paired t decides; the moderated test's verdict is shown beside it, "
                    "labelled: not a claim.")
    step = ro.summary["resolution"].dropna() if "resolution" in ro.summary else pd.Series(dtype=float)
    ties = (f"{o.metric} moves in steps of 1/{1 / step.max():.0f} rows here: tied values are not read as certainty; "
            "a spread is at least the step's own rounding error (step/√12 for a value, step/√6 for a difference)."
            if len(step) else "Tied values of a metric whose step is unknown give no interval (undetermined), never "
            "a zero-width one.")
    scope = f"each group vs {ro.reference}" if ro.reference else "all pairs"
    return (
        f"Metric: the final epoch's {o.metric}, not the best epoch (chosen on the very set it reports, so optimistic).",
        f"Group intervals: Student t, 95 %, each on its own. {ties}",
        f"{how} Welch where seeds are not shared, and across models, whose seeds are not the same blocks (labelled "
        f"unpaired). Groups on different data sets or tasks, or at different parameter budgets (unless one is the "
        f"reference), are never compared ({fam.not_compared} pair(s) skipped).",
        f"One family: the {fam.pairs} comparison(s) tested ({scope}) each get a {100 * fam.level:.3g} % interval "
        f"(Bonferroni, α = {o.alpha:g} over {fam.pairs}"
        + (f" and over the {fam.looks} looks of the sequential design (repeats until decided)" if fam.looks > 1
           else "") + "), so all of them hold together with probability ≥ "
        f"{100 * (1 - o.alpha):.3g} %: they are simultaneous, and the chance of any false claim in the table is at "
        f"most {o.alpha:g}. Fewer comparisons (--reference) give narrower intervals.",
        f"Verdicts are read off that interval: better/worse when it excludes 0; equivalent when it lies within "
        f"±{o.margin:g}; 'better, within margin' when both hold (a real difference smaller than the margin); "
        "inconclusive otherwise: the data cannot tell, which is not evidence of no effect.",
        "Seeds to settle: seeds per group at which the interval is narrow enough (half-width ≤ margin/2) that any "
        "outcome is a verdict, with 80 % chance given the spread seen so far and its uncertainty. Seeds to detect Δ: "
        "seeds at which a difference as large as the observed one would be detected with 80 % power, if it is real "
        "(a conditional plan: no number of seeds detects a difference that is not there). In the table, "
        f"'> {SETTLE_LIMIT}': more seeds than that; '—': decided, nothing to settle; 'n/a': no spread to plan from.",
        "dev-set SE: the binomial standard error of an accuracy on a split of this size; even when seeds agree, "
        "results on this split carry that much sampling error about new data.",
        _memory_text(ro.summary),
    )


def figures_png(ro: Readout, epochs: pd.DataFrame) -> dict[str, bytes]:
    """Name -> PNG bytes of every figure the data supports."""
    from . import plots

    out = {}
    for name, fig in plots.all_figures(ro.good, epochs, ro.summary, ro.comparisons, ro.reference, ro.opts.margin,
                                       ro.opts.metric).items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plots.close(fig)
        out[name] = buf.getvalue()
    return out


def answer(ro: Readout) -> list[str]:
    """The report's first sentences: the best group (or the reference), each verdict against it, what more seeds
    would settle and cost, and what the study cost."""
    lines = headline(ro.summary, ro.comparisons, ro.opts.metric, ro.opts.margin, ro.reference, ro.costs)
    return lines + ([cost.cost_sentence(ro.bill)] if ro.bill["trials"] else [])


def write_readout(ro: Readout, epochs: pd.DataFrame, out: Path) -> list[Path]:
    """report.md, report.html, summary.csv, comparisons.csv, costs.csv (selection.csv where settings were chosen)
    and PNG figures into `out`; returns the files."""
    figures = figures_png(ro, epochs)
    out.mkdir(parents=True, exist_ok=True)
    ro.summary.to_csv(out / "summary.csv", index=False)
    ro.comparisons.to_csv(out / "comparisons.csv", index=False)
    ro.costs.to_csv(out / "costs.csv", index=False)
    written = [out / "report.md", out / "report.html", out / "summary.csv", out / "comparisons.csv",
               out / "costs.csv"]
    if ro.selection is not None:  # every candidate per placement, the chosen ones marked
        ro.selection.to_csv(out / "selection.csv", index=False)
        written.append(out / "selection.csv")
    for name, png in figures.items():
        (out / f"{name}.png").write_bytes(png)
        written.append(out / f"{name}.png")
    blocks = _blocks(ro, figures)
    (out / "report.md").write_text(to_markdown(blocks))
    (out / "report.html").write_text(to_html(blocks, blocks[0].text))
    return written


def write_report(trials: pd.DataFrame, epochs: pd.DataFrame, out: Path, opts: ReportOptions = ReportOptions(),
                 predictions: pa.Table | None = None) -> list[Path]:
    """The report of these tables into `out` (`write_readout`); returns the files."""
    return write_readout(read_out(trials, epochs, opts, predictions), epochs, out)


def _terminal(lines: list[str], width: int) -> str:
    """The answer as a person reads it in a terminal: one wrapped paragraph per sentence, no markdown."""
    import textwrap

    plain = [line.replace("`", "") for line in lines]
    return "\n".join(textwrap.fill(line, width=width, subsequent_indent="  ") for line in plain)


def _analysed(sources, opts: ReportOptions) -> tuple[pd.DataFrame, pd.DataFrame, Readout]:
    """Trials, epochs and the readout: from the analysis folder, or from the experiments analysed into a temporary
    folder whose Parquet files move into `sources.analysis` only once the options proved good (a bad --metric or
    --reference writes nothing)."""
    import shutil
    import tempfile

    if not sources.experiments:
        trials, epochs = load(sources.analysis)
        return trials, epochs, read_out(trials, epochs, opts, load_predictions(sources.analysis))
    from .aggregate import aggregate, summary_line

    with tempfile.TemporaryDirectory(prefix="lora-sweep-analysis-") as tmp:
        analysed, analysed_epochs, notes = aggregate(list(sources.experiments), tmp)
        trials, epochs = load(Path(tmp))
        ro = read_out(trials, epochs, opts, load_predictions(Path(tmp)))
        sources.analysis.mkdir(parents=True, exist_ok=True)
        for written in sorted(Path(tmp).glob("*.parquet")):
            shutil.move(str(written), str(sources.analysis / written.name))
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    print("analyze: " + summary_line(analysed, analysed_epochs, sources.analysis, files=False))
    return trials, epochs, ro


def cmd_report(args: argparse.Namespace) -> int:
    import shutil

    from record.errors import check_positive

    from .sources import resolve

    select = tuple(s.strip() for s in (args.select or "").split(",") if s.strip())
    opts = ReportOptions(metric=args.metric, reference=args.reference, margin=args.margin, select=select,
                         test=args.test, price=args.price_per_hour)
    check_positive(opts.margin, "--margin", "e.g. 0.005 for half a point")
    check_positive(opts.price, "--price-per-hour", "e.g. 1.2 per GPU-hour")
    sources = resolve(args.dir, args.out)  # --out checked there, before anything is read
    trials, epochs, ro = _analysed(sources, opts)
    files = write_readout(ro, epochs, sources.out)  # a folder it cannot write: one line (run_guarded), exit 2
    width = min(shutil.get_terminal_size((100, 24)).columns, 120)
    print(_terminal(answer(ro), width) or "No group has a usable run.")
    print(f"report: {len(files)} files in {sources.out}; open {sources.out / 'report.html'}")
    return EXIT_OK


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", nargs="+", metavar="DIR",
                   help="one or more experiment folders (STORAGE/NAME, local or s3://), analysed first, or one "
                        "folder with analyze's trials.parquet and epochs.parquet")
    p.add_argument("--out", help="folder for report.html, report.md, CSV tables and PNG figures (and, for "
                                 "experiments, the Parquet files); default: the analysis folder, or "
                                 "lora_sweep_reports/NAME under the working directory for experiments")
    p.add_argument("--metric", help="epoch metric to compare, at each trial's final epoch (default: the task's primary "
                                    "metric the study optimized, e.g. val_mcc for CoLA; val_accuracy for SST-2)")
    p.add_argument("--reference", metavar="GROUP",
                   help="compare every group against this one (a group label such as 'lora_all r=8', or a scenario "
                        "name with one group); default: all pairs")
    p.add_argument("--select", metavar="SETTING[,SETTING]",
                   help="per placement, keep the value of these training settings (e.g. learning_rate) that wins on "
                        "the selection split (data.selection), and report only those groups on the dev set")
    p.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                   help="equivalence margin in the metric's units (default %(default)g = 0.5 accuracy points)")
    p.add_argument("--price-per-hour", type=float, metavar="P",
                   help="money per resource-hour (GPU-hour; CPU-hour for trials without GPUs) for the cost table")
    p.add_argument("--test", choices=TESTS, default=DEFAULT_TEST,
                   help="auto (default): moderated where a pair shares at least "
                        f"{MODERATED_MIN_SEEDS} seeds, else paired; paired: paired t per pair on shared seeds, each "
                        "pair's spread its own; moderated: paired t with each pair's spread shrunk toward one fitted "
                        "to all pairs of the model and data set (empirical Bayes), far more decisions at 4-5 seeds; "
                        "blocked: one additive group + seed fit per model and data set, assumes every group has the "
                        "same spread (its error rate rises when one does not)")


def register(sub) -> None:
    p = sub.add_parser("report", help="the answer: statistics, verdicts, cost and figures of experiments (or of "
                                      "analyze's Parquet files)",
                       description="Experiment folders are analysed first (as `analyze` does) into a folder of your "
                                   "own; the answer is printed, and written with the rest. The answer first (the "
                                   "best group, what is and is not distinguishable from it, how many seeds would "
                                   "settle the rest), then one group per configuration: n, mean "
                                   "and Student t 95 % interval of the final epoch's metric (ties on small dev sets "
                                   "are never read as certainty), the split's noise floor, parameters, memory and "
                                   "speed; comparisons by paired t on shared seeds (Welch where seeds are not shared "
                                   "or models differ; never across data sets), one family of simultaneous intervals, "
                                   "one verdict each read off its interval (better, worse, equivalent, 'better, "
                                   "within margin', inconclusive). Writes report.html (self-contained), report.md, "
                                   "summary.csv, comparisons.csv and PNG figures.")
    add_arguments(p)
    p.set_defaults(func=cmd_report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__)
    add_arguments(parser)
    return run_guarded(cmd_report, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
