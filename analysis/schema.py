"""Explicit Arrow schemas of trials.parquet, epochs.parquet and predictions.parquet (bump SCHEMA_VERSION on any
change: tests/test_schema.py pins the schemas' fingerprint to it), and the keys of their file metadata."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa

from record.fields import ARROW, NAMES, PROVENANCE_ARROW
from record.metrics import EPOCH_COLUMNS, TRIAL_METRIC_COLUMNS
from record.predictions import SCHEMA as TRIAL_PREDICTIONS

SCHEMA_VERSION = "10"  # 2: selection split (sel_* metrics, selection_* config), divergence columns;
# 3: val_examples/sel_examples, saved_activations_mb and trainable_state_mb (device-independent memory),
#    compute_dtype; 4: tasks: column mapping, task, label names and primary_metric config;
#    f1/mcc/mse/pearson/spearman epoch metrics; 5: LoRA method and loraplus_lr_ratio,
#    the trial's resources; 6: stage and selected (tune, then confirm), status STOPPED and stopped_at_epoch;
#    7: GPU memory per epoch (peak_reserved_mb, process_device_mb), fp16's skipped_steps;
#    8: looks (the sequential design's planned looks, `repeats: {until: decided}`); predictions.parquet;
#    9: final_*/best_* of every split metric (final_val_mcc, best_sel_f1, ...: record.metrics.TRIAL_METRIC_COLUMNS),
#       the training node's provenance (record.fields.PROVENANCE); the analysing machine's versions under
#       ANALYSIS_VERSIONS_KEY (before: lora_sweep.versions); 10: budget (`lora.budgets`: the adapter parameters
#       the ranks were chosen for; rank_pattern then holds {component@layer: r + 1})

# Config keys of a lora-sweep grid point and their Arrow types: the trial record's declaration (record.fields),
# which training's TrialConfig lists field by field too (tests/test_trial_config.py).
CONFIG_FIELDS: list[tuple[str, pa.DataType]] = ARROW
CONFIG_NAMES = list(NAMES)

TRIALS_SCHEMA = pa.schema([
    ("experiment", pa.string()), ("trial_id", pa.string()), ("trial_dir", pa.string()), ("status", pa.string()),
    ("error", pa.string()), ("problem", pa.string()),
    *CONFIG_FIELDS,
    ("config_extra", pa.string()),  # JSON of config keys this schema does not know
    # final_*: the last finished epoch's; null for a diverged trial (it has no final result), which has
    # diverged = true and diverged_reason such as "train loss nan at epoch 2 step 5 (lr=1e12)"
    # best_*: the best epoch's (optimistic on the set it reports; never used for a verdict). Every split and metric:
    # final_val_accuracy, final_val_mcc, ..., best_sel_spearman (null where the task or the split has none)
    *((column, pa.float64()) for column, _, _ in TRIAL_METRIC_COLUMNS),
    ("final_train_loss", pa.float64()), ("epochs_completed", pa.int32()), ("trainable_params", pa.int64()),
    ("total_params", pa.int64()), ("params_relative_pct", pa.float64()), ("peak_memory_mb", pa.float64()),
    ("memory_kind", pa.string()), ("peak_reserved_mb", pa.float64()), ("process_device_mb", pa.float64()),
    ("saved_activations_mb", pa.float64()), ("trainable_state_mb", pa.float64()),
    ("compute_dtype", pa.string()), ("mean_train_samples_per_s", pa.float64()), ("total_time_s", pa.float64()),
    ("hostname", pa.string()), ("node_ip", pa.string()), ("node_id", pa.string()), ("num_restarts", pa.int32()),
    ("last_checkpoint", pa.string()), ("diverged", pa.bool_()), ("diverged_reason", pa.string()),
    # status STOPPED: the tuning stage's early stopping (ASHA) ended it after stopped_at_epoch of its epochs
    ("stopped_at_epoch", pa.int32()),
    # the training node's versions, device and lora-sweep commit (null: not known there, or an older record)
    *PROVENANCE_ARROW,
])

EPOCH_METRICS = EPOCH_COLUMNS
EPOCHS_SCHEMA = pa.schema([
    ("experiment", pa.string()), ("trial_id", pa.string()), ("scenario", pa.string()), ("r", pa.int32()),
    ("repeat", pa.int32()), ("seed", pa.int64()), *EPOCH_METRICS,
])

# One row per trial and example of its eval split: the trial's last finished epoch's predictions (record.predictions:
# label and prediction are class ids, or a regression's target and value; score the probability of class 1 with two
# classes, of the predicted class with more, a regression's value). experiment and trial_id are dictionary-encoded:
# millions of rows share a few thousand values (pandas reads them as categoricals).
KEY = pa.dictionary(pa.int32(), pa.string())
PREDICTIONS_SCHEMA = pa.schema([("experiment", KEY), ("trial_id", KEY), *TRIAL_PREDICTIONS])


# File metadata of all three files: the schema version, the experiments and studies, and the versions of the
# machine that ran `analyze` (the training nodes' are the provenance columns of trials.parquet).
SCHEMA_VERSION_KEY, ANALYSIS_VERSIONS_KEY = "lora_sweep.schema_version", "lora_sweep.analysis_versions"
LEGACY_VERSIONS_KEY = "lora_sweep.versions"  # the same, in files of schema versions before 9


def analysis_versions(metadata: dict[bytes, bytes] | None) -> dict[str, str]:
    """The analysing machine's package versions from a Parquet file's metadata, new key or old; {} where none."""
    meta = metadata or {}
    raw = meta.get(ANALYSIS_VERSIONS_KEY.encode()) or meta.get(LEGACY_VERSIONS_KEY.encode())
    return json.loads(raw) if raw else {}


def _type_text(t: pa.DataType) -> str:
    """A type's name that does not change with pyarrow's spelling of it (a list's child field name, etc.)."""
    if pa.types.is_list(t):
        return f"list<{_type_text(t.value_type)}>"
    if pa.types.is_dictionary(t):
        return f"dictionary<{_type_text(t.index_type)},{_type_text(t.value_type)}>"
    return str(t)


def fingerprint() -> str:
    """sha256 of the three schemas' column names, types and nullability, in order: a test pins it to
    SCHEMA_VERSION, so a changed schema without a version bump fails."""
    text = "\n".join(f"{label}.{f.name}:{_type_text(f.type)}:{f.nullable}" for label, schema in (
        ("trials", TRIALS_SCHEMA), ("epochs", EPOCHS_SCHEMA), ("predictions", PREDICTIONS_SCHEMA)) for f in schema)
    return hashlib.sha256(text.encode()).hexdigest()
