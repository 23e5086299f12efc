"""Train samples/s of the trial loop vs a bare PEFT loop over identical batches; padding efficiency.

    python bench/trial_throughput.py [--rows 1000] [--batch-size 32]

Targets: throughput ratio >= 0.95, padding efficiency >= 0.90. MiniLM, LoRA all r=8, real SST-2 rows.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from tune_jobs.data import TrialData, length_grouped_batches  # noqa: E402
from tune_jobs.grid import select_trial, with_overrides  # noqa: E402
from tune_jobs.spec import load_study  # noqa: E402
from tune_jobs.trial import (build_optimizer, build_scheduler, load_model, load_tokenizer, run_trial,  # noqa: E402
                             seed_everything)


def bare_loop(tc, epoch: int = 1) -> float:
    """The minimum: PEFT model, AdamW, the same batches; no metrics, checkpoints or evaluation."""
    from transformers import DataCollatorWithPadding

    from lora_ext import apply_placement

    seed_everything(tc.seed)
    tok = load_tokenizer(tc)
    data = TrialData.build(tc.data_config(), tok, tc.seed)
    model = apply_placement(load_model(tc, tok, data.label_names), tc.placement())
    collator = DataCollatorWithPadding(tok)
    opt = build_optimizer(model, tc)
    sched = build_scheduler(opt, tc, math.ceil(len(data.train_lengths) / tc.batch_size))
    batches = length_grouped_batches(data.train_lengths, tc.batch_size, seed=tc.seed * 1000 + epoch)
    model.train()
    t0 = time.perf_counter()
    for idx in batches:
        loss = model(**data.batch(data.train, idx, collator)).loss
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return len(data.train_lengths) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "sst2"))
    args = ap.parse_args()
    tc = select_trial(load_study(REPO / "tune_jobs/experiments/final.yaml", "demo"), "lora_all", r=8)
    tc = with_overrides(tc, dataset=args.data, train_limit=args.rows, epochs=1, batch_size=args.batch_size)
    bare_loop(tc)  # warm-up: tokenizer cache, allocator
    trial_sps, bare_sps = [], []
    for _ in range(2):  # interleave, keep the best of each: this machine's speed drifts
        trial_sps.append(run_trial(tc.to_dict())[0]["train_samples_per_s"])
        bare_sps.append(bare_loop(tc))
    hist = run_trial(tc.to_dict())
    print(f"trial loop: {max(trial_sps):.1f} samples/s   bare PEFT loop: {max(bare_sps):.1f} samples/s   "
          f"ratio {max(trial_sps) / max(bare_sps):.3f} (target >= 0.95)")
    print(f"padding efficiency (batch {args.batch_size}): {hist[0]['padding_efficiency']:.3f} (target >= 0.90)")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, rows {args.rows}")


if __name__ == "__main__":
    main()
