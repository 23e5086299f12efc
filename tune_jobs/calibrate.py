"""`plan --calibrate`: time a few training steps of each distinct trial setup on this machine (or a cluster node) and
project what the study will cost: trial-hours, resource-hours at the spec's `resources`, money at a price.

Only what changes the speed of a step defines a setup (model, placement and method, data and max_length, batch
sizes, precision, gradient checkpointing); learning rates, seeds and epochs do not, so a rank x rate x seed study
is timed once per rank. Nothing is invented: without --calibrate, `plan` says what it would need.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .grid import cells, counted
from .spec import Study, TrialConfig

SPEED_SETTINGS = ("batch_size", "eval_batch_size", "precision", "gradient_checkpointing")


@dataclass(frozen=True)
class Timing:
    """Measured on one setup: seconds to set a trial up, per training sample, per epoch's evaluation (dev and
    selection splits), per checkpoint."""

    startup_s: float
    train_s_per_sample: float
    eval_s: float
    checkpoint_s: float
    train_rows: int

    def trial_seconds(self, epochs: int) -> float:
        """Projected wall time of one trial of `epochs` epochs."""
        return self.startup_s + epochs * (self.train_rows * self.train_s_per_sample + self.eval_s + self.checkpoint_s)


def speed_key(trial: TrialConfig) -> tuple:
    """What makes two trials take the same time per step."""
    return (trial.model, trial.model_init, trial.placement(), trial.data_config(),
            *(getattr(trial, k) for k in SPEED_SETTINGS))


def _eval_seconds(p, split, batches: int) -> float:
    """An evaluation of a whole split, projected from `batches` of its batches spread evenly over its length-sorted
    order (evaluation sorts rows longest first, so a random sample of rows would pad more than the real pass)."""
    import numpy as np

    from .trial import evaluate

    size = p.tc.eval_batch_size
    order = np.argsort(-split.lengths, kind="stable")
    starts = list(range(0, len(order), size))
    picked = sorted({starts[round(i * (len(starts) - 1) / max(1, batches - 1))] for i in range(min(batches,
                                                                                                   len(starts)))})
    seconds = 0.0
    for start in picked:
        t0 = time.perf_counter()
        evaluate(p, split, order[start:start + size])
        seconds += time.perf_counter() - t0
    return seconds / len(picked) * len(starts)


def measure(config: dict, steps: int = 10, warmup: int = 2, device: str | None = None, eval_batches: int = 3
            ) -> Timing:
    """Set one trial up (timed), train `warmup` then `steps` batches drawn as an epoch draws them (timed), evaluate
    a few batches of each evaluated split (timed, projected to the split) and write one checkpoint (timed)."""
    from .checkpoint import save_checkpoint
    from .data import length_grouped_batches
    from .meters import SavedTensorMeter
    from .trial import prepare, train_epoch

    start = time.perf_counter()
    p = prepare(config, device)
    startup = time.perf_counter() - start
    tc, data = p.tc, p.data
    batches = length_grouped_batches(data.train_lengths, tc.batch_size, seed=tc.seed * 1000 + 1)
    saved = SavedTensorMeter(p.model)
    train_epoch(p, 1, saved, batches=batches[:warmup])
    timed = batches[warmup:warmup + steps] or batches[:steps]
    start = time.perf_counter()
    train_epoch(p, 1, saved, batches=timed)  # ends with a finiteness check: the device has finished
    train_s = (time.perf_counter() - start) / sum(len(b) for b in timed)
    eval_s = _eval_seconds(p, data.padded["eval"], eval_batches)
    if data.sel is not None:
        eval_s += _eval_seconds(p, data.padded["sel"], eval_batches)
    with tempfile.TemporaryDirectory(prefix="lora-sweep-calibrate-") as tmp:
        start = time.perf_counter()
        save_checkpoint(Path(tmp), p.model, p.optimizer, p.scheduler)
        checkpoint_s = time.perf_counter() - start
    return Timing(startup, train_s, eval_s, checkpoint_s, len(data.train_lengths))


@dataclass(frozen=True)
class ScenarioCost:
    """Projected cost of one scenario: trial counts and hours at `min` and at `max` repeats (equal when fixed)."""

    scenario: str
    trials: tuple[int, int]
    trial_hours: tuple[float, float]
    resource_hours: tuple[float, float]


def resource_kind(resources: dict) -> tuple[str, float]:
    """("GPU", n) when a trial asks for GPUs, else ("CPU", n): what a trial-hour is billed in."""
    return ("GPU", float(resources["gpu"])) if resources.get("gpu") else ("CPU", float(resources.get("cpu", 1)))


def project(study: Study, timings: dict[tuple, Timing]) -> list[ScenarioCost]:
    """Per scenario: its cells' trials at min and max repeats, times each trial's projected seconds."""
    _, amount = resource_kind(study.resources)
    totals: dict[str, list[float]] = {}
    for cell in counted(cells(study)):  # under `select:`: every candidate's tune seeds, one confirm stage each
        seconds = timings[speed_key(cell.trials[0])].trial_seconds(cell.trials[0].epochs)
        row = totals.setdefault(cell.trials[0].scenario, [0, 0, 0.0, 0.0])
        row[0] += cell.repeats.min
        row[1] += cell.repeats.max
        row[2] += cell.repeats.min * seconds / 3600
        row[3] += cell.repeats.max * seconds / 3600
    return [ScenarioCost(name, (int(lo), int(hi)), (h_lo, h_hi), (h_lo * amount, h_hi * amount))
            for name, (lo, hi, h_lo, h_hi) in totals.items()]


def setups(study: Study) -> dict[tuple, TrialConfig]:
    """One trial per distinct setup of the study (its first, in grid order)."""
    out: dict[tuple, TrialConfig] = {}
    for cell in cells(study):
        out.setdefault(speed_key(cell.trials[0]), cell.trials[0])
    return out


def calibrate(study: Study, device: str | None = None, steps: int = 10, address: str | None = None,
              ) -> dict[tuple, Timing]:
    """Time every distinct setup of the study, one after another, with as many CPU threads as a trial gets."""
    todo = setups(study)
    if address:
        return _calibrate_on_cluster(study, todo, address, steps)
    import torch

    from .sweep import prepare_data

    prepare_data(list(todo.values()))  # tokenized once, as a sweep does before its trials start
    threads = torch.get_num_threads()
    if not (device or "").startswith("cuda") and not torch.cuda.is_available():
        torch.set_num_threads(max(1, math.floor(study.resources.get("cpu", 1))))  # as Ray sets OMP_NUM_THREADS
    try:
        return {key: measure(trial.to_dict(), steps, device=device) for key, trial in todo.items()}
    finally:
        torch.set_num_threads(threads)


def _measure_on_node(config: dict, steps: int) -> Timing:
    """On a cluster node: tokenize the setup's data into the node's cache first (as a sweep does), then time it."""
    from .spec import TrialConfig as Config
    from .sweep import prepare_data

    prepare_data([Config.from_dict(config)])
    return measure(config, steps)


def _calibrate_on_cluster(study: Study, todo: dict[tuple, TrialConfig], address: str, steps: int):
    """The same timings, each in a Ray task with the trial's resources, on a node of the cluster at `address`
    (attached as a sweep attaches: the offline and cache settings reach the task; local paths made absolute)."""
    import ray

    from .sweep import absolute_paths, connect_ray

    connect_ray(address)
    res = study.resources
    task = ray.remote(num_cpus=res.get("cpu", 1), num_gpus=res.get("gpu", 0))(_measure_on_node)
    try:
        return {key: ray.get(task.remote(absolute_paths(trial).to_dict(), steps)) for key, trial in todo.items()}
    finally:
        ray.shutdown()


def money(value: float) -> str:
    """An amount: cents above 1, three significant digits below."""
    return f"{value:,.2f}" if value >= 1 else f"{value:.3g}"


def format_costs(study: Study, timings: dict[tuple, Timing], costs: list[ScenarioCost], price: float | None,
                 where: str) -> str:
    """The bill before the study: per setup what was measured, per scenario and for the study what it projects."""
    kind, amount = resource_kind(study.resources)
    lines = [f"calibration {where}: {len(timings)} distinct setup(s), each trial at {{{kind.lower()}: {amount:g}}}",
             f"{'scenario':<24} {'trials':>9} {'trial-hours':>13} {kind + '-hours':>13}"
             + (f" {'cost':>15}" if price is not None else "")]

    def span(pair, fmt):
        text = [fmt(v) if callable(fmt) else fmt.format(v) for v in pair]
        return text[0] if pair[0] == pair[1] else f"{text[0]}-{text[1]}"

    for c in costs:
        paid = f" {span((c.resource_hours[0] * price, c.resource_hours[1] * price), money):>15}" \
            if price is not None else ""
        lines.append(f"{c.scenario:<24} {span(c.trials, '{}'):>9} {span(c.trial_hours, '{:.3g}'):>13} "
                     f"{span(c.resource_hours, '{:.3g}'):>13}{paid}")
    total = [sum(getattr(c, f)[i] for c in costs) for f in ("trials", "trial_hours", "resource_hours") for i in (0, 1)]
    paid = f" {span((total[4] * price, total[5] * price), money):>15}" if price is not None else ""
    lines.append(f"{'study':<24} {span(total[0:2], '{:.0f}'):>9} {span(total[2:4], '{:.3g}'):>13} "
                 f"{span(total[4:6], '{:.3g}'):>13}{paid}")
    if price is None:
        lines.append("money: add --price-per-hour P (per " + kind + "-hour)")
    lines.append("projected from timed steps (setup, training, evaluation, checkpoint); Ray's own start-up per trial "
                 "and waiting for free resources are not included; a range is adaptive repeats' min to max")
    if study.select is not None:
        lines.append(f"tune, then confirm: every candidate's {study.select.tune_repeats} tune seed(s) plus one confirm "
                     "stage per placement" + (", before early stopping (an upper bound: ASHA ends the worse candidates "
                                              "sooner)" if study.select.early_stop else ""))
    return "\n".join(lines)
