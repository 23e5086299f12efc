"""A trial's predictions on the dev (eval) split: one small Parquet file per trial, the same schema for every task.

The trial writes it into every epoch checkpoint (so the newest checkpoint holds the last finished epoch's);
`analyze` gathers the files into predictions.parquet. One row per example of the eval split as loaded, in that
order: `example` (its row index, int32), `label` and `prediction` (class ids, or a regression's target and predicted
value: float32, so one schema holds both), `score` (float32: the probability of class 1 with two classes, of the
predicted class with more; a regression's predicted value).
"""

from __future__ import annotations

import pyarrow as pa

PREDICTIONS_FILE = "predictions.parquet"
EPOCH_KEY = b"lora_sweep.epoch"  # file metadata: the epoch whose evaluation these are
SCHEMA = pa.schema([("example", pa.int32()), ("label", pa.float32()), ("prediction", pa.float32()),
                    ("score", pa.float32())])


def epoch_of(table: pa.Table | pa.Schema) -> int | None:
    """The epoch recorded in a predictions file's metadata (None when absent or unreadable)."""
    schema = table if isinstance(table, pa.Schema) else table.schema
    value = (schema.metadata or {}).get(EPOCH_KEY)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
