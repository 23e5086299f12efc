"""One evaluation's outputs on the dev split as the trial's predictions file (layout: `record.predictions`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from record.metrics import REGRESSION
from record.predictions import EPOCH_KEY, PREDICTIONS_FILE, SCHEMA


def predictions_table(task: str, outputs: np.ndarray, labels: np.ndarray, rows: np.ndarray, epoch: int) -> pa.Table:
    """`outputs` (logits, rows x classes; rows x 1 for regression) and `labels` of the split's `rows`, in the order
    evaluated, as one table sorted by example; the class is the logits' argmax, as `task_metrics` takes it."""
    rows = np.asarray(rows)
    outputs = np.asarray(outputs).reshape(len(rows), -1)
    if task == REGRESSION:
        prediction = score = outputs[:, 0].astype(np.float32)
    else:
        prediction = outputs.argmax(-1)
        logits = outputs.astype(np.float64)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        score = probs[:, 1] if outputs.shape[-1] == 2 else probs[np.arange(len(rows)), prediction]
    order = np.argsort(rows, kind="stable")
    return pa.table({"example": rows[order].astype(np.int32), "label": np.asarray(labels)[order].astype(np.float32),
                     "prediction": np.asarray(prediction)[order].astype(np.float32),
                     "score": np.asarray(score)[order].astype(np.float32)},
                    schema=SCHEMA.with_metadata({EPOCH_KEY: str(epoch).encode()}))


def write_predictions(table: pa.Table, folder: Path) -> Path:
    """`folder`/predictions.parquet, written atomically (a temporary file beside it, then a rename)."""
    import pyarrow.parquet as pq

    path = folder / PREDICTIONS_FILE
    tmp = folder / f".{PREDICTIONS_FILE}.tmp{os.getpid()}"
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    return path
