"""One fine-tuning trial: model + placement + data -> per-epoch metrics and resumable checkpoints.

`run_trial(config)` takes one plain dict (a grid point of the spec, `TrialConfig.to_dict()`), needs no Ray, and
calls `on_epoch(metrics, checkpoint_dir)` after every epoch; `ray_trainable` wraps it for Ray Tune.
Checkpoints hold only what trains (adapters + head, or everything for full fine-tuning), optimizer, scheduler,
RNG state, the metrics so far and the epoch's predictions on the dev split (`predictions.parquet`); never the
frozen base model. A NaN/inf loss is a result, not an error: the trial stops with one last report
`{diverged: True, diverged_reason: ...}` (no checkpoint) and returns normally, so Ray neither retries nor resumes it.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lora_ext import apply_placement, architecture_for, count_trainable
from lora_ext.methods import reads_base_weights, uses_loraplus
from record.errors import InputError
from record.metrics import DEV, DIVERGED, REGRESSION, SELECTION, TASK_METRICS

from .checkpoint import load_checkpoint, save_checkpoint, write_state
from .data import PaddedSplit, TrialData, length_grouped_batches, padding_efficiency
from .device import DTYPES, FP16, FP32, capability_of, choose_device, choose_precision
from .grid import value_text
from .meters import MemoryMeter, SavedTensorMeter, peak_steps
from .metrics import compute
from .predictions import predictions_table, write_predictions
from .provenance import provenance
from .spec import TrialConfig

OnEpoch = Callable[[dict, "str | None"], None]  # (metrics, checkpoint dir; None for the diverged report)


class TrialDiverged(RuntimeError):
    """A loss became NaN or infinite; the message is the reason, e.g. `train loss nan at epoch 2 step 5 (lr=1e12)`."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _load_error(err: Exception, model: str) -> InputError:
    return InputError("model", f"cannot load model or tokenizer ({str(err).splitlines()[0][:120]})", got=model,
                     allowed="the alias minilm-l6, a local model directory, or a hub id with network access")


def load_tokenizer(tc: TrialConfig):
    """The model's tokenizer (a pad token set for decoder-only models, which ship without one)."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from .remote_model import local_model

    hf_logging.set_verbosity_error()  # the "newly initialized classifier" report is expected every trial
    hf_logging.disable_progress_bar()
    location = local_model(tc.model, weights=False)  # a model at a URI: staged on this node, without its weights
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError) as err:
        raise _load_error(err, tc.model) from None
    if tokenizer.pad_token is None:  # decoder-only models (Llama, Qwen) ship without one: pad with end-of-sequence
        if tokenizer.eos_token is None:
            raise InputError("model", "its tokenizer has neither a pad nor an end-of-sequence token to pad with",
                             got=tc.model, allowed="a tokenizer with pad_token or eos_token set")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(tc: TrialConfig, tokenizer, label_names: tuple[str, ...] | None):
    """Sequence-classification model with the task's head (one output and MSE loss for regression; the label names
    as id2label/label2id otherwise) and the spec's dropouts (weights or random init)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from .remote_model import local_model

    location = local_model(tc.model)  # a model at a URI: fetched once per node into the cache
    if tc.task == REGRESSION:
        head = {"num_labels": 1, "problem_type": "regression"}
    else:
        head = {"num_labels": len(label_names), "problem_type": "single_label_classification",
                "id2label": dict(enumerate(label_names)), "label2id": {n: i for i, n in enumerate(label_names)}}
    try:
        config = AutoConfig.from_pretrained(location, **head)
    except (OSError, ValueError) as err:
        raise _load_error(err, tc.model) from None
    arch = architecture_for(config.model_type)
    arch.set_dropouts(config, tc.hidden_dropout, tc.attention_dropout, tc.classifier_dropout)
    config.pad_token_id = tokenizer.pad_token_id
    # float32 master weights whatever dtype the checkpoint was saved in (transformers 5 loads dtype="auto", so a
    # bf16 checkpoint would train bf16 weights); bf16 compute, where chosen, comes from autocast.
    if tc.model_init == "random":
        return AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    model, info = AutoModelForSequenceClassification.from_pretrained(
        location, config=config, dtype=torch.float32, output_loading_info=True)
    check_loading_info(info, arch.head, tc.model)
    return model


