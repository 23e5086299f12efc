"""`lora-sweep report`: trials.parquet/epochs.parquet -> summary, comparisons, verdicts, figures; report.md and a
self-contained report.html.

    python -m analysis.report DIR --out REPORT_DIR [--metric val_accuracy] [--reference GROUP] [--margin 0.005]

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

from . import stats
from .compare import Design, compare, higher_is_better
from .document import Block, to_html, to_markdown
from .groups import CONFIGURATION, drop_duplicate_runs, group_labels
from .select import select_settings, selection_metric

EXIT_INPUT = 2
OPTIMISTIC = ("best_val_accuracy",)  # max over epochs on the reported set: never a verdict's metric


class ReportInputError(ValueError):
    """Input or options the report cannot use; one line naming what and how to fix it."""


@dataclass(frozen=True)
class ReportOptions:
    """What is compared and how strictly."""

    metric: str | None = None  # an epoch metric, its final-epoch value per trial; None: the study's primary metric
    reference: str | None = None  # a group label or scenario name; None = all pairs
    margin: float = 0.005  # equivalence margin, in the metric's units (0.005 = half an accuracy point)
    alpha: float = 0.05
    select: tuple[str, ...] = ()  # settings chosen per placement on the selection split (e.g. learning_rate)


def load(dir_: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """trials and epochs frames from `analyze`'s Parquet files."""
    trials_path, epochs_path = dir_ / "trials.parquet", dir_ / "epochs.parquet"
    for p in (trials_path, epochs_path):
        if not p.is_file():
            raise ReportInputError(f"{p}: missing; run `lora-sweep analyze EXPERIMENT --out {dir_}` first")
    trials, epochs = pd.read_parquet(trials_path), pd.read_parquet(epochs_path)
    if trials.empty:
        raise ReportInputError(f"{trials_path}: has no trials")
    return trials, epochs


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
        raise ReportInputError(f"--metric: these experiments optimized different metrics ({', '.join(sorted(named))});"
                               " name the one to compare")
    return named[0] if len(named) else "val_accuracy"


def check_metric(metric: str, epochs: pd.DataFrame) -> str:
    """The epoch metric to compare; `final_` is implied. Refuses the optimistic best-epoch figures."""
    name = metric.removeprefix("final_")
    if metric in OPTIMISTIC or name.startswith("best_"):
        raise ReportInputError(f"--metric: {metric} is the best epoch on the same dev set it reports (optimistic); "
                               "compare final-epoch values, e.g. --metric val_accuracy")
    numeric = [c for c in epochs.columns if pd.api.types.is_float_dtype(epochs[c]) and c.startswith(("val_", "sel_"))]
    if name not in epochs.columns:
        raise ReportInputError(f"--metric: no epoch metric named {metric!r}; known: {', '.join(sorted(numeric))}")
    return name


def prepare(trials: pd.DataFrame, epochs: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, int]:
    """Trials with `value` (final-epoch metric), `dev_examples`, `config_key` and `group`; duplicates dropped."""
    trials = trials.assign(value=final_epoch(trials, epochs, metric),
                           dev_examples=final_epoch(trials, epochs, "val_examples"))
    kept, dropped = drop_duplicate_runs(trials)
    return kept.assign(group=group_labels(kept)), dropped


def usable(trials: pd.DataFrame) -> pd.DataFrame:
    """Finished trials with a value and no flagged problem; diverged and errored ones are listed, never averaged."""
    ok = trials["status"].eq("TERMINATED") & trials["value"].notna() & trials["problem"].isna()
    if "diverged" in trials:
        ok &= ~trials["diverged"].fillna(False).astype(bool)
    return trials[ok]


def problems(trials: pd.DataFrame) -> pd.DataFrame:
    """Every trial that `usable` leaves out, with why."""
    bad = trials.drop(usable(trials).index)
    cols = [c for c in ("experiment", "trial_name", "status", "diverged_reason", "error", "problem",
                        "epochs_completed") if c in bad]
    return bad[cols]


