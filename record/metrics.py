"""The one table of metrics: which metrics a task reports, which way is better, the step a metric moves in, the
split prefixes, and what marks a diverged report. Training (what Ray Tune optimizes, what a trial reports),
the Parquet schema and the report (which columns `--metric` accepts, how comparisons rank, which way a plot
draws its front) all read it."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

CLASSIFICATION, REGRESSION = "classification", "regression"
SPLIT_PREFIXES = ("val_", "sel_")  # dev set (reported) and selection split (held out of train, chosen on)
DEV, SELECTION = SPLIT_PREFIXES
LEGACY_PRIMARY = "val_accuracy"  # the primary metric of experiments made before studies named theirs (SST-2)
DIVERGED = "diverged"  # a report with `diverged: true` (and `diverged_reason`) ends a trial: not an epoch
FINAL, BEST = "final_", "best_"  # trials.parquet: a metric at the last finished epoch / its best over the epochs


@dataclass(frozen=True)
class Metric:
    """A metric as it is measured on any split."""

    name: str
    task: str | None  # the task whose metrics these are; None: every task (the loss)
    higher_is_better: bool
    steps_of_one_example: bool  # moves in steps of exactly 1/examples (accuracy): its resolution is known


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("accuracy", CLASSIFICATION, True, True),
    Metric("f1", CLASSIFICATION, True, False),  # f1 of label 1 with two labels, macro-averaged with more
    Metric("mcc", CLASSIFICATION, True, False),  # uneven steps: ties are treated as an undetermined spread
    Metric("mse", REGRESSION, False, False),
    Metric("pearson", REGRESSION, True, False),
    Metric("spearman", REGRESSION, True, False),
    Metric("loss", None, False, False),
)}
# Which metrics each task computes, in report order: the one declaration (tune_jobs.train.task_metrics.compute
# computes these, each by its own function; the schema's columns, the spec's `data.metric` choices follow from it).
TASK_METRICS: dict[str, tuple[str, ...]] = {
    task: tuple(m.name for m in METRICS.values() if m.task == task) for task in (CLASSIFICATION, REGRESSION)}
DEFAULT_METRIC = {CLASSIFICATION: "accuracy", REGRESSION: "pearson"}
ALL_TASK_METRICS = tuple(m.name for m in METRICS.values() if m.task is not None)


def is_diverged(report: dict | None) -> bool:
    """A report that ends its trial because a loss turned NaN/inf: never an epoch, never a result to average."""
    return bool((report or {}).get(DIVERGED))


def metric_of(column: str) -> Metric | None:
    """The metric a column holds (`val_mcc`, `sel_accuracy`, `final_val_loss`, `best_val_f1`, `train_loss`,
    `accuracy`), or None."""
    name = column.removeprefix(FINAL).removeprefix(BEST)
    for prefix in (*SPLIT_PREFIXES, "train_"):  # train_loss is a loss too, though never a comparison's metric
        name = name.removeprefix(prefix)
    return METRICS.get(name)


def is_split_metric(column: str) -> bool:
    """A per-split metric column a comparison may use: `val_*` or `sel_*` of a known metric."""
    return column.startswith(SPLIT_PREFIXES) and metric_of(column) is not None


def higher_is_better(column: str) -> bool:
    """Losses and squared errors go down; accuracy, F1, MCC and correlations go up. ValueError for a name that is
    no metric's: callers pass names already checked (a spec's `data.metric`, the report's `--metric`: an
    InputError there), so an unknown one is a programming error, never silently ranked as higher-is-better."""
    metric = metric_of(column)
    if metric is None:
        raise ValueError(f"{column!r} is not a metric column (known metrics: {', '.join(METRICS)})")
    return metric.higher_is_better


def on_split(prefix: str, column: str) -> str:
    """The same metric on another split: on_split(SELECTION, "val_mcc") == "sel_mcc"."""
    for p in SPLIT_PREFIXES:
        if column.startswith(p):
            return prefix + column.removeprefix(p)
    return prefix + column


def primary_metric(config: dict) -> str:
    """The epoch metric a trial's study optimized (`val_mcc` for CoLA); LEGACY_PRIMARY for older experiments."""
    return config.get("primary_metric") or LEGACY_PRIMARY


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


