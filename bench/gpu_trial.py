"""GPU throughput of the trial loop on a RoBERTa-base-shaped model (random init from the shipped config).

    python bench/gpu_trial.py [--rows 20000] [--batch-size 480] [--device cuda]

For a lent GPU machine with torch/transformers/peft but no Ray and no hub: the model is built from
lora_ext/model_configs/roberta-base.json with MiniLM's offline tokenizer (its ids fit RoBERTa's vocabulary),
trained on real SST-2 rows (--data, default ../shared/data/sst2), bf16 autocast, length-grouped batches.
Prints train samples/s and peak memory for LoRA all r=8, full fine-tuning and classifier only, next to the
article's A10G figures (776 / 909 / 2376 samples/s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lora_ext import load_model_config  # noqa: E402
from lora_ext.model_configs import random_model_dir  # noqa: E402
from tune_jobs.grid import expand  # noqa: E402
from tune_jobs.spec import parse_study  # noqa: E402
from tune_jobs.trial import run_trial  # noqa: E402

A10G = {"lora_all_r8": 776, "full_ft": 909, "classifier_only": 2376}


def roberta_shaped_dir() -> str:
    return random_model_dir(load_model_config("roberta-base"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--batch-size", type=int, default=480)
    ap.add_argument("--device", default=None)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "sst2"))
    ap.add_argument("--json-out", help="also write the results as JSON here")
    args = ap.parse_args()
    raw = {
        "name": "gpu_bench", "model": roberta_shaped_dir(), "model_init": "random",
        "data": {"dataset": args.data, "train_limit": args.rows, "max_length": 128},
        "train": {"epochs": 1, "batch_size": args.batch_size, "eval_batch_size": 512, "precision": "auto"},
        "scenarios": [
            {"name": "lora_all_r8", "layers": "all", "components": "all", "ranks": [8]},
            {"name": "full_ft", "baseline": "full", "train": {"learning_rate": 3e-5}},
            {"name": "classifier_only", "baseline": "classifier_only"},
        ],
    }
    results = {}
    for tc in expand(parse_study(raw)):
        m = run_trial(tc.to_dict(), device=args.device)[0]
        results[tc.scenario] = m
        print(f"{tc.scenario:<16} {m['train_samples_per_s']:8.1f} samples/s  (A10G article: {A10G[tc.scenario]}, "
              f"ratio {m['train_samples_per_s'] / A10G[tc.scenario]:.2f})  peak {m['peak_memory_mb']:8.0f} MB "
              f"{m['memory_kind']}  padding eff {m['padding_efficiency']:.3f}", flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
