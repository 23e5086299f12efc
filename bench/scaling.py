"""Trials/hour of the same small sweep on 1 node vs 2 nodes (1 CPU each) of a loopback Ray cluster.

    python bench/scaling.py [--trials 8]

Each trial trains a tiny random BERT on real SST-2 rows for a few seconds; target speed-up >= 1.8x.
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
from tune_jobs.study.spec import parse_study  # noqa: E402
from tune_jobs.sweep.runner import run_sweep  # noqa: E402


def trials_per_hour(n_nodes: int, study, storage: str) -> tuple[float, float]:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(n_nodes - 1):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        t0 = time.time()
        results = run_sweep(study, storage=storage, name=f"scaling-{n_nodes}", address=cluster.address)
        wall = time.time() - t0
        assert results.num_errors == 0
    finally:
        ray.shutdown()
        cluster.shutdown()
    return len(results) / wall * 3600, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "sst2"))
    args = ap.parse_args()
    from transformers import BertConfig

    model = random_model_dir(BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                        intermediate_size=128, max_position_embeddings=128))
    study = parse_study({
        "name": "scaling", "model": model, "model_init": "random",
        "data": {"dataset": args.data, "train_limit": 1500, "max_length": 64},
        "train": {"epochs": 2, "batch_size": 16}, "repeats": args.trials, "resources": {"cpu": 1},
        "scenarios": [{"name": "vup", "layers": "all", "components": "v+up", "ranks": [4]}],
    })
    storage = tempfile.mkdtemp(prefix="scaling-")
    one, wall1 = trials_per_hour(1, study, storage)
    two, wall2 = trials_per_hour(2, study, storage)
    print(f"1 node : {one:7.0f} trials/hour ({args.trials} trials in {wall1:.1f} s)")
    print(f"2 nodes: {two:7.0f} trials/hour ({args.trials} trials in {wall2:.1f} s)")
    print(f"speed-up {two / one:.2f}x (target >= 1.8x)")


if __name__ == "__main__":
    main()