def summarize(good: pd.DataFrame, metric: str, margin: float) -> pd.DataFrame:
    """Per group: n, mean, std, Student t 95 % interval, seeds needed for a half-width <= margin, noise floor of
    the dev set, parameters, memory and speed."""
    rows = []
    for group, g in good.groupby("group", sort=False):
        v = g["value"].to_numpy(float)
        lo, hi = stats.t_interval(v)
        blo, bhi = stats.bca_interval(v)
        std = float(v.std(ddof=1)) if len(v) > 1 else np.nan
        needed = stats.seeds_for_halfwidth(std, margin)
        dev_n = g["dev_examples"].median()
        rows.append({
            "group": group, "scenario": g["scenario"].iloc[0], "r": g["r"].iloc[0],
            "experiments": ",".join(sorted(g["experiment"].unique())), "model": g["model"].iloc[0],
            "dataset": g["dataset"].iloc[0], "metric": metric, "n": len(v),
            "seeds": ",".join(str(int(s)) for s in sorted(g["seed"].dropna())),
            "mean": v.mean(), "std": std, "median": float(np.median(v)), "ci95_low": lo, "ci95_high": hi,
            "ci95_halfwidth": (hi - lo) / 2, "bca95_low": blo, "bca95_high": bhi,
            "seeds_for_margin": needed, "more_seeds": max(0, needed - len(v)) if needed else None,
            "dev_examples": dev_n,
            "noise_floor_se": stats.binomial_se(v.mean(), dev_n) if "accuracy" in metric else np.nan,
            "trainable_params": g["trainable_params"].median(), "params_relative_pct": g["params_relative_pct"].median(),
            "peak_memory_mb": g["peak_memory_mb"].median(), "memory_kind": g["memory_kind"].iloc[0],
            "saved_activations_mb": g["saved_activations_mb"].median() if "saved_activations_mb" in g else np.nan,
            "trainable_state_mb": g["trainable_state_mb"].median() if "trainable_state_mb" in g else np.nan,
            "train_samples_per_s": g["mean_train_samples_per_s"].median(),
        })
    if not rows:
        return pd.DataFrame(columns=["group", "n", "mean", "ci95_low", "ci95_high", "params_relative_pct"])
    return pd.DataFrame(rows).sort_values("mean", ascending=not higher_is_better(metric), ignore_index=True)


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
    hint = f"scenario {reference} has several groups: {', '.join(matching)}" if matching else \
        f"groups: {', '.join(labels)}"
    raise ReportInputError(f"--reference: no single group {reference!r}; pick one ({hint})")


@dataclass(frozen=True)
class Readout:
    """Everything the report shows, computed once."""

    opts: ReportOptions
    trials: pd.DataFrame
    good: pd.DataFrame
    summary: pd.DataFrame
    comparisons: pd.DataFrame
    design: Design
    dropped: int
    reference: str | None
    selection: pd.DataFrame | None  # with --select: every candidate per placement, the chosen ones marked
    read: tuple[int, int]  # (trials, experiments) as read, before duplicates were dropped


def read_out(trials: pd.DataFrame, epochs: pd.DataFrame, opts: ReportOptions) -> Readout:
    """Prepare, (select,) summarize and compare; raises ReportInputError for a bad metric, setting or reference."""
    metric = check_metric(opts.metric or primary_metric(trials), epochs)
    opts = ReportOptions(metric, opts.reference, opts.margin, opts.alpha, opts.select)
    prepared, dropped = prepare(trials, epochs, metric)
    good, selection = usable(prepared), None
    if opts.select:
        good, selection = _select(good, trials, epochs, opts)
    reference = resolve_reference(opts.reference, good)
    summary = summarize(good, metric, opts.margin)
    comparisons, design = compare(good[["group", "seed", "value"]], metric, reference, opts.margin, opts.alpha)
    return Readout(opts, prepared, good, summary, comparisons, design, dropped, reference, selection,
                   (len(trials), trials["experiment"].nunique()))


def _select(good: pd.DataFrame, trials: pd.DataFrame, epochs: pd.DataFrame, opts: ReportOptions):
    unknown = [s for s in opts.select if s not in CONFIGURATION or s not in trials.columns]
    if unknown:
        raise ReportInputError(f"--select: {unknown[0]!r} is not a training setting of these trials "
                               "(e.g. learning_rate, batch_size, epochs)")
    sel = selection_metric(opts.metric)
    values = final_epoch(good, epochs, sel)
    if values.isna().all():
        raise ReportInputError(f"--select: the trials report no {sel} (no selection split): choosing on the dev "
                               "set would bias the very numbers it reports; add data.selection to the spec")
    return select_settings(good.assign(sel_value=values), list(opts.select), higher_is_better(opts.metric))


