"""Figures of the report. Each function takes frames and returns a matplotlib Figure; nothing is computed here
beyond what drawing needs (statistics come from `report.summarize` and `compare.compare`)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; no display on a cluster node or in CI

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import gaussian_kde  # noqa: E402

from record.metrics import higher_is_better  # noqa: E402

from .compare import reversed_verdict  # noqa: E402
from .stats import pareto_front  # noqa: E402


def close(fig) -> None:
    plt.close(fig)


def accuracy_by_scenario(trials: pd.DataFrame, order: list[str], metric: str):
    """The article's figure: the final-epoch metric per group as a strip of runs over a density curve."""
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(order) + 1.5))
    rng = np.random.default_rng(0)
    for i, group in enumerate(order):
        acc = trials.loc[trials["group"] == group, "value"].to_numpy(float)
        if len(acc) > 1 and np.ptp(acc) > 0:
            xs = np.linspace(acc.min() - 0.01, acc.max() + 0.01, 200)
            dens = gaussian_kde(acc)(xs)
            ax.fill_between(xs, i, i + 0.8 * dens / dens.max(), alpha=0.3)
        ax.scatter(acc, i + rng.uniform(-0.12, 0.12, len(acc)), s=18, color="black", zorder=3)
        ax.plot([acc.mean()] * 2, [i - 0.25, i + 0.25], color="red", lw=2)
    ax.set_yticks(range(len(order)), order)
    ax.set_xlabel(f"final {metric} (dots: runs, red: mean, shade: density)")
    ax.set_title(f"{metric} by group")
    ax.grid(axis="x", alpha=0.3)
    return fig


def _percent(x: float, _pos=None) -> str:
    return f"{x:.2g} %" if x < 1 else f"{x:.3g} %"


def accuracy_vs_params(summary: pd.DataFrame, metric: str):
    """Group means (95 % t interval) against % trainable parameters; the Pareto front through the means."""
    fig, ax = plt.subplots(figsize=(8, 5))
    x, y = summary["params_relative_pct"].to_numpy(float), summary["mean"].to_numpy(float)
    err = np.vstack([y - summary["ci95_low"].to_numpy(float), summary["ci95_high"].to_numpy(float) - y])
    err = np.clip(np.nan_to_num(err), 0, None)  # no interval (undetermined spread): no bar; never a negative one
    ax.errorbar(x, y, yerr=err, fmt="o", capsize=3)
    front = pareto_front(x, y if higher_is_better(metric) else -y)  # an MSE front runs along the lowest means
    order = np.argsort(x[front])
    ax.plot(x[front][order], y[front][order], "r--", label="Pareto front (group means)")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(_percent))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("trainable parameters, % of full fine-tuning (log scale)")
    ax.set_ylabel(f"mean final {metric} (bars: 95 % t interval)")
    ax.legend()
    ax.grid(alpha=0.3)
    place_labels(ax, x, y, list(summary["group"]))
    return fig


