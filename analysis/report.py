"""`lora-sweep report`: trials.parquet/epochs.parquet -> summary tables, pairwise comparisons and PNG plots.

    python -m analysis.report DIR --out REPORT_DIR

Load (Parquet) -> summarize (pure pandas, `summarize`/`compare`) -> plot (`plots`, draws only).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .stats import bootstrap_ci, bootstrap_diff_ci, holm, welch_p

EXIT_INPUT = 2
ALPHA = 0.05


def group_labels(trials: pd.DataFrame) -> pd.Series:
    """`scenario`, or `scenario r=8` for scenarios run at several ranks: the unit every table compares."""
    ranks = trials.groupby("scenario")["r"].nunique()
    several = trials["scenario"].map(ranks) > 1
    with_r = trials["scenario"] + " r=" + trials["r"].astype("Int64").astype(str)
    return with_r.where(several, trials["scenario"])


def load(dir_: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    trials_path, epochs_path = dir_ / "trials.parquet", dir_ / "epochs.parquet"
    for p in (trials_path, epochs_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing; run `lora-sweep analyze EXPERIMENT --out {dir_}` first")
    trials = pd.read_parquet(trials_path)
    epochs = pd.read_parquet(epochs_path)
    if trials.empty:
        raise FileNotFoundError(f"{trials_path}: has no trials")
    trials["group"] = group_labels(trials)
    return trials, epochs


def usable(trials: pd.DataFrame) -> pd.DataFrame:
    """Finished trials with an accuracy and no flagged problem; everything else is listed, never averaged in."""
    ok = (trials["status"] == "TERMINATED") & trials["final_val_accuracy"].notna() & trials["problem"].isna()
    return trials[ok]


def summarize(trials: pd.DataFrame) -> pd.DataFrame:
    """Per group (scenario, r): n, mean/std/median and 95 % bootstrap CI of final val_accuracy, params, memory, speed."""
    rows = []
    for group, g in usable(trials).groupby("group", sort=False):
        acc = g["final_val_accuracy"].to_numpy()
        lo, hi = bootstrap_ci(acc)
        rows.append({
            "group": group, "scenario": g["scenario"].iloc[0], "r": g["r"].iloc[0], "n": len(g),
            "mean_val_accuracy": acc.mean(), "std_val_accuracy": acc.std(ddof=1) if len(acc) > 1 else np.nan,
            "median_val_accuracy": float(np.median(acc)), "ci95_low": lo, "ci95_high": hi,
            "trainable_params": g["trainable_params"].median(), "params_relative_pct": g["params_relative_pct"].median(),
            "peak_memory_mb": g["peak_memory_mb"].median(), "memory_kind": g["memory_kind"].iloc[0],
            "train_samples_per_s": g["mean_train_samples_per_s"].median(),
        })
    return pd.DataFrame(rows).sort_values("mean_val_accuracy", ascending=False, ignore_index=True) if rows else \
        pd.DataFrame(columns=["group", "n", "mean_val_accuracy"])


def compare(trials: pd.DataFrame) -> pd.DataFrame:
    """Every pair of groups: difference of means, bootstrap CI, Welch p, Holm-adjusted p and a plain sentence."""
    good = usable(trials)
    groups = {k: g["final_val_accuracy"].to_numpy() for k, g in good.groupby("group", sort=True)}
    rows = []
    for a, b in itertools.combinations(sorted(groups), 2):
        lo, hi = bootstrap_diff_ci(groups[a], groups[b])
        rows.append({"a": a, "b": b, "n_a": len(groups[a]), "n_b": len(groups[b]),
                     "delta": groups[a].mean() - groups[b].mean(), "ci95_low": lo, "ci95_high": hi,
                     "p_welch": welch_p(groups[a], groups[b])})
    if not rows:
        return pd.DataFrame(columns=["a", "b", "delta", "p_holm", "sentence"])
    df = pd.DataFrame(rows)
    df["p_holm"] = holm(df["p_welch"].tolist())
    df["sentence"] = df.apply(_sentence, axis=1)
    return df


def _sentence(row) -> str:
    ci = "CI n/a (fewer than 2 runs)" if np.isnan(row["ci95_low"]) else \
        f"95 % CI [{row['ci95_low']:+.3f}, {row['ci95_high']:+.3f}]"
    if np.isnan(row["p_holm"]):
        verdict = "too few runs to tell"
    elif row["p_holm"] < ALPHA:
        verdict = f"{row['a'] if row['delta'] > 0 else row['b']} is better (Holm p = {row['p_holm']:.3g})"
    else:
        verdict = f"not distinguishable from noise (Holm p = {row['p_holm']:.3g})"
    return f"{row['a']} vs {row['b']}: Δ = {row['delta']:+.3f}, {ci}, {verdict}"


def problems(trials: pd.DataFrame) -> pd.DataFrame:
    bad = trials[(trials["status"] != "TERMINATED") | trials["problem"].notna() | trials["final_val_accuracy"].isna()]
    return bad[["experiment", "trial_name", "status", "error", "problem", "epochs_completed"]]


def _md_table(df: pd.DataFrame, floats: str = "{:.4f}") -> str:
    if df.empty:
        return "(none)\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if isinstance(v, float):
                cells.append("" if np.isnan(v) else floats.format(v))
            else:
                cells.append("" if v is None else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(trials: pd.DataFrame, epochs: pd.DataFrame, out: Path) -> list[Path]:
    """Markdown + CSV tables and PNG plots into `out`; returns the files written."""
    from . import plots

    out.mkdir(parents=True, exist_ok=True)
    summary, pairs, bad = summarize(trials), compare(trials), problems(trials)
    summary.to_csv(out / "summary.csv", index=False)
    pairs.to_csv(out / "comparisons.csv", index=False)
    shown = summary[["group", "n", "mean_val_accuracy", "std_val_accuracy", "median_val_accuracy", "ci95_low",
                     "ci95_high", "params_relative_pct", "peak_memory_mb", "train_samples_per_s"]] \
        if not summary.empty else summary
    studies = ", ".join(sorted(trials["study"].dropna().unique()))
    md = [f"# lora-sweep report: {studies}", "",
          f"{len(trials)} trials in {trials['experiment'].nunique()} experiment(s); {len(usable(trials))} finished "
          f"and analysed, {len(bad)} listed below as errored/flagged (never averaged in).", "",
          "## Validation accuracy per scenario (final epoch)", "",
          "95 % CI: percentile bootstrap of the mean over repeats. Peak memory: median, in MB "
          f"({', '.join(sorted(trials['memory_kind'].dropna().unique())) or 'n/a'}).", "", _md_table(shown),
          "## Pairwise comparisons", "",
          "Difference of mean final val_accuracy, bootstrap 95 % CI, Welch's t-test, Holm-corrected over all pairs.",
          ""]
    md += [f"- {s}" for s in pairs.get("sentence", [])] or ["(fewer than two scenarios)"]
    md += ["", "## Errored or flagged trials", "", _md_table(bad)]
    figures = plots.all_figures(trials, epochs, summary)
    written = [out / "summary.csv", out / "comparisons.csv"]
    if figures:
        md += ["## Figures", ""]
    for name, fig in figures.items():
        path = out / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plots.close(fig)
        written.append(path)
        md.append(f"![{name}]({name}.png)")
    (out / "report.md").write_text("\n".join(md) + "\n")
    return [out / "report.md", *written]


def cmd_report(args: argparse.Namespace) -> int:
    try:
        trials, epochs = load(Path(args.dir))
    except (FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    files = write_report(trials, epochs, Path(args.out))
    print(f"report: {len(files)} files in {args.out} (open {args.out}/report.md)")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="folder with trials.parquet and epochs.parquet (from `analyze`)")
    p.add_argument("--out", required=True, help="folder for report.md, CSV tables and PNG plots")


def register(sub) -> None:
    p = sub.add_parser("report", help="tables, statistics and plots from analyze's Parquet files",
                       description="Per scenario (and rank): n, mean, std, median and 95 %% bootstrap CI of the "
                                   "final val_accuracy, %% trainable parameters, peak memory, samples/s; pairwise "
                                   "comparisons (bootstrap CI, Welch, Holm); PNG plots. Errored trials are listed.")
    add_arguments(p)
    p.set_defaults(func=cmd_report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__)
    add_arguments(parser)
    return cmd_report(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