SUMMARY_SHOWN = ["group", "n", "mean", "std", "ci95_low", "ci95_high", "noise_floor_se", "more_seeds",
                 "params_relative_pct", "peak_memory_mb", "saved_activations_mb", "trainable_state_mb",
                 "train_samples_per_s"]
COMPARISON_SHOWN = ["a", "b", "verdict", "test", "n_seeds", "delta", "ci_low", "ci_high", "p_holm", "p_tost_holm"]


def _blocks(ro: Readout, figures: dict[str, bytes]) -> list[Block]:
    o, bad = ro.opts, problems(ro.trials)
    studies = ", ".join(sorted(ro.trials["study"].dropna().unique())) or "(no study name)"
    verdicts = ro.comparisons["verdict"].value_counts().to_dict() if not ro.comparisons.empty else {}
    blocks = [
        Block("h1", f"lora-sweep report: {studies}"),
        Block("p", f"{ro.read[0]} trials in {ro.read[1]} experiment(s): {len(ro.good)} "
                   f"analysed in {ro.good['group'].nunique()} group(s) (one group = one configuration), "
                   f"{len(bad)} errored, diverged or flagged (listed below, never averaged in), {ro.dropped} "
                   "duplicate run(s) dropped (the same configuration and seed found more than once: in several "
                   "experiments, or under several scenario names)."),
        Block("h2", "How to read this"),
        Block("p", f"Metric: the final epoch's {o.metric} on the dev set (not the best epoch, which is selected on "
                   "the very set it reports and so is optimistic; best_val_accuracy stays in trials.parquet for "
                   f"reference only). Group intervals: Student t, 95 %. Comparisons: Δ = a − b; an equivalence "
                   f"margin of ±{o.margin:g}; α = {o.alpha:g} with Holm's correction over the "
                   f"{len(ro.comparisons)} comparison(s) tested "
                   f"({'each group vs ' + ro.reference if ro.reference else 'all pairs'}). The interval in each "
                   "sentence is at the level Holm tested that comparison at, so it excludes 0 exactly when the verdict "
                   "is better or worse. noise_floor_se is the binomial standard error of an accuracy on a dev set of "
                   "this size: even when seeds agree, results on this dev set carry that much sampling error."),
        Block("h2", f"{o.metric} per group (final epoch)"),
        Block("table", "summary", table=ro.summary[[c for c in SUMMARY_SHOWN if c in ro.summary]]),
        *_selection_blocks(ro),
        Block("h2", "Design"),
        Block("p", _design_text(ro.design, ro.good)),
    ]
    if ro.design.left_out:
        blocks.append(Block("list", items=tuple(f"{g}: {why}" for g, why in sorted(ro.design.left_out.items()))))
    blocks += [
        Block("h2", "Comparisons"),
        Block("p", ", ".join(f"{verdicts.get(v, 0)} {v}" for v in ("better", "worse", "equivalent", "inconclusive"))
              if verdicts else "Fewer than two groups: nothing to compare."),
        Block("list", items=tuple(ro.comparisons.get("sentence", []))),
        Block("table", "comparisons",
              table=ro.comparisons[[c for c in COMPARISON_SHOWN if c in ro.comparisons]]),
        Block("h2", "Errored, diverged or flagged trials"),
        Block("table", "problems", table=bad),
    ]
    if figures:
        blocks.append(Block("h2", "Figures"))
        blocks += [Block("figure", name, png=png) for name, png in figures.items()]
    return blocks


def _selection_blocks(ro: Readout) -> list[Block]:
    if ro.selection is None:
        return []
    sel = selection_metric(ro.opts.metric)
    return [Block("h2", f"Selection of {', '.join(ro.opts.select)} on the selection split"),
            Block("p", f"Per placement, the value with the best mean final {sel} (rows held out of the train split, "
                       f"never trained on) is chosen; the tables above and below report only the chosen groups, on "
                       f"the dev set, which no choice touched. dev_mean of the candidates not chosen is shown for "
                       "reference only: picking by it would be selection on the reported set."),
            Block("table", "selection", table=ro.selection)]