def check_loading_info(info: dict, head: tuple[str, ...], model: str) -> None:
    """Only the classification head may be newly initialized: a checkpoint whose encoder weights are missing or
    of another shape would otherwise train a random encoder in silence (the verbosity setting hides the report)."""
    def in_head(key: str) -> bool:
        return any(part in head for part in key.split("."))

    missing = sorted(k for k in info.get("missing_keys", ()) if not in_head(k))
    mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys", ())
                        if not in_head(str(k[0] if isinstance(k, tuple) else k)))
    bad = missing or mismatched
    if bad:
        what = "missing from" if missing else "of another shape in"
        raise InputError("model", f"{len(bad)} encoder weight(s) {what} the checkpoint, e.g. {bad[0]}: it does not "
                        "match its config", got=model, allowed="a checkpoint saved for this architecture (only the "
                        "classification head may be new)")


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


def trainable_state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of what training adds per trainable parameter: the weights, their gradients and AdamW's moments."""
    params = [p for p in model.parameters() if p.requires_grad]
    weights = sum(p.numel() * p.element_size() for p in params)
    moments = sum(v.numel() * v.element_size() for st in optimizer.state.values() for v in st.values()
                  if torch.is_tensor(v) and v.dim() > 0)
    return 2 * weights + moments


CHECK_EVERY = 50  # steps between checks for a non-finite loss (each check waits for the device once)


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


@dataclass
class SplitOutputs:
    """One pass over a split in eval mode: the mean loss, the model's outputs (logits) and the rows they are of."""

    loss: float
    outputs: np.ndarray  # rows x classes (rows x 1 for regression), float32, in the order of `rows`
    rows: np.ndarray


def forward(p: Prepared, split: PaddedSplit, rows: np.ndarray | None = None) -> SplitOutputs:
    """The model's outputs on a split (or the given rows of it), longest rows first, in eval mode (no dropout,
    LoRA's included); one transfer from the device at the end."""
    p.model.eval()
    order = np.argsort(-split.lengths, kind="stable") if rows is None else rows
    size = p.tc.eval_batch_size
    chunks = [order[start:start + size] for start in range(0, len(order), size)]
    losses, outputs = [], []
    with torch.no_grad():
        for idx, batch in zip(chunks, p.host_batches(split, chunks)):
            with p.autocast():
                out = p.model(**p.to_device(batch))
            losses.append(out.loss.double() * len(idx))
            outputs.append(out.logits.float())
    loss = float(torch.stack(losses).sum()) / len(order)
    return SplitOutputs(loss, torch.cat(outputs).cpu().numpy(), order)


def evaluate(p: Prepared, split: PaddedSplit, rows: np.ndarray | None = None) -> dict:
    """Loss and the task's metrics (`tune_jobs.metrics`) on a split (or the given rows of it)."""
    return scored(p, split, forward(p, split, rows))


def scored(p: Prepared, split: PaddedSplit, out: SplitOutputs) -> dict:
    """Loss and the task's metrics of one pass's outputs."""
    return {"loss": out.loss, **compute(p.tc.task, out.outputs, split.labels[out.rows])}


def _lr_text(tc: TrialConfig) -> str:
    return f"(lr={value_text(tc.learning_rate)})"


def _first_non_finite(losses: torch.Tensor, upto: int, checked: int) -> int | None:
    """Index of the first non-finite loss among steps [checked, upto) (one device sync); None when all are finite."""
    bad = ~torch.isfinite(losses[checked:upto])
    if not bool(bad.any()):
        return None
    return checked + int(bad.nonzero()[0, 0])


def _optimizer_steps(optimizer: torch.optim.Optimizer) -> int:
    """Steps AdamW has taken (its `step` count of the first parameter); a skipped fp16 step does not count."""
    for state in optimizer.state.values():
        if "step" in state:
            return int(state["step"])
    return 0


@dataclass
class EpochResult:
    """One epoch's training: loss sum over samples, samples seen, its batches, optimizer steps the fp16 loss scaler
    skipped (an overflowing gradient)."""

    loss_sum: float
    seen: int
    batches: list[np.ndarray]
    skipped_steps: int


