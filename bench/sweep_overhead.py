"""Ray Tune's overhead per trial for short trials: (sweep wall time - sum of trial times / concurrency) / trials.

    python bench/sweep_overhead.py [--trials 8] [--concurrency 2]

Trials are a few seconds each (tiny random BERT, MiniLM's tokenizer, 64 real SST-2 rows, 1 epoch). Target: <= 1 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lora_ext.model_configs import random_model_dir  # noqa: E402
from tune_jobs.study.grid import expand  # noqa: E402
from tune_jobs.study.spec import parse_study  # noqa: E402
from tune_jobs.sweep.runner import connect_ray, prepare_data, run_sweep  # noqa: E402


def tiny_model_dir() -> str:
    from transformers import BertConfig

    return random_model_dir(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, max_position_embeddings=128))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "sst2"))
    args = ap.parse_args()
    study = parse_study({
        "name": "overhead", "model": tiny_model_dir(), "model_init": "random",
        "data": {"dataset": args.data, "train_limit": 64, "max_length": 32},
        "train": {"epochs": 1, "batch_size": 16}, "repeats": args.trials, "resources": {"cpu": 1},
        "scenarios": [{"name": "vup", "layers": "all", "components": "v+up", "ranks": [4]}],
    })
    storage = tempfile.mkdtemp(prefix="sweep-overhead-")
    t_start = time.time()
    connect_ray(None)  # one-time costs (Ray start, tokenizing) are not per-trial overhead: paid before the clock
    prepare_data(expand(study))
    ray_start = time.time() - t_start
    t0 = time.time()
    results = run_sweep(study, storage=storage, name="overhead", max_concurrent=args.concurrency)
    wall = time.time() - t0
    trial_s = [r.metrics["time_total_s"] for r in results]
    overhead = (wall - sum(trial_s) / args.concurrency) / len(trial_s)
    print(f"Ray start + data preparation (once per sweep): {ray_start:.1f} s")
    print(f"{len(trial_s)} trials, concurrency {args.concurrency}: sweep wall {wall:.1f} s, "
          f"sum of trial times {sum(trial_s):.1f} s (mean {sum(trial_s) / len(trial_s):.1f} s)")
    print(f"Ray Tune overhead per trial: {overhead:.2f} s (target <= 1 s, ratio {overhead / 1.0:.2f})")


if __name__ == "__main__":
    main()
