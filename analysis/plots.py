"""Figures of the report. Each function takes frames and returns a matplotlib Figure; nothing is computed here
beyond what drawing needs (statistics come from `report.summarize`)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; no display on a cluster node or in CI

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import gaussian_kde  # noqa: E402

from .stats import pareto_front  # noqa: E402


def close(fig) -> None:
    plt.close(fig)


def accuracy_by_scenario(trials: pd.DataFrame, order: list[str]):
    """The article's figure: final val_accuracy per scenario as a strip of runs over a density curve."""
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(order) + 1.5))
    rng = np.random.default_rng(0)
    for i, group in enumerate(order):
        acc = trials.loc[trials["group"] == group, "final_val_accuracy"].to_numpy()
        if len(acc) > 1 and np.ptp(acc) > 0:
            xs = np.linspace(acc.min() - 0.01, acc.max() + 0.01, 200)
            dens = gaussian_kde(acc)(xs)
            ax.fill_between(xs, i, i + 0.8 * dens / dens.max(), alpha=0.3)
        ax.scatter(acc, i + rng.uniform(-0.12, 0.12, len(acc)), s=18, color="black", zorder=3)
        ax.plot([acc.mean()] * 2, [i - 0.25, i + 0.25], color="red", lw=2)
    ax.set_yticks(range(len(order)), order)
    ax.set_xlabel("final val_accuracy (dots: runs, red: mean, shade: density)")
    ax.set_title("Validation accuracy by scenario")
    ax.grid(axis="x", alpha=0.3)
    return fig


def accuracy_vs_params(summary: pd.DataFrame):
    """Mean accuracy (95 % CI) against % trainable parameters; the Pareto front (fewer params, higher accuracy)."""
    fig, ax = plt.subplots(figsize=(8, 5))
    x, y = summary["params_relative_pct"].to_numpy(float), summary["mean_val_accuracy"].to_numpy(float)
    err = np.vstack([y - summary["ci95_low"].to_numpy(float), summary["ci95_high"].to_numpy(float) - y])
    err = np.nan_to_num(err)
    ax.errorbar(x, y, yerr=err, fmt="o", capsize=3)
    for xi, yi, label in zip(x, y, summary["group"]):
        ax.annotate(label, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
    front = pareto_front(x, y)
    order = np.argsort(x[front])
    ax.plot(x[front][order], y[front][order], "r--", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters, % of full fine-tuning (log)")
    ax.set_ylabel("mean final val_accuracy")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def loss_curves(trials: pd.DataFrame, epochs: pd.DataFrame, order: list[str]):
    """Mean train and validation loss per epoch, one line per scenario."""
    merged = epochs.merge(trials[["experiment", "trial_id", "group"]], on=["experiment", "trial_id"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, metric in zip(axes, ("train_loss", "val_loss")):
        for group in order:
            curve = merged[merged["group"] == group].groupby("epoch")[metric].mean()
            ax.plot(curve.index, curve.to_numpy(), marker="o", ms=3, label=group)
        ax.set_title(metric + " (mean over repeats)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    return fig


def memory_by_layer(trials: pd.DataFrame):
    """Peak memory of single-layer trials by layer, with and without gradient checkpointing; None if no such trials."""
    single = trials[trials["layers"].map(lambda v: v is not None and len(v) == 1) & trials["baseline"].isna()]
    if single.empty or single["peak_memory_mb"].isna().all():
        return None
    single = single.assign(layer=single["layers"].map(lambda v: int(v[0])))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for gc, g in single.groupby("gradient_checkpointing"):
        curve = g.groupby("layer")["peak_memory_mb"].median()
        ax.plot(curve.index, curve.to_numpy(), marker="o", label=f"gradient checkpointing {'on' if gc else 'off'}")
    ax.set_xlabel("adapted layer")
    ax.set_ylabel(f"peak memory, MB ({', '.join(single['memory_kind'].dropna().unique())})")
    ax.set_title("Peak memory when adapting a single layer")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def all_figures(trials: pd.DataFrame, epochs: pd.DataFrame, summary: pd.DataFrame) -> dict:
    """Name -> Figure for every plot the data supports."""
    from .report import usable

    good = usable(trials)
    if good.empty:
        return {}
    order = list(summary["group"])
    figs = {"accuracy_by_scenario": accuracy_by_scenario(good, order),
            "accuracy_vs_params": accuracy_vs_params(summary),
            "loss_curves": loss_curves(good, epochs, order)}
    mem = memory_by_layer(good)
    if mem is not None:
        figs["memory_by_layer"] = mem
    return figs