def train_epoch(p: Prepared, epoch: int, saved: SavedTensorMeter, batches: list[np.ndarray] | None = None,
                check_every: int = CHECK_EVERY) -> EpochResult:
    """One epoch of length-grouped batches (or the `batches` given: `plan --calibrate` times a few); TrialDiverged
    on a NaN/inf loss, found every `check_every` steps and at the end (so the device is not waited on each step)
    and reported with its exact step."""
    tc, model, optimizer, scaler = p.tc, p.model, p.optimizer, p.scaler
    model.train()
    split = p.data.padded["train"]
    if batches is None:
        batches = length_grouped_batches(split.lengths, tc.batch_size, seed=tc.seed * 1000 + epoch)
    probes = peak_steps(batches, split.lengths)
    losses = torch.zeros(len(batches), dtype=torch.float64, device=p.device)  # summed as Python floats were
    trainable = [q for q in model.parameters() if q.requires_grad]
    steps_before, checked = _optimizer_steps(optimizer), 0
    for step, batch in enumerate(p.host_batches(split, batches)):
        with p.autocast(), saved.step(step in probes):
            loss = model(**p.to_device(batch)).loss
        saved.end_step(step in probes)
        losses[step] = loss.detach()
        if scaler is None:
            loss.backward()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # clip (and AdamW) see true gradients
        if tc.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(trainable, tc.grad_clip)
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)  # skipped when the scaled gradients overflowed
            scaler.update()
        scheduler_step(p.scheduler)
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % check_every == 0 or step + 1 == len(batches):
            bad = _first_non_finite(losses, step + 1, checked)
            if bad is not None:
                raise TrialDiverged(f"train loss {float(losses[bad]):g} at epoch {epoch} step {bad + 1} "
                                    f"{_lr_text(tc)}")
            checked = step + 1
    sizes = torch.tensor([len(b) for b in batches], dtype=torch.float64, device=p.device)
    skipped = len(batches) - (_optimizer_steps(optimizer) - steps_before) if scaler is not None else 0
    return EpochResult(float((losses * sizes).sum()), int(sum(len(b) for b in batches)), batches, skipped)


