"""Time `analyze` and `report` on a synthetic experiment of 10,000 trials x 20 epochs in Ray Tune's on-disk format.

    python bench/analyze_scale.py [--trials 10000] [--epochs 20] [--keep DIR]

Writes what Ray Tune writes per trial (params.json, result.json with the config in every line, progress.csv)
plus an experiment_state file, then runs `lora-sweep analyze` and `lora-sweep report` (statistics, figures,
report.html) on it. Targets: <= 10 s each on the 2-core machine.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from analysis.aggregate import aggregate  # noqa: E402
from analysis.report import load, write_report  # noqa: E402

TARGET_S = 10.0
ALL = ["q", "k", "v", "o", "up", "down"]
PLACEMENTS = {"upper": (list(range(6, 12)), ALL), "lower": (list(range(6)), ALL), "even": (list(range(0, 12, 2)), ALL),
              "all": (list(range(12)), ALL), **{c: (list(range(12)), [c]) for c in ALL}}
SCENARIOS = list(PLACEMENTS)


def synthesize(root: Path, trials: int, epochs: int) -> Path:
    exp = root / "scale"
    exp.mkdir(parents=True)
    rng = random.Random(0)
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
        for e in range(1, epochs + 1):
            acc = 0.9 + 0.004 * SCENARIOS.index(scenario) + rng.gauss(0, 0.005)
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
    ap.add_argument("--keep", help="write the synthetic experiment here and keep it")
    args = ap.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="analyze-scale-"))
    t0 = time.time()
    exp = synthesize(root, args.trials, args.epochs)
    size_mb = sum(f.stat().st_size for f in exp.rglob("*") if f.is_file()) / 2**20
    print(f"synthesized {args.trials} trials x {args.epochs} epochs ({size_mb:.0f} MB) in {time.time() - t0:.1f} s")
    t0 = time.perf_counter()
    trials, epochs, _ = aggregate([str(exp)], root / "out")
    took = time.perf_counter() - t0
    print(f"analyze: {trials.num_rows} trials, {epochs.num_rows} epoch rows in {took:.2f} s "
          f"(target <= {TARGET_S:.0f} s, ratio {took / TARGET_S:.2f})")
    t0 = time.perf_counter()
    files = write_report(*load(root / "out"), root / "out" / "report")
    took = time.perf_counter() - t0
    print(f"report: {len(files)} files in {took:.2f} s (target <= {TARGET_S:.0f} s, ratio {took / TARGET_S:.2f})")
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
