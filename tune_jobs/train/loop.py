"""One fine-tuning trial: model + placement + data -> per-epoch metrics and resumable checkpoints.

`run_trial(config)` takes one plain dict (a grid point of the spec, `TrialConfig.to_dict()`), needs no Ray, and
calls `on_epoch(metrics, checkpoint_dir)` after every epoch; `ray_adapter.ray_trainable` wraps it for Ray Tune.
Checkpoints hold only what trains (adapters + head, or everything for full fine-tuning), optimizer, scheduler,
RNG state, the metrics so far and the epoch's predictions on the dev split (`predictions.parquet`); never the
frozen base model. A NaN/inf loss is a result, not an error: the trial stops with one last report
`{diverged: True, diverged_reason: ...}` (no checkpoint) and returns normally, so Ray neither retries nor resumes it.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from record.metrics import DEV, DIVERGED, SELECTION, TASK_METRICS
from tune_jobs.data.splits import PaddedSplit, length_grouped_batches, padding_efficiency
from tune_jobs.study.grid import value_text
from tune_jobs.study.spec import TrialConfig

from .checkpoint import load_checkpoint, save_checkpoint, write_state
from .device import choose_device
from .meters import MemoryMeter, SavedTensorMeter, peak_steps, trainable_state_bytes
from .prediction_file import predictions_table, write_predictions
from .prepare import Prepared, prepare
from .provenance import provenance
from .task_metrics import compute

OnEpoch = Callable[[dict, "str | None"], None]  # (metrics, checkpoint dir; None for the diverged report)


class TrialDiverged(RuntimeError):
    """A loss became NaN or infinite; the message is the reason, e.g. `train loss nan at epoch 2 step 5 (lr=1e12)`."""


CHECK_EVERY = 50  # steps between checks for a non-finite loss (each check waits for the device once)


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
    """Loss and the task's metrics (`tune_jobs.train.task_metrics`) on a split (or the given rows of it)."""
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
