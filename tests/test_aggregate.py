"""trials.parquet / epochs.parquet rows of a trial with a selection split, and of a diverged trial."""

import pyarrow as pa

from analysis.aggregate import epoch_rows, trial_row
from analysis.load import TrialRecord
from analysis.schema import EPOCHS_SCHEMA, SCHEMA_VERSION, TRIALS_SCHEMA


def epoch(n: int, acc: float, sel: float) -> dict:
    return {"epoch": n, "train_loss": 0.5, "val_loss": 0.4, "val_accuracy": acc, "sel_loss": 0.45,
            "sel_accuracy": sel, "train_samples_per_s": 100.0, "peak_memory_mb": 50.0 + n, "memory_kind": "cpu_rss",
            "trainable_params": 1000, "total_params": 10 ** 6, "params_relative_pct": 0.1, "time_total_s": 2.0 * n}


def record(name: str, results: list[dict]) -> TrialRecord:
    config = {"trial_name": name, "scenario": name.split("-")[0], "r": 8, "repeat": 0, "seed": 42,
              "learning_rate": 1e-3, "selection_rows": 872, "selection_seed": 42, "selection_fraction": None}
    return TrialRecord(experiment="exp", trial_id=name, trial_dir=f"/x/{name}", status="TERMINATED", config=config,
                       results=results)


def test_selection_and_divergence_columns():
    ok = record("ok-r8-lr1e-3-rep0", [epoch(1, 0.8, 0.75), epoch(2, 0.85, 0.82)])
    reason = "train loss nan at epoch 2 step 3 (lr=1e12)"
    boom = record("boom-r8-lr1e12-rep0", [epoch(1, 0.7, 0.71), {
        "epoch": 2, "diverged": True, "diverged_reason": reason, "val_accuracy": None, "peak_memory_mb": 90.0,
        "memory_kind": "cpu_rss", "trainable_params": 1000, "total_params": 10 ** 6, "params_relative_pct": 0.1}])
    rows = [trial_row(ok), trial_row(boom)]
    table = pa.Table.from_pylist(rows, schema=TRIALS_SCHEMA)  # the explicit schema takes the new columns
    good, bad = table.to_pylist()
    assert (good["final_val_accuracy"], good["final_sel_accuracy"], good["diverged"]) == (0.85, 0.82, False)
    assert good["diverged_reason"] is None and good["selection_rows"] == 872 and good["epochs_completed"] == 2
    assert bad["diverged"] is True and bad["diverged_reason"] == reason
    assert bad["final_val_accuracy"] is None and bad["final_sel_accuracy"] is None  # never averaged in
    assert bad["final_train_loss"] is None and bad["best_val_accuracy"] == 0.7 and bad["epochs_completed"] == 1
    assert bad["trainable_params"] == 1000 and bad["peak_memory_mb"] == 90.0  # from the diverged report too
    epochs = pa.Table.from_pylist(epoch_rows(ok) + epoch_rows(boom), schema=EPOCHS_SCHEMA).to_pylist()
    assert [(e["trial_id"], e["epoch"]) for e in epochs] == [(ok.trial_id, 1), (ok.trial_id, 2), (boom.trial_id, 1)]
    assert [e["sel_accuracy"] for e in epochs] == [0.75, 0.82, 0.71]
    assert SCHEMA_VERSION == "4"