def split_metric_names(prefix: str) -> tuple[str, ...]:
    """Every metric column a split reports, loss first: val_loss, val_accuracy, ..., val_spearman."""
    return (f"{prefix}loss", *(f"{prefix}{m}" for m in ALL_TASK_METRICS))


def _split_columns(prefix: str) -> list[tuple[str, pa.DataType]]:
    return [*((name, pa.float64()) for name in split_metric_names(prefix)), (f"{prefix}examples", pa.int64())]


# Every column of an epoch report (a trial's `on_epoch` metrics plus what Ray Tune adds), with its Arrow type:
# epochs.parquet's schema. val_* on the dev split; sel_* on the selection split, only when the study has one; the
# task's metrics only (classification: accuracy, f1, mcc; regression: mse, pearson, spearman).
EPOCH_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("epoch", pa.int32()), ("train_loss", pa.float64()), *_split_columns(DEV), *_split_columns(SELECTION),
    ("train_samples_per_s", pa.float64()), ("epoch_time_s", pa.float64()), ("peak_memory_mb", pa.float64()),
    ("memory_kind", pa.string()),  # peak_memory_mb is cuda_allocated (tensors) or cpu_rss (growth of peak RSS)
    # on a GPU, per epoch: what the caching allocator held at most, and the process's whole share of the device
    # (CUDA context included; NVML, null where it cannot tell): what trials sharing a GPU compete for
    ("peak_reserved_mb", pa.float64()), ("process_device_mb", pa.float64()),
    ("compute_dtype", pa.string()),  # what `precision` resolved to on that machine: bf16 / fp16 (autocast) or fp32
    ("skipped_steps", pa.int32()),  # fp16 only: optimizer steps the loss scaler skipped (overflowing gradients)
    # exact and device-independent: tensors saved for backward (peak over steps) and weights + grads + AdamW state
    ("saved_activations_mb", pa.float64()), ("trainable_state_mb", pa.float64()), ("trainable_params", pa.int64()),
    ("total_params", pa.int64()), ("params_relative_pct", pa.float64()), ("padding_efficiency", pa.float64()),
    ("checkpoint_mb", pa.float64()),
    # added by Ray Tune to every report
    ("training_iteration", pa.int32()), ("time_total_s", pa.float64()), ("timestamp", pa.int64()),
    ("hostname", pa.string()), ("node_ip", pa.string()), ("node_id", pa.string()),
]
# What TensorBoard's HParams table links to a trial: every split metric, train loss, size, memory and speed.
SUMMARY_METRICS: tuple[str, ...] = (*split_metric_names(DEV), *split_metric_names(SELECTION), "train_loss",
                                    "trainable_params", "params_relative_pct", "peak_memory_mb", "train_samples_per_s")


def _trial_metric_columns() -> tuple[tuple[str, str, str], ...]:
    out = []
    for kind in (FINAL, BEST):
        for prefix in SPLIT_PREFIXES:
            out.extend((f"{kind}{name}", name, kind) for name in split_metric_names(prefix))
    return tuple(out)


# trials.parquet's metric columns, derived (never listed): (column, epoch column, FINAL | BEST) for every split and
# every metric any task reports, loss first: final_val_loss, final_val_accuracy, ..., final_val_mcc, ...,
# final_sel_spearman, best_val_loss, ..., best_sel_spearman. final_*: the last finished epoch's value (null for a
# diverged trial); best_*: the best over finished epochs in the metric's direction (optimistic when measured on the
# set it reports: never a verdict's metric). A metric another task reports is null.
TRIAL_METRIC_COLUMNS: tuple[tuple[str, str, str], ...] = _trial_metric_columns()
