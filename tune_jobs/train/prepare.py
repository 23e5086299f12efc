"""A trial ready to train on its device (`Prepared`): seeded, loaded, adapted, placed in its precision, with
its optimizer (AdamW, or PEFT's LoRA+ one) and schedule.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch

from lora_ext import apply_placement, count_trainable
from lora_ext.methods import reads_base_weights, uses_loraplus
from tune_jobs.data.splits import PaddedSplit, TrialData
from tune_jobs.study.spec import TrialConfig

from .device import DTYPES, FP16, FP32, capability_of, choose_device, choose_precision
from .model import load_model, load_tokenizer


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_optimizer(model: torch.nn.Module, tc: TrialConfig, fused: bool = False) -> torch.optim.Optimizer:
    """AdamW over trainable parameters; no weight decay on biases and LayerNorm weights (the usual recipe). LoRA+
    methods: PEFT's `create_loraplus_optimizer` (B at loraplus_lr_ratio x the rate; its own decay groups).
    `fused`: one fused kernel per step on CUDA instead of a launch per parameter tensor."""
    extra = {"fused": True} if fused else {}
    if tc.baseline is None and uses_loraplus(tc.method):
        from peft.optimizers import create_loraplus_optimizer

        return create_loraplus_optimizer(model, torch.optim.AdamW, lr=tc.learning_rate,
                                         loraplus_lr_ratio=tc.loraplus_lr_ratio, loraplus_weight_decay=tc.weight_decay,
                                         betas=tuple(tc.adam_betas), eps=tc.adam_epsilon, **extra)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": tc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=tc.learning_rate, betas=tuple(tc.adam_betas),
                             eps=tc.adam_epsilon, **extra)


def build_scheduler(optimizer, tc: TrialConfig, steps_per_epoch: int):
    from transformers import get_scheduler

    total = steps_per_epoch * tc.epochs
    name = {"constant": "constant_with_warmup"}.get(tc.lr_schedule, tc.lr_schedule)
    return get_scheduler(name, optimizer, num_warmup_steps=int(tc.warmup_ratio * total), num_training_steps=total)


@dataclass
class Prepared:
    """A trial ready to train on its device: config, data, adapted model, optimizer, schedule and precision."""

    tc: TrialConfig
    device: torch.device
    model: torch.nn.Module
    data: TrialData
    optimizer: torch.optim.Optimizer
    scheduler: object
    compute_dtype: str  # bf16 / fp16 (autocast) or fp32
    scaler: torch.amp.GradScaler | None  # fp16 only: loss scaling against gradient underflow
    sizes: dict  # trainable_params, total_params, params_relative_pct

    def autocast(self):
        return torch.autocast(self.device.type, dtype=DTYPES[self.compute_dtype], enabled=self.compute_dtype != FP32)

    def to_device(self, batch: dict) -> dict:
        """A batch on the trial's device; from pinned memory without waiting on CUDA."""
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def host_batches(self, split: PaddedSplit, rows: list[np.ndarray]) -> list[dict]:
        """The batches of a pass built at once from the padded arrays. On CUDA each input of the whole pass is
        one pinned buffer (a pinned allocation costs far more than a copy) that the batches are views of, so every
        step's copy to the device is asynchronous."""
        built = [split.batch(r) for r in rows]
        if self.device.type != "cuda" or not built:
            return built
        out: list[dict] = [{} for _ in built]
        for key in built[0]:
            pinned = torch.cat([b[key].reshape(-1) for b in built]).pin_memory()
            for i, view in enumerate(torch.split(pinned, [b[key].numel() for b in built])):
                out[i][key] = view.view(built[i][key].shape)
        return out


def frozen_linears_to(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Store every frozen Linear layer's weight and bias in `dtype` (the autocast dtype); returns bytes saved.

    Autocast caches only the casts of weights that require grad, so a frozen fp32 base is cast again at every call
    and the copy kept for backward. Autocast would cast these weights to `dtype` for the matmul anyway, so the
    arithmetic is unchanged; LayerNorms and embeddings (computed in fp32 under autocast) keep fp32.
    """
    saved = 0
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if isinstance(module, torch.nn.Linear) and own and not any(q.requires_grad for q in own) \
                and own[0].dtype != dtype:
            saved += sum(q.numel() * (q.element_size() - torch.empty(0, dtype=dtype).element_size()) for q in own)
            module.to(dtype)
    return saved


def keeps_fp32_base(tc: TrialConfig) -> bool:
    """Full fine-tuning trains the weights (fp32 master copies); DoRA's forward reads the base weights (its norm)."""
    return tc.baseline == "full" or (tc.baseline is None and reads_base_weights(tc.method))


def prepare(config: dict, device: str | None = None) -> Prepared:
    """Load, adapt and place one grid point's model with its data, optimizer, schedule and precision (seeded);
    DeviceUnavailable before anything loads when it asks for a GPU this node cannot give."""
    tc = TrialConfig.from_dict(config)
    target = choose_device(tc.resources, device)
    seed_everything(tc.seed)
    tokenizer = load_tokenizer(tc)
    data = TrialData.build(tc.data_config(), tokenizer, tc.seed, tc.selection_seed or 0)
    return prepare_model(tc, target, tokenizer, data)


def enable_checkpointing(model: torch.nn.Module) -> None:
    """Activation (gradient) checkpointing, non-reentrant: it gives adapter gradients even though the frozen inputs
    need no grad. transformers >= 5.2x names it `activation_checkpointing_enable` (the old name warns)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def prepare_model(tc: TrialConfig, target: torch.device, tokenizer, data: TrialData) -> Prepared:
    """The model, adapted and placed, in its precision, with optimizer and schedule, for data already loaded
    (bench/gpu.py builds its data without `datasets`)."""
    compute_dtype = choose_precision(tc.precision, capability_of(target))
    model = load_model(tc, tokenizer, data.label_names)
    total_params = sum(q.numel() for q in model.parameters())
    model = apply_placement(model, tc.placement())  # PiSSA/OLoRA decompose the fp32 base here, before any cast
    if tc.gradient_checkpointing:
        enable_checkpointing(model)
    model.to(target)
    if compute_dtype != FP32 and not keeps_fp32_base(tc):
        frozen_linears_to(model, DTYPES[compute_dtype])
    trainable = count_trainable(model)
    optimizer = build_optimizer(model, tc, fused=target.type == "cuda")
    scheduler = build_scheduler(optimizer, tc, math.ceil(len(data.train_lengths) / tc.batch_size))
    scaler = torch.amp.GradScaler(target.type) if compute_dtype == FP16 else None
    sizes = {"trainable_params": trainable, "total_params": total_params,
             "params_relative_pct": 100.0 * trainable / total_params}
    return Prepared(tc, target, model, data, optimizer, scheduler, compute_dtype, scaler, sizes)
