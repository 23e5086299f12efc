"""The one table of metrics: which columns are metrics, which way is better, and the step a metric moves in.

Shared by training (which direction Ray Tune optimizes) and analysis (which columns `report --metric` accepts, how
comparisons rank, which way plots draw a front); standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

SPLIT_PREFIXES = ("val_", "sel_")  # dev set (reported) and selection split (held out of train, chosen on)


@dataclass(frozen=True)
class Metric:
    """A task metric as it is measured on any split."""

    name: str
    higher_is_better: bool
    steps_of_one_example: bool  # moves in steps of exactly 1/examples (accuracy): its resolution is known


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("accuracy", True, True),
    Metric("f1", True, False),  # moves in uneven steps; ties are treated as undetermined spread
    Metric("mcc", True, False),
    Metric("mse", False, False),
    Metric("pearson", True, False),
    Metric("spearman", True, False),
    Metric("loss", False, False),
)}


def metric_of(column: str) -> Metric | None:
    """The metric a column holds (`val_mcc`, `sel_accuracy`, `final_val_loss`, bare `accuracy`), or None."""
    name = column.removeprefix("final_")
    for prefix in SPLIT_PREFIXES:
        name = name.removeprefix(prefix)
    return METRICS.get(name)


def is_split_metric(column: str) -> bool:
    """A per-split metric column a comparison may use: `val_*` or `sel_*` of a known metric."""
    return column.startswith(SPLIT_PREFIXES) and metric_of(column) is not None


def higher_is_better(column: str) -> bool:
    """Losses and squared errors go down; accuracy, F1, MCC and correlations go up; unknown names go up."""
    metric = metric_of(column)
    return True if metric is None else metric.higher_is_better


def examples_column(column: str) -> str | None:
    """The epoch column with the size of the split a metric was measured on (`sel_accuracy` -> `sel_examples`)."""
    for prefix in SPLIT_PREFIXES:
        if column.startswith(prefix):
            return f"{prefix}examples"
    return None


def resolution(column: str, examples: float | None) -> float | None:
    """The smallest step the metric can move by on `examples` rows (1/examples for accuracy); None if not known."""
    metric = metric_of(column)
    if metric is None or not metric.steps_of_one_example or not examples or examples != examples or examples <= 0:
        return None
    return 1.0 / float(examples)