def _design_text(design: Design, good: pd.DataFrame) -> str:
    fit = design.fit
    if fit is None:
        return ("No blocked fit (no two groups share seeds with residual degrees of freedom): comparisons use the "
                "paired t where seeds are shared, else Welch.")
    seeds = sorted({s for g in fit.groups for s in fit.seeds_of[g]})
    return (f"Seeds are blocks shared by every scenario (repeat k uses the same seed everywhere). The additive model "
            f"group + seed is fitted to {len(fit.groups)} group(s) over {len(seeds)} seed(s), pooled residual "
            f"variance with {fit.df} df, after leaving out any group whose noise differs significantly from the others' "
            "(leave-one-out F test). Comparisons among these groups are contrasts of "
            "that fit (test = blocked); groups left out fall back to the paired t on seed-matched differences, or "
            "Welch when seeds are not shared.")


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


def write_report(trials: pd.DataFrame, epochs: pd.DataFrame, out: Path, opts: ReportOptions = ReportOptions()
                 ) -> list[Path]:
    """report.md, report.html, summary.csv, comparisons.csv and PNG figures into `out`; returns the files."""
    ro = read_out(trials, epochs, opts)
    figures = figures_png(ro, epochs)
    out.mkdir(parents=True, exist_ok=True)
    ro.summary.to_csv(out / "summary.csv", index=False)
    ro.comparisons.to_csv(out / "comparisons.csv", index=False)
    written = [out / "report.md", out / "report.html", out / "summary.csv", out / "comparisons.csv"]
    for name, png in figures.items():
        (out / f"{name}.png").write_bytes(png)
        written.append(out / f"{name}.png")
    blocks = _blocks(ro, figures)
    (out / "report.md").write_text(to_markdown(blocks))
    (out / "report.html").write_text(to_html(blocks, blocks[0].text))
    return written


def cmd_report(args: argparse.Namespace) -> int:
    select = tuple(s.strip() for s in (args.select or "").split(",") if s.strip())
    opts = ReportOptions(metric=args.metric, reference=args.reference, margin=args.margin, select=select)
    try:
        if not opts.margin > 0:
            raise ReportInputError(f"--margin: must be > 0 (got {opts.margin:g}); e.g. 0.005 for half a point")
        trials, epochs = load(Path(args.dir))
        files = write_report(trials, epochs, Path(args.out), opts)
    except (ReportInputError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    print(f"report: {len(files)} files in {args.out} (open {args.out}/report.html)")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="folder with trials.parquet and epochs.parquet (from `analyze`)")
    p.add_argument("--out", required=True, help="folder for report.html, report.md, CSV tables and PNG figures")
    p.add_argument("--metric", help="epoch metric to compare, at each trial's final epoch (default: the task's primary "
                                    "metric the study optimized, e.g. val_mcc for CoLA; val_accuracy for SST-2)")
    p.add_argument("--reference", metavar="GROUP",
                   help="compare every group against this one (a group label such as 'lora_all r=8', or a scenario "
                        "name with one group); default: all pairs")
    p.add_argument("--select", metavar="SETTING[,SETTING]",
                   help="per placement, keep the value of these training settings (e.g. learning_rate) that wins on "
                        "the selection split (data.selection), and report only those groups on the dev set")
    p.add_argument("--margin", type=float, default=0.005,
                   help="equivalence margin in the metric's units (default 0.005 = 0.5 accuracy points)")


def register(sub) -> None:
    p = sub.add_parser("report", help="statistics, verdicts and figures from analyze's Parquet files",
                       description="One group per configuration: n, mean, Student t 95 %% interval of the final "
                                   "epoch's metric, seeds needed for the margin, the dev set's noise floor; "
                                   "comparisons that use the design (seeds as blocks; paired t or Welch where it "
                                   "cannot), Holm-corrected, with TOST equivalence and one verdict each (better, "
                                   "worse, equivalent, inconclusive). Writes report.html (self-contained), "
                                   "report.md, summary.csv, comparisons.csv and PNG figures.")
    add_arguments(p)
    p.set_defaults(func=cmd_report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__)
    add_arguments(parser)
    return cmd_report(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
