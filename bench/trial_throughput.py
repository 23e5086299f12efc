"""Train samples/s of the trial loop vs a bare PEFT loop over identical batches; padding efficiency; and, with
`--before DIR`, the trial loop of another checkout (e.g. `git worktree add /tmp/before <commit>`) against this one.

    python bench/trial_throughput.py [--rows 1000] [--batch-size 32] [--before /tmp/before] [--rounds 3]

Targets: throughput ratio >= 0.95, padding efficiency >= 0.90, this checkout no slower than --before. MiniLM,
LoRA all r=8, real SST-2 rows. Each checkout's trial runs in a fresh process, the two alternating, best of rounds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from tune_jobs.data.splits import TrialData, length_grouped_batches  # noqa: E402
from tune_jobs.study.grid import select_trial, with_overrides  # noqa: E402
from tune_jobs.study.spec import load_study  # noqa: E402
from tune_jobs.train.loop import run_trial  # noqa: E402
from tune_jobs.train.model import load_model, load_tokenizer  # noqa: E402
from tune_jobs.train.prepare import build_optimizer, build_scheduler, seed_everything  # noqa: E402


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


TRIAL_IN_CHECKOUT = """
import json, sys
try:
    from tune_jobs.study.grid import select_trial, with_overrides
    from tune_jobs.study.spec import load_study
    from tune_jobs.train.loop import run_trial
except ImportError:  # a checkout from before tune_jobs had rooms
    from tune_jobs.grid import select_trial, with_overrides
    from tune_jobs.spec import load_study
    from tune_jobs.trial import run_trial
rows, batch, data = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
tc = select_trial(load_study("tune_jobs/experiments/final.yaml", "demo"), "lora_all", r=8)
tc = with_overrides(tc, dataset=data, train_limit=rows, epochs=1, batch_size=batch)
m = run_trial(tc.to_dict())[0]
print(json.dumps({k: m[k] for k in ("train_samples_per_s", "compute_dtype", "train_loss", "val_accuracy")}))
"""


def trial_in(checkout: Path, rows: int, batch: int, data: str) -> dict:
    """One trial of `checkout`'s code in a fresh process (its own imports, nothing cached from the other)."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run([sys.executable, "-c", TRIAL_IN_CHECKOUT, str(rows), str(batch), data], cwd=checkout,
                          env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare_checkouts(before: Path, rows: int, batch: int, data: str, rounds: int) -> None:
    """Before/after in one run: the two checkouts' trial loops alternately, best of `rounds` each."""
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for _ in range(rounds):
        runs["before"].append(trial_in(before, rows, batch, data))
        runs["after"].append(trial_in(REPO, rows, batch, data))
    best = {k: max(r["train_samples_per_s"] for r in v) for k, v in runs.items()}
    print(f"trial loop, {before} (before): {best['before']:.1f} samples/s   this checkout (after): "
          f"{best['after']:.1f} samples/s   ratio {best['after'] / best['before']:.3f} (target >= 1.0); "
          f"compute dtype {runs['after'][0]['compute_dtype']}")
    print("  each run: " + "; ".join(f"{k} " + ", ".join(f"{r['train_samples_per_s']:.1f}" for r in v)
                                      for k, v in runs.items()))
    same = [b["val_accuracy"] == a["val_accuracy"] and math.isclose(b["train_loss"], a["train_loss"], rel_tol=1e-12)
            for b, a in zip(runs["before"], runs["after"])]
    print(f"  same val_accuracy and train_loss (to 1e-12) before and after: {all(same)}; e.g. train_loss "
          f"{runs['before'][0]['train_loss']!r} / {runs['after'][0]['train_loss']!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "sst2"))
    ap.add_argument("--before", type=Path, help="another checkout whose trial loop to compare with this one's")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.before:
        compare_checkouts(args.before.resolve(), args.rows, args.batch_size, str(Path(args.data).resolve()),
                          args.rounds)
        return
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
