"""Figures of the report. Each function takes frames and returns a matplotlib Figure; nothing is computed here
beyond what drawing needs (statistics come from `report.summarize` and `compare.compare`)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; no display on a cluster node or in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402
from matplotlib.transforms import ScaledTranslation  # noqa: E402
from scipy.stats import gaussian_kde  # noqa: E402

from record.fields import count_text  # noqa: E402
from record.metrics import higher_is_better  # noqa: E402

from .compare import reversed_verdict  # noqa: E402
from .groups import has_budgets  # noqa: E402
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


MARKERS = "osD^vP*Xph<>"
FRONT = "Pareto front (group means)"


def accuracy_vs_params(summary: pd.DataFrame, metric: str):
    """Group means (95 % t interval) against % trainable parameters; the Pareto front through the means.

    Each group has its own colour and marker, named in a legend beside the axes (never a label that wanders off
    them); groups at the same % of parameters (upper, lower, even of one rank) stand side by side, a few points
    apart on screen, their x in data units unchanged."""
    x, y = summary["params_relative_pct"].to_numpy(float), summary["mean"].to_numpy(float)
    err = np.vstack([y - summary["ci95_low"].to_numpy(float), summary["ci95_high"].to_numpy(float) - y])
    err = np.clip(np.nan_to_num(err), 0, None)  # no interval (undetermined spread): no bar; never a negative one
    groups = list(summary["group"])
    fig, ax = plt.subplots(figsize=(10, 5), layout="constrained")
    colors = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20").colors
    for i, (label, dx) in enumerate(zip(groups, _dodge(x))):
        shift = ax.transData + ScaledTranslation(dx / 72, 0, fig.dpi_scale_trans)
        ax.errorbar(x[i], y[i], yerr=err[:, i:i + 1], fmt=MARKERS[i % len(MARKERS)], capsize=3, ms=6,
                    color=colors[i % len(colors)], transform=shift, label=label)
    finite = np.isfinite(x) & np.isfinite(y) & (x > 0)  # shifted artists do not extend the axes: the data does
    ax.update_datalim(np.column_stack([np.r_[x, x][np.r_[finite, finite]],
                                       np.r_[y - err[0], y + err[1]][np.r_[finite, finite]]]))
    front = pareto_front(x, y if higher_is_better(metric) else -y)  # an MSE front runs along the lowest means
    order = np.argsort(x[front])
    ax.plot(x[front][order], y[front][order], "r--", lw=1, label=FRONT)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(_percent))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.08)
    ax.set_xlabel("trainable parameters, % of full fine-tuning (log scale)")
    ax.set_ylabel(f"mean final {metric}\n(bars: 95 % t interval)")
    ax.grid(alpha=0.3)
    cols = max(1, int(np.ceil(len(groups) / 24)))  # long legends in columns, so the figure stays readable
    handles = dict(zip(*reversed(ax.get_legend_handles_labels())))  # label -> handle
    names = [*(g for g in groups if g in handles), FRONT]  # the groups in the summary's order, then the front
    fig.legend([handles[n] for n in names], names, loc="outside right upper", fontsize=8,
               ncols=cols, title="group (best mean first)", title_fontsize=8, frameon=False)
    return fig


def accuracy_at_budgets(summary: pd.DataFrame, metric: str):
    """At equal cost: one panel per parameter budget, its placements' means (95 % t interval) best first; the
    groups without a budget (the baselines) as dashed lines across every panel. Points are compared within a
    panel, never across budgets (their placements train the same adapter parameters, within one module's step)."""
    budgeted = summary[summary["budget"].notna()]
    references = summary[summary["budget"].isna()]
    budgets = sorted(budgeted["budget"].astype(int).unique())
    widest = max(budgeted.groupby("budget").size())
    fig, axes = plt.subplots(1, len(budgets), sharey=True, squeeze=False, layout="constrained",
                             figsize=(min(4 + 1.1 * widest * len(budgets), 18), 5.5))
    colors = plt.get_cmap("tab10").colors
    for ax, budget in zip(axes[0], budgets):
        part = budgeted[budgeted["budget"].astype(int) == budget]
        part = part.sort_values("mean", ascending=not higher_is_better(metric))
        y = part["mean"].to_numpy(float)
        err = np.clip(np.nan_to_num(np.vstack([y - part["ci95_low"].to_numpy(float),
                                               part["ci95_high"].to_numpy(float) - y])), 0, None)
        ax.errorbar(np.arange(len(part)), y, yerr=err, fmt="o", capsize=3, ms=6, color="black")
        suffix = f" b={count_text(budget)}"
        ax.set_xticks(np.arange(len(part)), [g.removesuffix(suffix) for g in part["group"]], rotation=35,
                      ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(part) - 0.4)
        ax.set_title(f"{count_text(budget)} adapter parameters", fontsize=9)
        for i, (_, ref) in enumerate(references.iterrows()):
            ax.axhline(ref["mean"], ls="--", lw=1, color=colors[i % len(colors)], label=ref["group"])
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(f"mean final {metric}\n(bars: 95 % t interval)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=8, title="without a budget",
                   title_fontsize=8, frameon=False)
    return fig


def _dodge(x: np.ndarray, step: float = 7.0) -> np.ndarray:
    """Horizontal offsets in points that set groups at (nearly) the same x side by side, centred on it."""
    key = np.round(np.log10(np.where(x > 0, x, np.nan)), 3)
    out = np.zeros(len(x))
    for k in pd.unique(key[~np.isnan(key)]):
        same = np.flatnonzero(key == k)
        out[same] = (np.arange(len(same)) - (len(same) - 1) / 2) * step
    return out


def memory_basis(trials: pd.DataFrame) -> str | None:
    """What the per-layer memory figure draws, by the report's one rule: "gpu" (peak allocated and reserved) where
    every single-layer trial ran on a GPU; else "exact" (saved activations + trainable state) where every one has
    the exact figures; else None: CPU process RSS growth depends on the order trials ran in reused workers, so no
    per-layer figure is drawn from it."""
    single = _single_layer(trials)
    if single.empty:
        return None
    if "memory_kind" in single and single["memory_kind"].eq("cuda_allocated").all() \
            and single["peak_memory_mb"].notna().any():
        return "gpu"
    exact = single.get("saved_activations_mb")
    return "exact" if exact is not None and exact.notna().all() else None


def _single_layer(trials: pd.DataFrame) -> pd.DataFrame:
    if "layers" not in trials or trials.empty:
        return trials.iloc[0:0]
    baseline = trials["baseline"].isna() if "baseline" in trials else True
    return trials[trials["layers"].map(lambda v: v is not None and len(v) == 1) & baseline]


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

    The report's memory rule (`memory_basis`): on a GPU the measured peaks, allocated (solid) and reserved (dashed,
    where recorded); elsewhere the exact figures, bytes saved for backward plus trainable state (weights, grads,
    AdamW moments); never CPU process RSS growth, which depends on the order trials ran in reused Ray workers."""
    basis = memory_basis(trials)
    if basis is None:
        return None
    single = _single_layer(trials)
    single = single.assign(layer=single["layers"].map(lambda v: int(v[0])))
    if basis == "exact":
        state = single["trainable_state_mb"] if "trainable_state_mb" in single else 0.0
        lines = {"": single["saved_activations_mb"] + pd.Series(state, index=single.index).fillna(0)}
        ylabel = "MB saved for backward + trainable state (exact)"
    else:
        lines = {"allocated": single["peak_memory_mb"]}
        if "peak_reserved_mb" in single and single["peak_reserved_mb"].notna().any():
            lines["reserved"] = single["peak_reserved_mb"]
        ylabel = "GPU peak memory, MB (solid: allocated, dashed: reserved)"
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for (what, values), style in zip(lines.items(), ("-", "--")):
        frame = single.assign(memory=values)
        for i, (gc, g) in enumerate(frame.groupby("gradient_checkpointing")):
            curve = g.groupby("layer")["memory"].median()
            ax.plot(curve.index, curve.to_numpy(), style, marker="o", color=f"C{i}",
                    label=f"{what + ', ' if what else ''}gradient checkpointing {'on' if gc else 'off'}")
    ax.set_xlabel("adapted layer")
    ax.set_ylabel(ylabel)
    ax.set_title("Memory when adapting a single layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def forest(comparisons: pd.DataFrame, reference: str | list[str], margin: float, metric: str):
    """Each group's difference vs the reference with its simultaneous interval, 0 and the ±margin band. Several
    references (one per budget: each budget's best): every row names its own, `group − reference`."""
    refs = [reference] if isinstance(reference, str) else list(reference)
    rows = comparisons[comparisons["a"].isin(refs) | comparisons["b"].isin(refs)]
    first = rows["a"].isin(refs).to_numpy()
    flip = np.where(first, -1.0, 1.0)  # always group - reference
    names = np.where(first, rows["b"], rows["a"])
    if len(refs) > 1:
        names = np.array([f"{n} − {r}" for n, r in zip(names, np.where(first, rows["a"], rows["b"]))])
    delta = rows["delta"].to_numpy(float) * flip
    lo = np.where(flip > 0, rows["ci_low"], -rows["ci_high"].to_numpy(float)).astype(float)
    hi = np.where(flip > 0, rows["ci_high"], -rows["ci_low"].to_numpy(float)).astype(float)
    order = np.argsort(delta)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.6))
    ax.axvspan(-margin, margin, color="tab:blue", alpha=0.12, label=f"±{margin:g} equivalence margin")
    ax.axvline(0, color="black", lw=0.8)
    colors = {"better": "tab:green", "worse": "tab:red", "equivalent": "tab:blue", "inconclusive": "gray"}
    verdicts = [(reversed_verdict(v) if a in refs else v).split(",")[0]  # read as "group vs reference"
                for v, a in zip(rows["verdict"], rows["a"])]
    for pos, i in enumerate(order):
        err = [[delta[i] - lo[i]], [hi[i] - delta[i]]] if lo[i] == lo[i] else None
        ax.errorbar(delta[i], pos, xerr=err, fmt="o", capsize=3, color=colors.get(verdicts[i], "gray"))
    ax.set_yticks(range(len(order)), [names[i] for i in order])
    level = rows["ci_level"].iloc[0] if "ci_level" in rows and len(rows) else float("nan")
    against = refs[0] if len(refs) == 1 else "each budget's best group"
    ax.set_xlabel(f"Δ final {metric} vs {against} (bars: {100 * level:.3g} % simultaneous intervals; colour: "
                  "verdict)")
    ax.set_title(f"Difference from {against}")
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
            "accuracy_vs_params": accuracy_at_budgets(summary, metric) if has_budgets(summary)
            else accuracy_vs_params(summary, metric),
            "loss_curves": loss_curves(good, epochs, order)}
    if not comparisons.empty:
        focal = reference or order[0]
        if reference is None and "compare_key" in summary and summary["compare_key"].nunique() > 1:
            focal = list(summary.drop_duplicates("compare_key")["group"])  # each budget's best (summary: best first)
        figs["forest"] = forest(comparisons, focal, margin, metric)
    mem = memory_by_layer(good)
    if mem is not None:
        figs["memory_by_layer"] = mem
    return figs
