"""The offline GPU check: the trial's own training step on a RoBERTa-base-shaped model, measured on one GPU.

Runs with a GPU machine's own python3 (torch, transformers, peft, pyarrow; no Ray, no `datasets`, no network) from
the repository plus one prepared folder (about 5 MB) made here beforehand:

    python bench/gpu.py --prepare .gpu_bench          # here: RoBERTa-base config.json, tokenizer files, SST-2 TSVs
    python3 bench/gpu.py --assets .gpu_bench --json-out results.json     # there (at most ~6 minutes on an H200)
    python bench/gpu.py --smoke                       # the same code path on this CPU in seconds (tiny config)

Weights are random, built on the device (the speed and memory of a step do not depend on their values). The
tokenizer is MiniLM's WordPiece vocabulary (its ids fit RoBERTa's 50,265-token embedding; SST-2 sentences come out
within a few tokens of RoBERTa's BPE lengths) because RoBERTa's own tokenizer files are not available offline here.
Prints, with the torch/transformers/peft versions, GPU name and the measured bf16 matmul peak:
  1. train samples/s, allocated and reserved peak memory and model FLOP utilisation for LoRA all r=8, full
     fine-tuning and classifier-only at batch 32 and 480 (warm-up steps excluded);
  2. K = 1, 2, 4, 8 concurrent trial processes on the GPU (fractional packing, `gpu: 1/K`): aggregate samples/s
     and the device memory they hold together (every process's CUDA context included);
  3. the per-layer memory trend: LoRA on all components of one layer (0, 3, 6, 9, 11), gradient checkpointing
     off and on.
Model FLOP utilisation = padded tokens x FLOP per token / time / the measured dense bf16 matmul rate, with FLOP per
token = m x (2 x encoder matmul weights + 4 x layers x sequence length x hidden size), m = 3 for full fine-tuning
(forward, input and weight gradients), 1 + (layers above the lowest adapted one) / layers for LoRA (forward and
input gradients down to that layer; the adapters' own FLOP are negligible) and 1 for classifier-only.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

ARTICLE_A10G = {"lora_all_r8": 776, "full_ft": 909, "classifier_only": 2376}  # samples/s at batch 480
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
SMOKE_CONFIG = {"architectures": ["RobertaForMaskedLM"], "model_type": "roberta", "hidden_size": 32,
                "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 64,
                "max_position_embeddings": 130, "type_vocab_size": 1, "vocab_size": 30522, "pad_token_id": 0}


# ---------------------------------------------------------------- the prepared folder

def prepare_assets(out: Path, smoke: bool = False) -> Path:
    """Write the folder a GPU machine needs: model/ (config.json + tokenizer files), sst2/ (train.tsv, dev.tsv)."""
    from lora_ext import model_location
    from lora_ext.model_configs import load_model_config
    from tests.conftest import SST2_DIR

    model = out / "model"
    model.mkdir(parents=True, exist_ok=True)
    if smoke:
        (model / "config.json").write_text(json.dumps(SMOKE_CONFIG))
    else:
        load_model_config("roberta-base").to_json_file(model / "config.json")
    tokenizer = Path(model_location("minilm-l6"))
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer / name, model / name)
    (out / "sst2").mkdir(exist_ok=True)
    for name in ("train.tsv", "dev.tsv"):
        shutil.copy(SST2_DIR / name, out / "sst2" / name)
    return out


def read_sst2(path: Path, rows: int | None) -> tuple[list[str], list[int]]:
    with open(path, newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        pairs = [(r[0], int(r[1])) for r, _ in zip(reader, range(rows if rows else 10**9))]
    return [t for t, _ in pairs], [y for _, y in pairs]


# ---------------------------------------------------------------- one trial, through the trial's own step

def trial_config(assets: Path, scenario: dict, batch: int, precision: str) -> dict:
    """One grid point of a RoBERTa-base study (random init) as the sweep would hand it to a trial."""
    from tune_jobs.study.grid import expand
    from tune_jobs.study.spec import parse_study

    raw = {"name": "gpu_bench", "model": str(assets / "model"), "model_init": "random",
           "data": {"dataset": str(assets / "sst2"), "max_length": 128},
           "train": {"epochs": 1, "batch_size": batch, "eval_batch_size": 512, "precision": precision,
                     "learning_rate": 1e-4},
           "lora": {"ranks": [8]}, "resources": {"cpu": 1}, "scenarios": [scenario]}
    return expand(parse_study(raw))[0].to_dict()


def bench_data(assets: Path, tokenizer, rows: int):
    """Tokenized SST-2 rows as the trial's padded splits, without `datasets`."""
    import pyarrow as pa

    from tune_jobs.data.splits import LABELS, PaddedSplit, TrialData

    def split(texts: list[str], labels: list[int]):
        enc = tokenizer(texts, truncation=True, max_length=128)
        columns = {k: enc[k] for k in ("input_ids", "token_type_ids") if k in enc}
        table = pa.table({**columns, "length": [len(i) for i in enc["input_ids"]], LABELS: labels})
        return PaddedSplit.from_table(table, tokenizer)

    train = split(*read_sst2(assets / "sst2" / "train.tsv", rows))
    dev = split(*read_sst2(assets / "sst2" / "dev.tsv", 512))
    return TrialData(None, None, train.lengths, dev.lengths, ("negative", "positive"),
                     padded={"train": train, "eval": dev})


