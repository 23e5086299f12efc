"""Several LoRA trials over one frozen base in one process, against one process per trial (issue 21, item 4).

K trials of one study (different placements, ranks, learning rates and seeds, each with its own classifier head and
optimizer) train on real SST-2 rows:
  separate  K processes started together on the same cores, each loading its own copy of the base model;
  packed    one process, one base model, K PEFT adapters (`add_adapter`, per-adapter `modules_to_save` heads); each
            step runs the adapters one after another (`set_adapter`), each with its own batch and optimizer.
Per-sample routing of one concatenated batch to K adapters (mLoRA's way) is not measured: PEFT refuses
`adapter_names` in training mode ("Cannot pass `adapter_names` when the model is in training mode"), so it would
mean writing our own LoRA forward; the packed figures here say whether that is worth it.

Separate processes get an equal share of the cores' threads each (no oversubscription); the packed process all of
them. Prints samples/s and peak RSS of both for each K, and the exactness check (fp32, dropout off): a packed step's
losses and gradients equal the separate trials' to 1e-5.

    python bench/packing.py                   # K = 2, 4, 8 on MiniLM on this CPU
    python bench/packing.py --model .gpu_bench/model --data .gpu_bench/sst2 --device cuda --steps 30 --batch 32
        # one GPU, offline: the folder `python bench/gpu.py --prepare .gpu_bench` writes (random RoBERTa-base)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PLACEMENTS = [  # (layers, components, r, learning rate): different placements, ranks and rates
    ("all", ("q", "k", "v", "o", "up", "down"), 8, 1.4e-3), ("upper", ("v", "up"), 4, 2e-3),
    ("lower", ("q", "v"), 8, 1e-3), ("all", ("up",), 16, 7e-4), ("even", ("o", "down"), 4, 3e-3),
    ("upper", ("q", "k", "v"), 2, 1.4e-3), ("lower", ("up", "down"), 8, 2e-3), ("all", ("v",), 1, 4e-3),
]


def peak_mb(device: str) -> float:
    """Peak memory of this process: CUDA max allocated on a GPU, the peak RSS (VmHWM) on a CPU."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024


def base_model(model: str, device: str):
    """The base sequence classifier, seeded (so every copy has the same random head), dropout off."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification
    from transformers.utils import logging

    from lora_ext import model_location

    logging.set_verbosity_error()  # the "newly initialized classifier" report, once per trial
    location = model_location(model)
    config = AutoConfig.from_pretrained(location, num_labels=2)
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
        setattr(config, key, 0.0)
    torch.manual_seed(0)
    folder = Path(location)
    if folder.is_dir() and not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        # a folder with a config and tokenizer only (bench/gpu.py --prepare): random weights, nothing downloaded
        with torch.device(device):
            return AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    return AutoModelForSequenceClassification.from_pretrained(location, config=config,
                                                              dtype=torch.float32).to(device)


def lora_config(model, k: int):
    from lora_ext import architecture_for, resolve_layers
    from lora_ext.adapt import to_lora_config
    from lora_ext.placement import Placement

    layers, components, r, _ = PLACEMENTS[k % len(PLACEMENTS)]
    n = model.config.num_hidden_layers
    return to_lora_config(Placement(layers=resolve_layers(layers, n), components=components, r=r),
                          architecture_for(model.config.model_type))


def batches(model: str, k: int, steps: int, size: int, max_length: int) -> list[dict]:
    """Trial k's batches: its own rows of the real SST-2 train split (one tokenizer call)."""
    import torch
    from transformers import AutoTokenizer

    from lora_ext import model_location

    lines = (Path(os.environ["LORA_SWEEP_BENCH_SST2"]) / "train.tsv").read_text().splitlines()[1:]
    start = 1 + k * steps * size
    rows = [line.split("\t") for line in lines[start:start + steps * size]]
    tok = AutoTokenizer.from_pretrained(model_location(model))
    enc = tok([r[0] for r in rows], padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    labels = torch.tensor([int(r[1]) for r in rows])
    return [{"input_ids": enc["input_ids"][i * size:(i + 1) * size],
             "attention_mask": enc["attention_mask"][i * size:(i + 1) * size],
             "labels": labels[i * size:(i + 1) * size]} for i in range(steps)]


def one_step(model, optimizer, batch: dict, device: str) -> tuple[float, dict]:
    """Loss and gradients (by name) of one step, then the optimizer step."""
    loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach()), grads


def separate_trial(model_name: str, k: int, steps: int, size: int, max_length: int, device: str, barrier, out,
                   threads: int):
    """One trial alone in its process: own base model copy, adapter k, its batches; reports its loop time."""
    import torch
    from peft import get_peft_model

    torch.set_num_threads(threads)  # its share of the cores, as a scheduler would give it (no oversubscription)
    model = base_model(model_name, device)
    torch.manual_seed(100 + k)
    peft_model = get_peft_model(model, lora_config(model, k)).train()
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=PLACEMENTS[k % 8][3])
    data = batches(model_name, k, steps, size, max_length)
    if barrier is not None:
        barrier.wait()
    start = time.perf_counter()
    for batch in data:
        one_step(peft_model, optimizer, batch, device)
    out.put((k, time.perf_counter() - start, peak_mb(device)))