def scheduler_step(scheduler) -> None:
    """The schedule's step; torch's warning that it ran before an optimizer step is expected when the fp16 loss
    scaler skipped that step (the schedule still follows the step count, as transformers' Trainer does)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
        scheduler.step()


def evaluate_all(p: Prepared, epoch: int) -> tuple[dict, SplitOutputs]:
    """val_* on the dev split and sel_* on the selection split (when there is one), and the dev split's outputs
    (its predictions, from the same pass); TrialDiverged on a NaN/inf loss."""
    splits = [(DEV, p.data.padded["eval"])]
    if p.data.sel is not None:
        splits.append((SELECTION, p.data.padded["sel"]))
    out, dev = {}, None
    for prefix, split in splits:
        outputs = forward(p, split)
        metrics = scored(p, split, outputs)
        if not math.isfinite(metrics["loss"]):
            raise TrialDiverged(f"{prefix.rstrip('_')} loss {metrics['loss']:g} at epoch {epoch} {_lr_text(p.tc)}")
        out.update({f"{prefix}{k}": v for k, v in metrics.items()})
        out[f"{prefix}examples"] = len(split.lengths)
        dev = outputs if prefix == DEV else dev
    return out, dev


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


def run_trial(config: dict, on_epoch: OnEpoch | None = None, resume_from: str | Path | None = None,
              device: str | None = None) -> list[dict]:
    """Train one grid point; returns the per-epoch metrics (the last one `diverged` if a loss turned NaN/inf)."""
    target = choose_device(TrialConfig.from_dict(config).resources, device)  # before anything loads
    memory = MemoryMeter(target)
    p = prepare(config, str(target))
    start_epoch, history = 0, []
    if resume_from is not None:
        start_epoch, history = load_checkpoint(Path(resume_from), p.model, p.optimizer, p.scheduler)
    saved = SavedTensorMeter(p.model)
    # the training node's versions, device and commit, in this run's first report only (a resumed run reports its
    # own node's): record.fields.PROVENANCE
    origin = provenance(target)

    for epoch in range(start_epoch + 1, p.tc.epochs + 1):
        t0 = time.perf_counter()
        memory.start_epoch()
        try:
            trained = train_epoch(p, epoch, saved)
            if target.type == "cuda":
                torch.cuda.synchronize(target)  # the last steps' kernels belong to training time
            train_time = time.perf_counter() - t0
            evals, dev = evaluate_all(p, epoch)
        except TrialDiverged as err:
            # the task's val_* metrics None: Tune requires the sweep's metric key in every report
            last = {"epoch": epoch, DIVERGED: True, "diverged_reason": str(err),
                    **{f"{DEV}{m}": None for m in TASK_METRICS[p.tc.task]}, **memory.read(), **p.sizes, **origin}
            history.append(last)
            if on_epoch is not None:
                on_epoch(last, None)
            break
        metrics = {
            "epoch": epoch, "train_loss": trained.loss_sum / trained.seen, **evals,
            "train_samples_per_s": trained.seen / train_time, "epoch_time_s": time.perf_counter() - t0,
            **memory.read(), "compute_dtype": p.compute_dtype,
            "saved_activations_mb": saved.peak_bytes / 2**20,
            "trainable_state_mb": trainable_state_bytes(p.model, p.optimizer) / 2**20, **p.sizes,
            "padding_efficiency": padding_efficiency(p.data.train_lengths, trained.batches), **origin,
        }
        origin = {}
        if p.scaler is not None:
            metrics["skipped_steps"] = trained.skipped_steps
        with tempfile.TemporaryDirectory(prefix="lora-sweep-ckpt-") as tmp:
            metrics["checkpoint_mb"] = save_checkpoint(Path(tmp), p.model, p.optimizer, p.scheduler)
            # The dev split's predictions of this epoch go into its checkpoint: Ray Tune persists a reported
            # checkpoint to storage_path (local, NFS or s3://) always, also for a trial resumed on another node,
            # while files written to the trial's own folder (tune.get_context().get_trial_dir(), a staging folder
            # on the worker) reach storage only with SyncConfig(sync_artifacts=True), off by default, every
            # sync_period. With CheckpointConfig(num_to_keep=1) the newest checkpoint, hence the last finished
            # epoch's predictions, is what stays; a diverged epoch reports no checkpoint and so writes none.
            write_predictions(predictions_table(p.tc.task, dev.outputs, p.data.padded["eval"].labels[dev.rows],
                                                dev.rows, epoch), Path(tmp))
            history.append(metrics)
            write_state(Path(tmp), epoch, history, p.tc.to_dict())
            if on_epoch is not None:
                on_epoch(metrics, tmp)
    return history


def copy_checkpoint_to(target: Path) -> OnEpoch:
    """An `on_epoch` callback for the CLI: keep the latest checkpoint in `target` (replaced atomically)."""

    def keep(metrics: dict, checkpoint_dir: str | None) -> None:
        if checkpoint_dir is None:  # the diverged report has no checkpoint: keep the last good one
            return
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(checkpoint_dir, tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)

    return keep


def release_memory() -> None:
    """Give freed heap memory back to the OS (and cached CUDA blocks back to the device) after a trial. Ray runs
    each trial of a reused actor in a new thread, and
    glibc keeps what a thread's malloc arena freed: measured +0.5-0.9 GB RSS per MiniLM trial, until Ray's memory
    monitor killed a 27-trial demo sweep on 24 GB. `malloc_trim` returns it (a no-op where libc has none)."""
    import ctypes
    import gc

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()  # the allocator's reserve would stay held against the next trials on this GPU
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass


def ray_trainable(config: dict) -> None:
    """Ray Tune function trainable: resumes from `tune.get_checkpoint()`, reports metrics + checkpoint each epoch."""
    try:
        _train_under_ray(config)
    finally:
        release_memory()


def _train_under_ray(config: dict) -> None:
    import ray
    from ray import tune

    choose_device(TrialConfig.from_dict(config).resources)  # a node without a usable GPU: before any download
    checkpoint = tune.get_checkpoint()
    node_id = ray.get_runtime_context().get_node_id()  # hostnames repeat on loopback test clusters; node ids don't

    def report(metrics: dict, checkpoint_dir: str | None) -> None:
        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report({**metrics, "node_id": node_id}, checkpoint=checkpoint)

    if checkpoint is None:
        run_trial(config, on_epoch=report)
        return
    with tempfile.TemporaryDirectory(prefix="lora-sweep-restore-") as local:
        with checkpoint.as_directory() as path:  # may be a download from S3: copy it out, then train
            shutil.copytree(path, local, dirs_exist_ok=True)
        run_trial(config, on_epoch=report, resume_from=local)
