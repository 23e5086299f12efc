"""`plan --calibrate`: time a few training steps of each distinct trial setup on this machine (or a cluster node) and
project what the study will cost: trial-hours, resource-hours at the spec's `resources`, money at a price.

Only what changes the speed of a step defines a setup (model, placement and method, data and max_length, batch
sizes, precision, gradient checkpointing); learning rates, seeds and epochs do not, so a rank x rate x seed study
is timed once per rank. Nothing is invented: without --calibrate, `plan` says what it would need.

A fractional GPU (`resources: {gpu: f}`, f < 1) packs floor(1/f) trials on one GPU under Ray, so a setup is timed
as that many copies at once (separate processes, or Ray tasks in one GPU's share on a cluster), each with the
trial's CPU threads, starting each timed phase together; a trial's projection is the slowest copy's. Timed alone
instead (`--calibrate-alone`), the table says that a real trial can take up to floor(1/f) times longer.
"""

from __future__ import annotations

import math
import pickle
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tune_jobs.study.grid import cells, counted
from tune_jobs.study.spec import Study, TrialConfig

SPEED_SETTINGS = ("batch_size", "eval_batch_size", "precision", "gradient_checkpointing")


@dataclass(frozen=True)
class Timing:
    """Measured on one setup: seconds to set a trial up, per training sample, per epoch's evaluation (dev and
    selection splits), per checkpoint; `copies` trials of it ran at once (each figure the slowest copy's;
    `train_spread`: how much faster the fastest copy trained, 0.1 = 10 %), on `device`."""

    startup_s: float
    train_s_per_sample: float
    eval_s: float
    checkpoint_s: float
    train_rows: int
    copies: int = 1
    train_spread: float = 0.0
    device: str = ""

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

    from tune_jobs.train.loop import evaluate

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


def measure(config: dict, steps: int = 10, warmup: int = 2, device: str | None = None, eval_batches: int = 3,
            together: Callable[[], None] | None = None) -> Timing:
    """Set one trial up (timed), train `warmup` then `steps` batches drawn as an epoch draws them (timed), evaluate
    a few batches of each evaluated split (timed, projected to the split) and write one checkpoint (timed).
    `together` (a barrier's wait) is called before each timed phase after the set-up, so that copies timed at once
    train, evaluate and checkpoint at the same time."""
    from tune_jobs.data.splits import length_grouped_batches
    from tune_jobs.train.checkpoint import save_checkpoint
    from tune_jobs.train.loop import train_epoch
    from tune_jobs.train.meters import SavedTensorMeter
    from tune_jobs.train.prepare import prepare

    together = together or (lambda: None)
    start = time.perf_counter()
    p = prepare(config, device)
    startup = time.perf_counter() - start
    tc, data = p.tc, p.data
    batches = length_grouped_batches(data.train_lengths, tc.batch_size, seed=tc.seed * 1000 + 1)
    saved = SavedTensorMeter(p.model)
    train_epoch(p, 1, saved, batches=batches[:warmup])  # ends reading the loss: the device is idle
    timed = batches[warmup:warmup + steps] or batches[:steps]
    together()
    start = time.perf_counter()
    train_epoch(p, 1, saved, batches=timed)  # ends reading the loss: the device has finished
    train_s = (time.perf_counter() - start) / sum(len(b) for b in timed)
    together()
    eval_s = _eval_seconds(p, data.padded["eval"], eval_batches)
    if data.sel is not None:
        eval_s += _eval_seconds(p, data.padded["sel"], eval_batches)
    together()
    with tempfile.TemporaryDirectory(prefix="lora-sweep-calibrate-") as tmp:
        start = time.perf_counter()
        save_checkpoint(Path(tmp), p.model, p.optimizer, p.scheduler)
        checkpoint_s = time.perf_counter() - start
    return Timing(startup, train_s, eval_s, checkpoint_s, len(data.train_lengths), device=str(p.device))


def packed(resources: dict) -> int:
    """How many trials Ray runs at once on one GPU at these resources: floor(1/gpu) for a fractional `gpu` (Ray
    fits 2 trials of 0.4 on a GPU, not 3; 1e-4 is Ray's resource granularity), else 1."""
    gpu = float(resources.get("gpu") or 0)
    return max(1, math.floor(1 / gpu + 1e-4)) if 0 < gpu < 1 else 1


def threads_of(resources: dict) -> int:
    """CPU threads a trial computes with: its `cpu` reservation, as Ray sets OMP_NUM_THREADS (at least 1)."""
    return max(1, math.floor(float(resources.get("cpu", 1))))


def slowest(timings: list[Timing]) -> Timing:
    """Copies of one setup timed at once, as one Timing: each figure the slowest copy's.

    Why the slowest and not the mean: the copies start each phase together, so every copy runs K-way shared until
    the fastest ends, and the slower ones then finish with the device less shared. The slowest copy's time is
    therefore at least a trial's mean time in a sweep that keeps K trials on the GPU all along (an upper bound, tight
    when the device shares fairly: `train_spread` says how fair it was), where the mean of the copies could fall
    below it. The point is to stop under-projecting, and the GPU share is held until the last trial of a packed
    group ends."""
    train = [t.train_s_per_sample for t in timings]
    return Timing(max(t.startup_s for t in timings), max(train), max(t.eval_s for t in timings),
                  max(t.checkpoint_s for t in timings), timings[0].train_rows, copies=len(timings),
                  train_spread=1 - min(train) / max(train) if max(train) > 0 else 0.0, device=timings[0].device)