def packed_trials(model_name: str, count: int, steps: int, size: int, max_length: int, device: str, out=None):
    """K trials in one process over one base: K adapters with their own heads and optimizers, run in turn."""
    import torch
    from peft import get_peft_model

    model = base_model(model_name, device)
    torch.manual_seed(100)
    peft_model = get_peft_model(model, lora_config(model, 0), adapter_name="t0")
    for k in range(1, count):
        torch.manual_seed(100 + k)  # the same initial A as the separate trial k
        peft_model.add_adapter(f"t{k}", lora_config(model, k))
    peft_model.train()
    optimizers = []
    for k in range(count):
        peft_model.set_adapter(f"t{k}")  # makes adapter k (and its head copy) the trainable parameters
        optimizers.append(torch.optim.AdamW([p for n, p in peft_model.named_parameters() if f".t{k}." in n
                                             or n.endswith(f".t{k}")], lr=PLACEMENTS[k % 8][3]))
    data = [batches(model_name, k, steps, size, max_length) for k in range(count)] if steps else []
    start = time.perf_counter()
    for step in range(steps):
        for k in range(count):
            peft_model.set_adapter(f"t{k}")
            one_step(peft_model, optimizers[k], data[k][step], device)
    elapsed = time.perf_counter() - start
    if out is not None:
        out.put((elapsed, peak_mb(device)))
    return peft_model, optimizers, data, elapsed


def exactness(model_name: str, count: int, size: int, max_length: int, device: str) -> float:
    """Largest |difference| between a packed step's losses/gradients and the separate trials' (two steps each)."""
    import torch
    from peft import get_peft_model

    reference = []
    for k in range(count):
        model = base_model(model_name, device)
        torch.manual_seed(100 + k)
        peft_model = get_peft_model(model, lora_config(model, k), adapter_name=f"t{k}").train()
        optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=PLACEMENTS[k % 8][3])
        reference.append([one_step(peft_model, optimizer, b, device) for b in batches(model_name, k, 2, size,
                                                                                        max_length)])
    packed, optimizers, _, _ = packed_trials(model_name, count, 0, size, max_length, device)
    data = [batches(model_name, k, 2, size, max_length) for k in range(count)]
    worst = 0.0
    for step in range(2):
        for k in range(count):
            packed.set_adapter(f"t{k}")
            loss, grads = one_step(packed, optimizers[k], data[k][step], device)
            ref_loss, ref_grads = reference[k][step]
            assert set(grads) == set(ref_grads), (k, sorted(set(grads) ^ set(ref_grads))[:4])
            worst = max(worst, abs(loss - ref_loss), *(float((grads[n] - ref_grads[n]).abs().max()) for n in grads))
    return worst


def run(model: str, counts: list[int], steps: int, size: int, max_length: int, device: str) -> None:
    ctx = mp.get_context("spawn")
    print(f"{model} on {device}, {os.cpu_count()} cores, batch {size} x {max_length} tokens, {steps} steps per trial")
    print(f"{'K':>3} {'separate samples/s':>19} {'packed samples/s':>17} {'ratio':>6} {'separate peak MB':>17} "  # sum
          f"{'packed peak MB':>15} {'exact (max |diff|)':>19}")
    for count in counts:
        barrier, out = ctx.Barrier(count), ctx.Queue()
        threads = max(1, (os.cpu_count() or 1) // count)
        procs = [ctx.Process(target=separate_trial, args=(model, k, steps, size, max_length, device, barrier, out,
                                                          threads)) for k in range(count)]
        for p in procs:
            p.start()
        done = [out.get() for _ in procs]
        for p in procs:
            p.join()
        separate_sps = count * steps * size / max(t for _, t, _ in done)
        separate_mb = sum(mb for _, _, mb in done)
        packed_out = ctx.Queue()
        proc = ctx.Process(target=packed_trials, args=(model, count, steps, size, max_length, device, packed_out))
        proc.start()
        elapsed, packed_mb = packed_out.get()
        proc.join()
        packed_sps = count * steps * size / elapsed
        diff = exactness(model, count, size, max_length, device)
        print(f"{count:>3} {separate_sps:>19.1f} {packed_sps:>17.1f} {packed_sps / separate_sps:>6.2f} "
              f"{separate_mb:>17,.0f} {packed_mb:>15,.0f} {diff:>19.2e}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--k", default="2,4,8", help="trial counts to compare")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    glue = os.environ.get("GLUE_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data"
    parser.add_argument("--data", default=str(Path(glue) / "sst2"), help="folder with SST-2's train.tsv")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["LORA_SWEEP_BENCH_SST2"] = str(Path(args.data).resolve())  # read by the spawned trial processes
    run(args.model, [int(k) for k in args.k.split(",")], args.steps, args.batch, args.max_length, args.device)


if __name__ == "__main__":
    main()