def flop_per_token(config, scenario: dict, seq: float) -> float:
    """Model FLOP per token of one training step (see the module's docstring)."""
    layers, hidden = config.num_hidden_layers, config.hidden_size
    per_layer = 4 * hidden * hidden + 2 * hidden * config.intermediate_size
    forward = 2 * layers * per_layer + 4 * layers * seq * hidden
    if scenario.get("baseline") == "full":
        return 3 * forward
    if scenario.get("baseline") == "classifier_only":
        return forward
    chosen = scenario.get("layers", "all")
    lowest = 0 if chosen == "all" else min(chosen)
    return forward * (1 + (layers - lowest) / layers)


def free_device_memory() -> None:
    """What an earlier row left behind (its model, the allocator's cached blocks) is not counted in the next."""
    import gc

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def run_one(assets: str, scenario: dict, batch: int, steps: int, warmup: int, device: str, precision: str,
            barrier=None, profile: bool = False) -> dict:
    """Prepare one trial on `device` (weights built there), run the `steps` batches once untimed (every sequence
    length's kernels loaded and tuned: a real epoch of thousands of steps meets each length many times) and
    `warmup` more, then the same `steps` batches timed."""
    free_device_memory()
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from tune_jobs.data.splits import length_grouped_batches
    from tune_jobs.study.spec import TrialConfig
    from tune_jobs.train.loop import train_epoch
    from tune_jobs.train.meters import MemoryMeter, SavedTensorMeter
    from tune_jobs.train.prepare import prepare_model, seed_everything

    hf_logging.set_verbosity_error()
    root = Path(assets)
    tokenizer = AutoTokenizer.from_pretrained(root / "model")
    data = bench_data(root, tokenizer, batch * (steps + warmup) * 2)
    tc = TrialConfig.from_dict(trial_config(root, scenario, batch, precision))
    target = torch.device(device)
    seed_everything(0)
    memory = MemoryMeter(target)
    with torch.device(target):  # random weights made on the device: no host-side init of 125 M parameters
        p = prepare_model(tc, target, tokenizer, data)
    batches = length_grouped_batches(data.train_lengths, batch, seed=1)
    batches = [b for b in batches if len(b) == batch][:warmup + steps]
    timed = batches[warmup:]
    saved = SavedTensorMeter(p.model)
    train_epoch(p, 1, saved, batches=timed + batches[:warmup])
    if barrier is not None:
        barrier.wait()
    start = time.perf_counter()
    train_epoch(p, 1, saved, batches=timed)  # ends in a finiteness check: the device has finished
    seconds = time.perf_counter() - start
    if profile:
        print_profile(p, saved, timed[:5])
    lengths = data.train_lengths
    padded = sum(len(b) * int(lengths[b].max()) for b in timed)
    flop = sum(len(b) * int(lengths[b].max()) * flop_per_token(p.model.config, scenario, int(lengths[b].max()))
               for b in timed)
    return {"samples": sum(len(b) for b in timed), "seconds": seconds, "padded_tokens": padded, "flop": flop,
            **memory.read(), "saved_activations_mb": saved.peak_bytes / 2**20,
            "trainable_params": p.sizes["trainable_params"], "compute_dtype": p.compute_dtype}


