"""Time `analyze` and `report` on a synthetic experiment of 10,000 trials x 20 epochs in Ray Tune's on-disk format.

    python bench/analyze_scale.py [--trials 10000] [--epochs 20] [--examples 872] [--keep DIR]

Writes what Ray Tune writes per trial (params.json, result.json with the config in every line, progress.csv)
plus an experiment_state file, and the trial's predictions on an SST-2-sized dev split in its last checkpoint
(`--examples 0`: none, as before lora-sweep wrote them), then runs `lora-sweep analyze` and `lora-sweep report`
(statistics, the multi-bootstrap over dev examples and seeds, figures, report.html) on it. Targets: <= 10 s each on
the 2-core machine without predictions; with them, within 2x of that run's time.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.stats import norm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from analysis.aggregate import aggregate  # noqa: E402
from analysis.report import load, load_predictions, write_report  # noqa: E402
from record.predictions import EPOCH_KEY, PREDICTIONS_FILE, SCHEMA  # noqa: E402

TARGET_S = 10.0
ALL = ["q", "k", "v", "o", "up", "down"]
PLACEMENTS = {"upper": (list(range(6, 12)), ALL), "lower": (list(range(6)), ALL), "even": (list(range(0, 12, 2)), ALL),
              "all": (list(range(12)), ALL), **{c: (list(range(12)), [c]) for c in ALL}}
SCENARIOS = list(PLACEMENTS)


class DevSet:
    """Synthetic predictions on one dev split: per-example difficulty shared by every trial, a scenario effect and a
    seed effect (probit model), so the multi-bootstrap sees correlated trials as real ones are."""

    def __init__(self, examples: int, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.labels = self.rng.integers(0, 2, examples).astype(np.float32)
        self.difficulty = self.rng.normal(0.0, 1.2, examples)

    def table(self, effect: float, epoch: int) -> pa.Table:
        """One trial's predictions file; its accuracy is what the trial reports (set by the caller)."""
        n = len(self.labels)
        correct = self.rng.random(n) < norm.cdf(effect + self.rng.normal(0, 0.1) + self.difficulty)
        prediction = np.where(correct, self.labels, 1 - self.labels).astype(np.float32)
        score = np.where(prediction == 1, 0.5 + 0.5 * self.rng.random(n), 0.5 * self.rng.random(n)).astype(np.float32)
        return pa.table({"example": np.arange(n, dtype=np.int32), "label": self.labels, "prediction": prediction,
                         "score": score}, schema=SCHEMA.with_metadata({EPOCH_KEY: str(epoch).encode()}))