def place_labels(ax, x: np.ndarray, y: np.ndarray, labels: list[str], fontsize: int = 8) -> list:
    """Label each point without overprinting: a label that would overlap one already placed moves down (then up) in
    steps of its own height, with a thin leader line to its point. Returns the text artists."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    placed, texts = [], []
    for i in np.argsort(-np.asarray(y, dtype=float), kind="stable"):
        text = ax.annotate(labels[i], (x[i], y[i]), textcoords="offset points", xytext=(5, 3), fontsize=fontsize,
                           va="bottom", arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5})
        box = text.get_window_extent(renderer)
        step = box.height * 72 / fig.dpi + 1  # one line, in points
        for k in range(1, 60):
            if not any(box.overlaps(other) for other in placed):
                break
            shift = step * ((k + 1) // 2) * (-1 if k % 2 else 1)  # down 1, up 1, down 2, up 2, ...
            text.set_position((5, 3 + shift))
            box = text.get_window_extent(renderer)
        placed.append(box)
        texts.append(text)
    return texts


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
    """Memory of single-layer trials by adapted layer, gradient checkpointing off and on; None if no such trials.

    On a GPU: the measured peak (torch.cuda.max_memory_allocated). On a CPU, where process RSS mostly shows the
    allocator: the exact figures, bytes saved for backward plus trainable state (weights, grads, AdamW moments)."""
    single = trials[trials["layers"].map(lambda v: v is not None and len(v) == 1) & trials["baseline"].isna()]
    exact = single.get("saved_activations_mb")
    cpu = not single.empty and (single["memory_kind"] == "cpu_rss").all()
    if cpu and exact is not None and exact.notna().all():
        single = single.assign(memory=exact + single["trainable_state_mb"].fillna(0))
        ylabel = "MB saved for backward + trainable state (exact)"
    else:
        single = single.assign(memory=single["peak_memory_mb"])
        ylabel = f"peak memory, MB ({', '.join(single['memory_kind'].dropna().unique())})"
    if single.empty or single["memory"].isna().all():
        return None
    single = single.assign(layer=single["layers"].map(lambda v: int(v[0])))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for gc, g in single.groupby("gradient_checkpointing"):
        curve = g.groupby("layer")["memory"].median()
        ax.plot(curve.index, curve.to_numpy(), marker="o", label=f"gradient checkpointing {'on' if gc else 'off'}")
    ax.set_xlabel("adapted layer")
    ax.set_ylabel(ylabel)
    ax.set_title("Memory when adapting a single layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def forest(comparisons: pd.DataFrame, reference: str, margin: float, metric: str):
    """Each group's difference vs the reference with its simultaneous interval, 0 and the ±margin band."""
    rows = comparisons[(comparisons["a"] == reference) | (comparisons["b"] == reference)]
    flip = np.where(rows["a"] == reference, -1.0, 1.0)  # always group - reference
    names = np.where(rows["a"] == reference, rows["b"], rows["a"])
    delta = rows["delta"].to_numpy(float) * flip
    lo = np.where(flip > 0, rows["ci_low"], -rows["ci_high"].to_numpy(float)).astype(float)
    hi = np.where(flip > 0, rows["ci_high"], -rows["ci_low"].to_numpy(float)).astype(float)
    order = np.argsort(delta)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.6))
    ax.axvspan(-margin, margin, color="tab:blue", alpha=0.12, label=f"±{margin:g} equivalence margin")
    ax.axvline(0, color="black", lw=0.8)
    colors = {"better": "tab:green", "worse": "tab:red", "equivalent": "tab:blue", "inconclusive": "gray"}
    verdicts = [(reversed_verdict(v) if a == reference else v).split(",")[0]  # read as "group vs reference"
                for v, a in zip(rows["verdict"], rows["a"])]
    for pos, i in enumerate(order):
        err = [[delta[i] - lo[i]], [hi[i] - delta[i]]] if lo[i] == lo[i] else None
        ax.errorbar(delta[i], pos, xerr=err, fmt="o", capsize=3, color=colors.get(verdicts[i], "gray"))
    ax.set_yticks(range(len(order)), [names[i] for i in order])
    level = rows["ci_level"].iloc[0] if "ci_level" in rows and len(rows) else float("nan")
    ax.set_xlabel(f"Δ final {metric} vs {reference} (bars: {100 * level:.3g} % simultaneous intervals; colour: "
                  "verdict)")
    ax.set_title(f"Difference from {reference}")
    ax.legend(loc="best", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return fig


def all_figures(good: pd.DataFrame, epochs: pd.DataFrame, summary: pd.DataFrame, comparisons: pd.DataFrame,
                reference: str | None, margin: float, metric: str) -> dict:
    """Name -> Figure for every plot the data supports (`good`: the analysed trials, with `group` and `value`).
    The forest plot is drawn against the reference, or against the best group when all pairs were compared."""
    if good.empty:
        return {}
    order = list(summary["group"])
    figs = {"accuracy_by_scenario": accuracy_by_scenario(good, order, metric),
            "accuracy_vs_params": accuracy_vs_params(summary, metric),
            "loss_curves": loss_curves(good, epochs, order)}
    if not comparisons.empty:
        figs["forest"] = forest(comparisons, reference or order[0], margin, metric)
    mem = memory_by_layer(good)
    if mem is not None:
        figs["memory_by_layer"] = mem
    return figs