def print_profile(p, saved, batches: list) -> None:
    """Where a few more steps spend their time: torch.profiler's top operators by host and by device time."""
    from torch.profiler import ProfilerActivity, profile

    from tune_jobs.train.loop import train_epoch

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if p.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        train_epoch(p, 1, saved, batches=batches)
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=8, max_name_column_width=40))
    if p.device.type == "cuda":
        print(events.table(sort_by="self_device_time_total", row_limit=8, max_name_column_width=40))


def verify(assets: str, device: str) -> list[tuple[str, bool, str]]:
    """Correctness on this device, each check (name, passed, detail): `auto` precision, frozen weights in the compute
    dtype bit-identical to autocast's casts (logits and gradients of one step), fp16 + GradScaler training."""
    import copy

    from transformers import AutoTokenizer

    from tune_jobs.study.spec import TrialConfig
    from tune_jobs.train.device import capability_of, choose_precision
    from tune_jobs.train.loop import train_epoch
    from tune_jobs.train.meters import SavedTensorMeter
    from tune_jobs.train.prepare import frozen_linears_to, prepare_model, seed_everything

    root, target, checks = Path(assets), torch.device(device), []
    tokenizer = AutoTokenizer.from_pretrained(root / "model")
    data = bench_data(root, tokenizer, 32 * 40)
    capability = capability_of(target)
    checks.append(("precision auto", True, f"{capability} -> {choose_precision('auto', capability)}"))

    def prepared(precision: str):
        seed_everything(0)
        tc = TrialConfig.from_dict(trial_config(root, SCENARIOS["lora_all_r8"], 32, precision))
        with torch.device(target):
            return prepare_model(tc, target, tokenizer, data)

    p = prepared("fp32")  # nothing cast: the reference path, autocast casting every frozen weight at each call
    batch = p.to_device(data.padded["train"].batch(np.arange(32)))
    for dtype in (torch.bfloat16, torch.float16):
        results, cast = [], copy.deepcopy(p.model)
        frozen_linears_to(cast, dtype)
        for model in (p.model, cast):
            model.eval().zero_grad(set_to_none=True)
            with torch.autocast(target.type, dtype=dtype):
                out = model(**batch)
            out.loss.backward()
            results.append((out.logits.detach(),
                            {n: q.grad for n, q in model.named_parameters() if q.grad is not None}))
        (a, ga), (b, gb) = results
        same = torch.equal(a, b) and ga.keys() == gb.keys() and all(torch.equal(ga[n], gb[n]) for n in ga)
        checks.append((f"frozen weights in {dtype} change nothing", same, f"max |logit diff| "
                       f"{float((a.float() - b.float()).abs().max()):.3g}, {len(ga)} gradients compared"))
    del p, cast
    free_device_memory()
    p = prepared("fp16")
    batches = [np.arange(i, i + 32) for i in range(0, 32 * 40, 32)]
    result = train_epoch(p, 1, SavedTensorMeter(p.model), batches=batches)
    trained = result.skipped_steps < len(batches) and np.isfinite(result.loss_sum)
    checks.append(("fp16 + GradScaler trains", trained, f"{len(batches)} steps, {result.skipped_steps} skipped by the "
                   f"scaler, mean loss {result.loss_sum / result.seen:.4f}, scale {p.scaler.get_scale():g}"))
    return checks


def _child(args: tuple, barrier, out) -> None:
    assets, scenario, batch, steps, warmup, device, precision, threads = args
    torch.set_num_threads(threads)
    out.put(run_one(assets, scenario, batch, steps, warmup, device, precision, barrier))