def _picklable(err: BaseException) -> bytes:
    """An error as bytes that unpickle (the error itself where it round-trips, else a RuntimeError naming it)."""
    try:
        data = pickle.dumps(err)
        pickle.loads(data)
        return data
    except Exception:  # noqa: BLE001 - any error must reach the parent as one it can raise
        return pickle.dumps(RuntimeError(f"{type(err).__name__}: {err}"))


def _copy_in_process(index: int, config: dict, steps: int, device: str | None, threads: int, barrier,
                     results) -> None:
    """One copy (a spawned process, as a Ray trial is one): the trial's threads, then `measure` behind the barrier."""
    import torch

    torch.set_num_threads(threads)
    try:
        results.put((index, pickle.dumps(measure(config, steps, device=device, together=barrier.wait)), None))
    except BaseException as err:  # noqa: BLE001 - the others must not wait for this copy at the barrier
        barrier.abort()
        results.put((index, None, _picklable(err)))


def first_cause(errors: list[BaseException]) -> BaseException:
    """The error to raise for copies that failed: the first that is not a broken barrier (the others' failure)."""
    return next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)), errors[0])


def measure_together(config: dict, copies: int, steps: int = 10, device: str | None = None, threads: int = 1,
                     poll_s: float = 1.0) -> Timing:
    """Time `copies` copies of one setup at once on this machine: separate processes (multiprocessing spawn, as Ray
    trials are separate worker processes), `threads` CPU threads each; each sets its trial up, then all start each
    timed phase together. A copy that fails or dies ends the others (the barrier is broken) and is raised."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(copies), ctx.Queue()
    procs = [ctx.Process(target=_copy_in_process, args=(i, config, steps, device, threads, barrier, results),
                         name=f"lora-sweep-calibrate-{i}") for i in range(copies)]
    got: dict[int, tuple] = {}
    try:
        for proc in procs:
            proc.start()
        while len(got) < copies:
            try:
                index, timing, error = results.get(timeout=poll_s)
                got[index] = (timing, error)
                continue
            except queue.Empty:
                pass
            dead = [i for i, proc in enumerate(procs) if i not in got and proc.exitcode is not None]
            if dead:
                try:  # it may have reported just before it ended
                    index, timing, error = results.get(timeout=5)
                    got[index] = (timing, error)
                    continue
                except queue.Empty:
                    barrier.abort()
                    raise RuntimeError(f"calibration: copy {dead[0] + 1} of {copies} ended (exit code "
                                       f"{procs[dead[0]].exitcode}) without a timing, e.g. killed for memory") from None
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
                proc.join()
    errors = [pickle.loads(error) for _, (_, error) in sorted(got.items()) if error is not None]
    if errors:
        raise first_cause(errors)
    return slowest([pickle.loads(got[i][0]) for i in range(copies)])


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
              alone: bool = False) -> dict[tuple, Timing]:
    """Time every distinct setup of the study, one after another, with as many CPU threads as a trial gets; at a
    fractional GPU as many copies at once as Ray packs on one GPU (`packed`), unless `alone`. A trial that asks for
    a GPU on a machine without one fails here first (DeviceUnavailable), unless `device` says where to time."""
    todo = setups(study)
    copies = 1 if alone else packed(study.resources)
    if address:
        return _calibrate_on_cluster(study, todo, address, steps, device, copies)
    import torch

    from tune_jobs.sweep.runner import prepare_data
    from tune_jobs.train.device import choose_device

    choose_device(study.resources, device)  # one line before anything loads or tokenizes
    prepare_data(list(todo.values()))  # tokenized once, as a sweep does before its trials start
    threads = threads_of(study.resources)
    if copies > 1:
        return {key: measure_together(trial.to_dict(), copies, steps, device, threads) for key, trial in todo.items()}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # as Ray sets OMP_NUM_THREADS for a trial
    try:
        return {key: measure(trial.to_dict(), steps, device=device) for key, trial in todo.items()}
    finally:
        torch.set_num_threads(before)


def _measure_on_node(config: dict, steps: int, device: str | None = None, barrier=None) -> Timing:
    """On a cluster node: tokenize the setup's data into the node's cache first (as a sweep does), then time it;
    with `barrier` (a StartTogether actor) as one of several copies timed at once."""
    import ray

    from tune_jobs.study.spec import TrialConfig as Config
    from tune_jobs.sweep.runner import prepare_data

    try:
        prepare_data([Config.from_dict(config)])  # copies on one node: a file lock, one tokenizes
        together = (lambda: ray.get(barrier.wait.remote())) if barrier is not None else None
        return measure(config, steps, device=device, together=together)
    except BaseException:
        if barrier is not None:
            barrier.abort.remote()  # the other copies must not wait for this one
        raise


class StartTogether:
    """A barrier for Ray tasks (an async actor): `wait` returns when `parties` callers are waiting, phase after
    phase; `abort` releases everyone with BrokenBarrierError (a copy failed)."""

    def __init__(self, parties: int):
        self.parties, self.arrived, self.phase, self.broken, self.events = parties, 0, 0, False, {}

    async def wait(self) -> None:
        import asyncio

        if self.broken:
            raise threading.BrokenBarrierError("another calibration copy failed")
        event = self.events.setdefault(self.phase, asyncio.Event())
        self.arrived += 1
        if self.arrived == self.parties:
            self.arrived, self.phase = 0, self.phase + 1
            event.set()
        else:
            await event.wait()
        if self.broken:
            raise threading.BrokenBarrierError("another calibration copy failed")

    async def abort(self) -> None:
        self.broken = True
        for event in self.events.values():
            event.set()


def _calibrate_on_cluster(study: Study, todo: dict[tuple, TrialConfig], address: str, steps: int,
                          device: str | None = None, copies: int = 1):
    """The same timings, each in a Ray task with the trial's resources, on a node of the cluster at `address`
    (attached as a sweep attaches: the offline and cache settings reach the task; local paths made absolute).
    `copies` > 1: that many tasks at once in one placement-group bundle of `copies` x the trial's CPUs and GPU share
    (so on one node and one GPU, as Ray packs trials), starting each timed phase together."""
    import ray

    from tune_jobs.sweep.experiment import absolute_paths
    from tune_jobs.sweep.runner import connect_ray

    connect_ray(address)
    res = study.resources
    cpu, gpu = float(res.get("cpu", 1)), float(res.get("gpu", 0) or 0)
    task = ray.remote(num_cpus=cpu, num_gpus=gpu)(_measure_on_node)
    try:
        if copies == 1:
            return {key: ray.get(task.remote(absolute_paths(trial).to_dict(), steps, device))
                    for key, trial in todo.items()}
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        bundle = {"CPU": copies * cpu, "GPU": min(1.0, round(copies * gpu, 4))}
        group = placement_group([bundle], strategy="STRICT_PACK")
        ray.get(group.ready())
        in_group = task.options(max_retries=0, scheduling_strategy=PlacementGroupSchedulingStrategy(
            group, placement_group_bundle_index=0))
        barrier_actor = ray.remote(num_cpus=0)(StartTogether)
        out = {}
        for key, trial in todo.items():
            barrier = barrier_actor.remote(copies)
            config = absolute_paths(trial).to_dict()
            out[key] = _gather([in_group.remote(config, steps, device, barrier) for _ in range(copies)], barrier)
            ray.kill(barrier)
        return out
    finally:
        ray.shutdown()


def _gather(refs: list, barrier) -> Timing:
    """The copies' timings as one (`slowest`); the first copy's error that is not the broken barrier, if any."""
    import ray

    timings, errors, pending = [], [], list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        try:
            timings.append(ray.get(ready[0]))
        except Exception as err:  # noqa: BLE001 - RayTaskError and the copy's own error
            errors.append(err)
            barrier.abort.remote()
    if errors:
        raise first_cause(errors)
    return slowest(timings)


def sharing_lines(study: Study, timings: list[Timing]) -> list[str]:
    """What the timings stand for where trials share a GPU (none otherwise): how many copies ran at once, or that
    one trial was timed alone and how much longer a real one can take."""
    shared = packed(study.resources)
    if shared == 1 or not timings:
        return []
    gpu, threads = float(study.resources["gpu"]), threads_of(study.resources)
    copies = min(t.copies for t in timings)
    devices = sorted({t.device for t in timings if t.device})
    on = f" on {', '.join(devices)}" if devices else ""
    if any(d.startswith("cpu") for d in devices):
        on += " (the CPU standing in for the GPU the trials ask for)"
    if copies == 1:
        return [f"timed ONE trial alone{on}: at {{gpu: {gpu:g}}} Ray runs {shared} trials on one GPU at once, so a "
                f"real trial can take up to {shared}x longer than projected here (and the GPU-hours up to {shared}x "
                f"more); without --calibrate-alone, {shared} copies are timed at once"]
    spread = max(t.train_spread for t in timings)
    return [f"timed {copies} copies of each setup at once{on}, {threads} CPU thread(s) each: at {{gpu: {gpu:g}}} "
            f"Ray runs {shared} trials on one GPU; a trial's time is the slowest copy's (the fastest trained up to "
            f"{spread:.0%} faster)"]


def money(value: float) -> str:
    """An amount: cents above 1, three significant digits below."""
    return f"{value:,.2f}" if value >= 1 else f"{value:.3g}"


def format_costs(study: Study, timings: dict[tuple, Timing], costs: list[ScenarioCost], price: float | None,
                 where: str) -> str:
    """The bill before the study: per setup what was measured, per scenario and for the study what it projects."""
    kind, amount = resource_kind(study.resources)
    lines = [f"calibration {where}: {len(timings)} distinct setup(s), each trial at {{{kind.lower()}: {amount:g}}}",
             *sharing_lines(study, list(timings.values())),
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
