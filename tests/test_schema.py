"""The Parquet schemas are pinned to their version; trials.parquet's metric columns are derived from the one table of
metrics (a CoLA study gets final_val_mcc), which also says what each task computes; an unknown metric is refused."""

import numpy as np
import pyarrow as pa
import pytest

from analysis.aggregate import trial_row
from analysis.load import TrialRecord
from analysis.schema import (
    SCHEMA_VERSION,
    TRIALS_SCHEMA,
    analysis_versions,
    fingerprint,
)
from record.fields import PROVENANCE_NAMES
from record.metrics import (
    ALL_TASK_METRICS,
    CLASSIFICATION,
    REGRESSION,
    SPLIT_PREFIXES,
    TASK_METRICS,
    TRIAL_METRIC_COLUMNS,
    higher_is_better,
    metric_of,
)

# Changed the schema? Bump SCHEMA_VERSION (analysis/schema.py, with a line saying what changed) and update this
# fingerprint (print analysis.schema.fingerprint()); document new columns in docs/results.md.
PINNED = ("10", "67652dcce0b922bd197afc114fe7db6bdce33b064587f5c9dbfa87ad778bfdde")


def test_the_schemas_fingerprint_is_pinned_to_the_schema_version():
    assert (SCHEMA_VERSION, fingerprint()) == PINNED, \
        "changed the schema? bump SCHEMA_VERSION and update this fingerprint"


def test_every_metric_of_every_task_has_its_final_and_best_columns_on_every_split():
    names = set(TRIALS_SCHEMA.names)
    for task, metrics in TASK_METRICS.items():
        for prefix in SPLIT_PREFIXES:
            for m in ("loss", *metrics):
                assert {f"final_{prefix}{m}", f"best_{prefix}{m}"} <= names, (task, prefix, m)
    # the names users query keep theirs
    assert {"final_val_accuracy", "final_sel_accuracy", "best_val_accuracy", "final_val_loss",
            "final_train_loss"} <= names
    assert {c for c, _, _ in TRIAL_METRIC_COLUMNS} <= names and set(PROVENANCE_NAMES) <= names
    assert all(TRIALS_SCHEMA.field(c).type == pa.float64() for c, _, _ in TRIAL_METRIC_COLUMNS)


def _record(results: list[dict], config: dict | None = None) -> TrialRecord:
    config = {"trial_name": "t", "scenario": "s", "r": 8, "repeat": 0, "seed": 1, "task": CLASSIFICATION,
              "primary_metric": "val_mcc", **(config or {})}
    return TrialRecord(experiment="exp", trial_id="t", trial_dir="/x/t", status="TERMINATED", config=config,
                       results=results)


def test_a_cola_trial_gets_final_and_best_mcc_and_the_best_follows_the_metrics_direction():
    epochs = [{"epoch": 1, "val_loss": 0.5, "val_accuracy": 0.7, "val_mcc": 0.30, "sel_mcc": 0.2},
              {"epoch": 2, "val_loss": 0.6, "val_accuracy": 0.8, "val_mcc": 0.25, "sel_mcc": 0.4}]
    row = pa.Table.from_pylist([trial_row(_record(epochs))], schema=TRIALS_SCHEMA).to_pylist()[0]
    assert ((row["final_val_mcc"], row["best_val_mcc"], row["final_sel_mcc"], row["best_sel_mcc"])
            == (0.25, 0.3, 0.4, 0.4))
    assert (row["final_val_loss"], row["best_val_loss"]) == (0.6, 0.5)  # a loss is best at its lowest
    assert (row["final_val_accuracy"], row["best_val_accuracy"]) == (0.8, 0.8)
    assert row["final_val_pearson"] is None and row["best_val_mse"] is None  # another task's metrics: null
    sts = [{"epoch": 1, "val_mse": 0.9, "val_pearson": 0.5}, {"epoch": 2, "val_mse": 1.2, "val_pearson": 0.6}]
    row = trial_row(_record(sts, {"task": REGRESSION, "primary_metric": "val_pearson"}))
    assert (row["best_val_mse"], row["best_val_pearson"], row["final_val_mse"]) == (0.9, 0.6, 1.2)


def test_a_diverged_trial_has_no_final_metrics_but_its_finished_epochs_best():
    reports = [{"epoch": 1, "val_mcc": 0.2, "val_loss": 0.5},
               {"epoch": 2, "diverged": True, "diverged_reason": "train loss nan", "val_mcc": None}]
    row = trial_row(_record(reports))
    assert row["final_val_mcc"] is None and row["best_val_mcc"] == 0.2 and row["diverged"] is True


def test_an_unknown_metric_is_refused_not_counted_as_higher_is_better():
    for name in ("val_bleu", "bleu", "val_examples", "epoch", ""):
        with pytest.raises(ValueError, match="not a metric"):
            higher_is_better(name)
    assert not higher_is_better("val_loss") and not higher_is_better("final_sel_mse")
    assert higher_is_better("val_mcc") and higher_is_better("best_val_spearman") and not higher_is_better("train_loss")
    assert metric_of("best_sel_f1").name == "f1"


def test_the_trial_computes_exactly_the_metrics_the_table_declares_for_its_task():
    from tune_jobs.train.task_metrics import FUNCTIONS, compute

    assert set(FUNCTIONS) == set(ALL_TASK_METRICS)  # a metric declared without a function fails here
    rng = np.random.default_rng(0)
    for classes in (2, 3):
        labels = rng.integers(0, classes, 50)
        out = compute(CLASSIFICATION, rng.normal(size=(50, classes)), labels)
        assert list(out) == list(TASK_METRICS[CLASSIFICATION]) and all(isinstance(v, float) for v in out.values())
    targets = rng.normal(size=50)
    out = compute(REGRESSION, (targets + rng.normal(size=50)).reshape(-1, 1), targets)
    assert list(out) == list(TASK_METRICS[REGRESSION]) and out["pearson"] > 0.3
    assert compute(REGRESSION, np.ones((50, 1)), targets)["pearson"] is None  # constant: undefined, not NaN


def test_the_analysing_machines_versions_are_read_under_either_key():
    assert analysis_versions({b"lora_sweep.analysis_versions": b'{"ray": "2.50"}'}) == {"ray": "2.50"}
    assert analysis_versions({b"lora_sweep.versions": b'{"ray": "2.9"}'}) == {"ray": "2.9"}  # schema 8 and older
    assert analysis_versions(None) == {}
