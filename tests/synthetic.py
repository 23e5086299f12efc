"""Synthetic studies in analyze's Parquet schemas, for report tests: known truth, real file format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.schema import EPOCHS_SCHEMA, TRIALS_SCHEMA


def write_study(out: Path, groups: list[dict], seeds: int = 3, examples: int = 277, seed: int = 0,
                seed_sd: float = 0.004, noise_sd: float = 0.004) -> Path:
    """trials.parquet + epochs.parquet; each group dict: scenario, mean, and optionally model, scale (noise x),
    params_pct, components, diverged_seeds, looks (a sequential design's), seconds (per trial). Accuracies are whole
    rows of `examples`, so ties happen as on RTE."""
    rng = np.random.default_rng(seed)
    blocks = {}
    trials, epochs = [], []
    for g in groups:
        model = g.get("model", "minilm-l6")
        block = blocks.setdefault(model, rng.normal(0, seed_sd, seeds))
        for s in range(seeds):
            acc = float(np.round((g["mean"] + block[s] + rng.normal(0, noise_sd * g.get("scale", 1.0))) * examples)
                        / examples)
            diverged = s in g.get("diverged_seeds", ())
            head = {"experiment": g.get("experiment", "study"), "trial_id": f"{g['scenario']}-{model}-{s}",
                    "scenario": g["scenario"], "seed": 42 + s, "repeat": s, "r": g.get("r", 8)}
            baseline = g["scenario"] if g["scenario"] in ("classifier_only", "full_ft") else None
            trials.append({**head, "status": "TERMINATED", "study": "synthetic", "trial_name": head["trial_id"],
                           "baseline": baseline,
                           "layers": [0, 1], "components": g.get("components", [g["scenario"]]), "model": model,
                           "dataset": g.get("dataset", "glue/rte"), "task": "classification",
                           "learning_rate": 1e-3, "params_relative_pct": g.get("params_pct", 1.0),
                           "trainable_params": 10_000, "peak_memory_mb": 777.1719, "memory_kind": "cpu_rss",
                           "looks": g.get("looks", 1), "total_time_s": g.get("seconds"),
                           "mean_train_samples_per_s": 123.456, "diverged": diverged,
                           "diverged_reason": "train loss nan at epoch 1" if diverged else None,
                           "final_val_accuracy": None if diverged else acc})
            if not diverged:
                epochs.append({**head, "epoch": 1, "val_accuracy": acc, "val_examples": examples})
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(trials, schema=TRIALS_SCHEMA), out / "trials.parquet")
    pq.write_table(pa.Table.from_pylist(epochs, schema=EPOCHS_SCHEMA), out / "epochs.parquet")
    return out
