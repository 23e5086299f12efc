"""Explicit Arrow schemas of trials.parquet and epochs.parquet (bump SCHEMA_VERSION on any change)."""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "4"  # 2: selection split (sel_* metrics, selection_* config), divergence columns;
# 3: val_examples/sel_examples, saved_activations_mb and trainable_state_mb (device-independent memory),
#    compute_dtype; 4: tasks: column mapping, task, label names and primary_metric config;
#    f1/mcc/mse/pearson/spearman epoch metrics

# Config keys of a lora-sweep grid point and their Arrow types. Declared here rather than taken from the
# training package's TrialConfig: analysis reads files only and must work where training code is not installed.
# tests/test_analysis.py checks that the two lists agree.
CONFIG_FIELDS: list[tuple[str, pa.DataType]] = [
    ("study", pa.string()), ("trial_name", pa.string()), ("scenario", pa.string()), ("baseline", pa.string()),
    ("layers", pa.list_(pa.int32())), ("components", pa.list_(pa.string())), ("r", pa.int32()),
    ("rank_pattern", pa.string()), ("alpha", pa.float64()), ("lora_dropout", pa.float64()),
    ("repeat", pa.int32()), ("seed", pa.int64()), ("model", pa.string()), ("model_init", pa.string()),
    ("dataset", pa.string()), ("text_columns", pa.list_(pa.string())), ("label_column", pa.string()),
    ("train_split", pa.string()), ("eval_split", pa.string()), ("task", pa.string()),
    ("label_names", pa.list_(pa.string())), ("primary_metric", pa.string()),  # e.g. val_mcc: what the study optimizes
    ("reader", pa.string()),  # JSON of the CSV/TSV reader options the spec set
    ("train_limit", pa.int64()), ("max_length", pa.int32()), ("num_labels", pa.int32()),
    ("selection_fraction", pa.float64()), ("selection_rows", pa.int64()), ("selection_seed", pa.int64()),
    ("epochs", pa.int32()), ("learning_rate", pa.float64()), ("batch_size", pa.int32()),
    ("eval_batch_size", pa.int32()), ("weight_decay", pa.float64()), ("adam_betas", pa.list_(pa.float64())),
    ("adam_epsilon", pa.float64()), ("warmup_ratio", pa.float64()), ("lr_schedule", pa.string()),
    ("grad_clip", pa.float64()), ("hidden_dropout", pa.float64()), ("attention_dropout", pa.float64()),
    ("classifier_dropout", pa.float64()), ("gradient_checkpointing", pa.bool_()), ("precision", pa.string()),
]
CONFIG_NAMES = [name for name, _ in CONFIG_FIELDS]

TRIALS_SCHEMA = pa.schema([
    ("experiment", pa.string()), ("trial_id", pa.string()), ("trial_dir", pa.string()), ("status", pa.string()),
    ("error", pa.string()), ("problem", pa.string()),
    *CONFIG_FIELDS,
    ("config_extra", pa.string()),  # JSON of config keys this schema does not know
    # final_*: the last finished epoch's; null for a diverged trial (it has no final result), which has
    # diverged = true and diverged_reason such as "train loss nan at epoch 2 step 5 (lr=1e12)"
    # best_val_accuracy: the best epoch on the same dev set it reports (optimistic; never used for a verdict)
    ("final_val_accuracy", pa.float64()), ("final_sel_accuracy", pa.float64()), ("best_val_accuracy", pa.float64()),
    ("final_val_loss", pa.float64()),
    ("final_train_loss", pa.float64()), ("epochs_completed", pa.int32()), ("trainable_params", pa.int64()),
    ("total_params", pa.int64()), ("params_relative_pct", pa.float64()), ("peak_memory_mb", pa.float64()),
    ("memory_kind", pa.string()), ("saved_activations_mb", pa.float64()), ("trainable_state_mb", pa.float64()),
    ("compute_dtype", pa.string()), ("mean_train_samples_per_s", pa.float64()), ("total_time_s", pa.float64()),
    ("hostname", pa.string()), ("node_ip", pa.string()), ("node_id", pa.string()), ("num_restarts", pa.int32()),
    ("last_checkpoint", pa.string()), ("diverged", pa.bool_()), ("diverged_reason", pa.string()),
])

TASK_METRICS = ("accuracy", "f1", "mcc", "mse", "pearson", "spearman")  # classification: the first three
EPOCH_METRICS: list[tuple[str, pa.DataType]] = [
    ("epoch", pa.int32()), ("train_loss", pa.float64()), ("val_loss", pa.float64()),
    *((f"val_{m}", pa.float64()) for m in TASK_METRICS), ("val_examples", pa.int64()),
    ("sel_loss", pa.float64()),  # sel_*: on the selection split, when the study has one
    *((f"sel_{m}", pa.float64()) for m in TASK_METRICS), ("sel_examples", pa.int64()),
    ("train_samples_per_s", pa.float64()), ("epoch_time_s", pa.float64()), ("peak_memory_mb", pa.float64()),
    ("memory_kind", pa.string()),
    ("compute_dtype", pa.string()),  # what `precision` resolved to on that machine: bf16 (autocast) or fp32
    # exact and device-independent: tensors saved for backward (peak over steps) and weights + grads + AdamW state
    ("saved_activations_mb", pa.float64()), ("trainable_state_mb", pa.float64()), ("trainable_params", pa.int64()), ("total_params", pa.int64()),
    ("params_relative_pct", pa.float64()), ("padding_efficiency", pa.float64()), ("checkpoint_mb", pa.float64()),
    ("training_iteration", pa.int32()), ("time_total_s", pa.float64()), ("timestamp", pa.int64()),
    ("hostname", pa.string()), ("node_ip", pa.string()), ("node_id", pa.string()),
]
EPOCHS_SCHEMA = pa.schema([
    ("experiment", pa.string()), ("trial_id", pa.string()), ("scenario", pa.string()), ("r", pa.int32()),
    ("repeat", pa.int32()), ("seed", pa.int64()), *EPOCH_METRICS,
])