def device_used_mb(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**20


def run_concurrent(k: int, args: tuple, device: str) -> dict:
    """K trial processes started together on one device; the device memory they hold together, sampled while
    they train (this process's own CUDA context subtracted)."""
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(k), ctx.Queue()
    threads = max(1, (os.cpu_count() or 1) // k)
    base = device_used_mb(device)
    peak = [base or 0.0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            used = device_used_mb(device)
            peak[0] = max(peak[0], used or 0.0)
            time.sleep(0.05)

    poller = threading.Thread(target=sample, daemon=True)
    poller.start()
    procs = [ctx.Process(target=_child, args=((*args, threads), barrier, out)) for _ in range(k)]
    for proc in procs:
        proc.start()
    done = [out.get() for _ in procs]
    for proc in procs:
        proc.join()
    stop.set()
    poller.join()
    return {"k": k, "samples_per_s": sum(d["samples"] for d in done) / max(d["seconds"] for d in done),
            "allocated_mb": sum(d["peak_memory_mb"] for d in done),
            "reserved_mb": sum(d.get("peak_reserved_mb") or 0 for d in done),
            "device_mb": (peak[0] - base) if base is not None else None}


# ---------------------------------------------------------------- the whole check

SCENARIOS = {"lora_all_r8": {"name": "lora_all_r8", "layers": "all", "components": "all"},
             "full_ft": {"name": "full_ft", "baseline": "full"},
             "classifier_only": {"name": "classifier_only", "baseline": "classifier_only"}}


def matmul_tflops(device: str) -> float | None:
    """Dense bf16 matmul rate measured on this GPU (8192^3, ten products after three warm-ups)."""
    if not device.startswith("cuda"):
        return None
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    rate = 10 * 2 * 8192**3 / (time.perf_counter() - start) / 1e12
    del a, b
    torch.cuda.empty_cache()
    return rate


def fmt(value, spec: str = "{:,.0f}") -> str:
    return "-" if value is None else spec.format(value)


def environment(device: str) -> str:
    import peft
    import transformers

    gpu = f"{torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}" if device.startswith("cuda") else "CPU"
    return (f"{gpu}; torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}; "
            f"{os.cpu_count()} CPU cores")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepare", metavar="DIR", help="write the folder to carry to a GPU machine, then exit")
    ap.add_argument("--assets", default=str(REPO / ".gpu_bench"), help="the prepared folder")
    ap.add_argument("--smoke", action="store_true", help="tiny config on the CPU: the same code path in seconds")
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per row (default 30, smoke 2)")
    ap.add_argument("--k", default="1,2,4,8", help="concurrent trial processes to compare")
    ap.add_argument("--check", action="store_true", help="one step of each scenario on the device, then exit 0: "
                                                          "do this machine's packages run the trial's step?")
    ap.add_argument("--profile", action="store_true", help="also print torch.profiler's top operators of a few "
                                                            "LoRA steps at each batch size")
    ap.add_argument("--verify", action="store_true", help="correctness checks on the device (precision choice, "
                                                           "frozen weights in the compute dtype, fp16), then exit")
    ap.add_argument("--json-out", help="also write every figure as JSON here")
    args = ap.parse_args()
    if args.prepare:
        print(f"prepared {prepare_assets(Path(args.prepare))}")
        return
    device = args.device or ("cpu" if args.smoke else "cuda")
    steps, warmup = (args.steps or 2, 1) if args.smoke else (args.steps or 30, 5)
    counts = [1, 2] if args.smoke else [int(k) for k in args.k.split(",")]
    tmp = None
    assets = Path(args.assets)
    if args.smoke:
        tmp = tempfile.mkdtemp(prefix="gpu-bench-smoke-")
        assets = prepare_assets(Path(tmp), smoke=True)
    results: dict = {"environment": environment(device), "date": time.strftime("%Y-%m-%d")}
    if args.verify:
        checks = verify(str(assets), device)
        for name, passed, detail in checks:
            print(f"{'PASS' if passed else 'FAIL'}  {name}: {detail}", flush=True)
        if not all(passed for _, passed, _ in checks):
            sys.exit(1)
        return
    if args.check:
        for name, scenario in SCENARIOS.items():
            run_one(str(assets), scenario, 8, 1, 1, device, args.precision)
        print(f"check: the trial's step runs for {', '.join(SCENARIOS)} on {results['environment']}")
        return
    try:
        peak = matmul_tflops(device)
        results["bf16_matmul_tflops"] = peak
        print(f"# {results['environment']}; bf16 matmul {fmt(peak, '{:.0f}')} TFLOP/s measured", flush=True)

        def mfu(row: dict) -> float | None:
            return None if peak is None else row["flop"] / row["seconds"] / (peak * 1e12)

        print("\n## 1. Training step: samples/s and memory (warm-up excluded)")
        if not device.startswith("cuda"):
            print("(on a CPU 'allocated MB' is the growth of the process's peak RSS; MFU needs a GPU)")
        print(f"{'scenario':<16} {'batch':>5} {'samples/s':>10} {'A10G article':>12} {'allocated MB':>12} "
              f"{'reserved MB':>11} {'process MB':>10} {'activations MB':>14} {'MFU':>6} {'dtype':>5}", flush=True)
        rows = []
        for batch in (8, 32) if args.smoke else (32, 480):
            for name, scenario in SCENARIOS.items():
                r = run_one(str(assets), scenario, batch, steps, warmup, device, args.precision,
                            profile=args.profile and name == "lora_all_r8")
                r.update(scenario=name, batch=batch, samples_per_s=r["samples"] / r["seconds"], mfu=mfu(r))
                rows.append(r)
                article = ARTICLE_A10G[name] if batch == 480 else None
                print(f"{name:<16} {batch:>5} {r['samples_per_s']:>10,.0f} {fmt(article):>12} "
                      f"{r['peak_memory_mb']:>12,.0f} {fmt(r.get('peak_reserved_mb')):>11} "
                      f"{fmt(r.get('process_device_mb')):>10} {r['saved_activations_mb']:>14,.1f} "
                      f"{fmt(r['mfu'], '{:.1%}'):>6} {r['compute_dtype']:>5}", flush=True)
        results["steps"] = rows

        print("\n## 2. K trial processes sharing the device (LoRA all r=8, batch 32; gpu: 1/K)")
        print(f"{'K':>3} {'aggregate samples/s':>20} {'x K=1':>6} {'allocated MB (sum)':>19} "
              f"{'reserved MB (sum)':>18} {'device MB held':>15}", flush=True)
        packed, first = [], None
        for k in counts:
            r = run_concurrent(k, (str(assets), SCENARIOS["lora_all_r8"], 32, steps * 2, warmup, device,
                                   args.precision), device)
            first = first or r["samples_per_s"]
            packed.append(r)
            print(f"{k:>3} {r['samples_per_s']:>20,.0f} {r['samples_per_s'] / first:>6.2f} {r['allocated_mb']:>19,.0f} "
                  f"{fmt(r['reserved_mb'] or None):>18} {fmt(r['device_mb']):>15}", flush=True)
        results["concurrent"] = packed

        layers_total = 4 if args.smoke else 12
        chosen = [0, 3] if args.smoke else [0, 3, 6, 9, 11]
        trend_batch = 32 if args.smoke else 480
        print(f"\n## 3. Memory by adapted layer (LoRA r=8 on all components of one of {layers_total} layers, "
              f"batch {trend_batch})")
        print(f"{'layer':>5} {'checkpointing':>13} {'allocated MB':>12} {'reserved MB':>11} {'activations MB':>14} "
              f"{'samples/s':>10}", flush=True)
        trend = []
        for layer in chosen:
            for gc in (False, True):
                scenario = {"name": f"layer{layer}", "layers": [layer], "components": "all",
                            "train": {"gradient_checkpointing": gc}}
                r = run_one(str(assets), scenario, trend_batch, max(2, steps // 3), warmup, device, args.precision)
                r.update(layer=layer, gradient_checkpointing=gc, samples_per_s=r["samples"] / r["seconds"])
                trend.append(r)
                print(f"{layer:>5} {'on' if gc else 'off':>13} {r['peak_memory_mb']:>12,.0f} "
                      f"{fmt(r.get('peak_reserved_mb')):>11} {r['saved_activations_mb']:>14,.1f} "
                      f"{r['samples_per_s']:>10,.0f}", flush=True)
        results["layers"] = trend
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
