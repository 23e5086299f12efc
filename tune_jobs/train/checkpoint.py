"""Epoch checkpoints in standard formats, plus what resuming needs.

Layout of one checkpoint directory (never the frozen base model):
    adapter_config.json, adapter_model.safetensors   LoRA: PEFT's `save_pretrained` (adapters, and the head
                                                     through `modules_to_save`; task_type SEQ_CLS)
    head.safetensors                                 classifier_only: the head's weights, transformers names
    config.json, model.safetensors                   full fine-tuning: transformers' `save_pretrained`
    train_state.pt                                   optimizer, scheduler, RNG states (torch, CUDA, numpy, random)
    trial_state.json                                 last finished epoch, metrics so far, the trial config
    predictions.parquet                              the epoch's predictions on the dev split (record.predictions;
                                                     written by the trial, not needed to resume)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from record.errors import InputError

STATE_FILE = "trial_state.json"
ADAPTER_WEIGHTS, HEAD_WEIGHTS, FULL_WEIGHTS = "adapter_model.safetensors", "head.safetensors", "model.safetensors"


def _is_peft(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Trained weights under the model's own parameter names (CPU copies)."""
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_weights(path: Path, model) -> None:
    """The trained weights in the format that fits the trial: PEFT adapter, head only, or the whole model."""
    from safetensors.torch import save_file

    if _is_peft(model):
        model.save_pretrained(str(path))  # adapter_config.json + adapter_model.safetensors (+ PEFT's README)
    elif all(p.requires_grad for p in model.parameters()):
        model.save_pretrained(str(path))  # full fine-tuning: a complete transformers model directory
    else:
        save_file(trainable_state(model), str(path / HEAD_WEIGHTS), metadata={"format": "pt"})


def load_weights(path: Path, model) -> None:
    """Put what `save_weights` wrote back into `model`; InputError if it is not this trial's set of weights."""
    from safetensors.torch import load_file

    if _is_peft(model):
        from peft import get_peft_model_state_dict, set_peft_model_state_dict

        file, expected = path / ADAPTER_WEIGHTS, set(get_peft_model_state_dict(model))
    else:
        file = path / (FULL_WEIGHTS if all(p.requires_grad for p in model.parameters()) else HEAD_WEIGHTS)
        expected = set(trainable_state(model))
    if not file.is_file():
        raise InputError("checkpoint", f"no {file.name}: not a checkpoint of this kind of trial", got=str(path))
    weights = load_file(str(file))
    if set(weights) != expected:
        raise InputError("checkpoint", "does not match this trial's trainable parameters", got=str(path))
    if _is_peft(model):
        set_peft_model_state_dict(model, weights)
    else:
        model.load_state_dict(weights, strict=False)


def save_checkpoint(path: Path, model, optimizer, scheduler) -> float:
    """Write weights, optimizer, scheduler and RNG state; return their size in MB."""
    path.mkdir(parents=True, exist_ok=True)
    save_weights(path, model)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(),
                "python_rng": random.getstate(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
               path / "train_state.pt")
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file()) / 2**20


def write_state(path: Path, epoch: int, history: list[dict], config: dict) -> None:
    """The checkpoint's JSON part: last finished epoch, metrics so far and the trial config."""
    (path / STATE_FILE).write_text(json.dumps({"epoch": epoch, "history": history, "config": config}))


def load_checkpoint(path: Path, model, optimizer, scheduler) -> tuple[int, list[dict]]:
    """Restore what `save_checkpoint` wrote; returns (last finished epoch, metrics history)."""
    state = json.loads((path / STATE_FILE).read_text())
    load_weights(path, model)
    extra = torch.load(path / "train_state.pt", map_location="cpu", weights_only=False)
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    torch.set_rng_state(extra["torch_rng"])
    np.random.set_state(extra["numpy_rng"])
    random.setstate(extra["python_rng"])
    cuda_rng = extra.get("cuda_rng")
    if cuda_rng and torch.cuda.is_available():  # dropout masks drawn on the GPU
        if len(cuda_rng) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_rng)
        else:  # resumed with another number of visible GPUs (Ray gives a trial its own): the trial's device
            torch.cuda.set_rng_state(cuda_rng[0])
    return state["epoch"], state["history"]