def synthesize(root: Path, trials: int, epochs: int, examples: int = 0) -> Path:
    exp = root / "scale"
    exp.mkdir(parents=True)
    rng = random.Random(0)
    dev = DevSet(examples) if examples else None
    state = []
    for i in range(trials):
        scenario, repeat = SCENARIOS[i % len(SCENARIOS)], i // len(SCENARIOS)
        name, trial_id = f"{scenario}-r8-rep{repeat}", f"abcde_{i:05d}"
        config = {"grid_index": i, "study": "scale", "trial_name": name, "scenario": scenario, "baseline": None,
                  "layers": PLACEMENTS[scenario][0], "components": PLACEMENTS[scenario][1], "r": 8,
                  "rank_pattern": {}, "alpha": None, "lora_dropout": 0.1, "repeat": repeat, "seed": 42 + repeat,
                  "model": "roberta-base", "model_init": "pretrained", "dataset": "glue/sst2", "train_limit": None,
                  "max_length": 128, "num_labels": 2, "epochs": epochs, "learning_rate": 1.4e-3, "batch_size": 480,
                  "eval_batch_size": 256, "weight_decay": 0.01, "adam_betas": [0.9, 0.98], "adam_epsilon": 1e-6,
                  "warmup_ratio": 0.1, "lr_schedule": "cosine", "grad_clip": None, "hidden_dropout": 0.2,
                  "attention_dropout": 0.2, "classifier_dropout": None, "gradient_checkpointing": False,
                  "precision": "auto"}
        tdir = exp / name
        tdir.mkdir()
        (tdir / "params.json").write_text(json.dumps(config, indent=2))
        lines, csv = [], []
        final = None
        if dev is not None:  # the last epoch's checkpoint holds the predictions; the trial reports their accuracy
            table = dev.table(1.9 + 0.03 * SCENARIOS.index(scenario), epochs)
            (tdir / f"checkpoint_{epochs - 1:06d}").mkdir()
            pq.write_table(table, tdir / f"checkpoint_{epochs - 1:06d}" / PREDICTIONS_FILE, compression="zstd")
            final = float(np.mean(table.column("label").to_numpy() == table.column("prediction").to_numpy()))
        for e in range(1, epochs + 1):
            acc = 0.9 + 0.004 * SCENARIOS.index(scenario) + rng.gauss(0, 0.005)
            acc = final if final is not None and e == epochs else acc
            row = {"epoch": e, "train_loss": rng.random(), "val_loss": rng.random(), "val_accuracy": acc,
                   "train_samples_per_s": 700 + rng.random(), "epoch_time_s": 80.0, "peak_memory_mb": 9000.0,
                   "memory_kind": "cuda_allocated", "trainable_params": 1919234, "total_params": 124647170,
                   "params_relative_pct": 1.54, "padding_efficiency": 0.95, "checkpoint_mb": 15.0,
                   "timestamp": 1796000000 + e, "checkpoint_dir_name": f"checkpoint_{e - 1:06d}",
                   "should_checkpoint": True, "done": e == epochs, "training_iteration": e, "trial_id": trial_id,
                   "date": "2026-12-01_00-00-00", "time_this_iter_s": 80.0, "time_total_s": 80.0 * e, "pid": 1,
                   "hostname": "node-1", "node_ip": "10.0.0.1", "time_since_restore": 80.0 * e,
                   "iterations_since_restore": e, "config": config}
            lines.append(json.dumps(row))
            csv.append(",".join(str(v) for k, v in row.items() if k != "config"))
        (tdir / "result.json").write_text("\n".join(lines) + "\n")
        (tdir / "progress.csv").write_text(",".join(k for k in row if k != "config") + "\n" + "\n".join(csv) + "\n")
        state.append([json.dumps({"trial_id": trial_id, "status": "TERMINATED", "relative_logdir": name,
                                  "config": config}), json.dumps({"num_failures": 0})])
    (exp / "experiment_state-2026-12-01_00-00-00.json").write_text(json.dumps({"trial_data": state}))
    return exp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--examples", type=int, default=872, help="dev-split rows of each trial's predictions (0: none)")
    ap.add_argument("--keep", help="write the synthetic experiment here and keep it")
    args = ap.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="analyze-scale-"))
    t0 = time.time()
    exp = synthesize(root, args.trials, args.epochs, args.examples)
    size_mb = sum(f.stat().st_size for f in exp.rglob("*") if f.is_file()) / 2**20
    print(f"synthesized {args.trials} trials x {args.epochs} epochs, predictions of {args.examples} examples each "
          f"({size_mb:.0f} MB) in {time.time() - t0:.1f} s")
    t0 = time.perf_counter()
    trials, epochs, _ = aggregate([str(exp)], root / "out")
    took = time.perf_counter() - t0
    predicted = pq.read_metadata(root / "out" / PREDICTIONS_FILE).num_rows
    print(f"analyze: {trials.num_rows} trials, {epochs.num_rows} epoch rows, {predicted} prediction rows "
          f"in {took:.2f} s "
          f"(target <= {TARGET_S:.0f} s, ratio {took / TARGET_S:.2f})")
    t0 = time.perf_counter()
    files = write_report(*load(root / "out"), root / "out" / "report", predictions=load_predictions(root / "out"))
    took = time.perf_counter() - t0
    print(f"report: {len(files)} files in {took:.2f} s (target <= {TARGET_S:.0f} s, ratio {took / TARGET_S:.2f})")
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
