"""A whole study through Ray Tune: connect (or start) Ray, tokenize once on the driver, build the Tuner from the
spec's grid (searcher, ASHA, progress, TensorBoard HParams, trackers), run, resume or grow, and summarise.

A `StudySearcher` hands out the grid points (adaptive repeats included); every field (scenario, layers,
components, r, repeat, seed, ...) is a top-level config key, so a config column of Ray's ResultGrid / experiment
files.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from record.errors import InputError
from tune_jobs.data.job_upload import job_env_vars
from tune_jobs.data.splits import checked_study
from tune_jobs.remote.files import is_uri
from tune_jobs.study.grid import cells, counted, trial_counts
from tune_jobs.study.spec import Study, TrialConfig

from .experiment import absolute_paths, experiment_path, recorded_trials, storage_uri, trial_dirname
from .reach import RAY_ALLOWED, check_ray_address

if TYPE_CHECKING:
    pass


def trainable_for(study: Study):
    from ray import tune

    from tune_jobs.train.ray_adapter import ray_trainable

    resources = {"cpu": study.resources.get("cpu", 1)}
    if study.resources.get("gpu"):
        resources["gpu"] = study.resources["gpu"]
    return tune.with_resources(ray_trainable, resources)


UNFIXABLE = "lora_sweep_unfixable"  # set on a Trial whose latest failure a retry cannot fix


def retry_cannot_fix(error: BaseException | None) -> bool:
    """Whether a trial's error is one a retry would only repeat: its node has no usable GPU (DeviceUnavailable,
    raised before anything loads). Ray hands the driver the trial's exception wrapped in a RayTaskError."""
    from ray.exceptions import RayTaskError

    from tune_jobs.train.device import DeviceUnavailable

    return isinstance(error.cause if isinstance(error, RayTaskError) else error, DeviceUnavailable)


def never_retry_what_a_retry_cannot_fix() -> None:
    """Make Tune error a trial at once, whatever max_failures says, when `retry_cannot_fix` its failure.

    Ray 2.60 has no public hook for this. Its TuneController, on a trial's failure, calls `trial.handle_error(exc)`
    (num_failures += 1, error.txt written) and then recovers the trial if `trial.status == RUNNING and
    trial.should_recover()` (num_failures <= max_failures); only after that decision do callbacks hear of it
    (`on_trial_recover` or `on_trial_error`), FailureConfig has only max_failures and fail_fast (the whole
    experiment), and schedulers and searchers cannot error a trial. So this wraps those two public `Trial` methods
    in this (the driver's) process, the one place Tune's decision can see the exception: a monkeypatch, kept to
    them; idempotent. Other errors are recovered exactly as before.
    """
    from ray.tune.experiment import Trial

    if getattr(Trial.should_recover, "_lora_sweep", False):
        return
    handle_error, should_recover = Trial.handle_error, Trial.should_recover

    def handle_error_noting_unfixable(self, exc=None):
        setattr(self, UNFIXABLE, retry_cannot_fix(exc))  # on the trial itself: no state beside it
        return handle_error(self, exc)

    def should_recover_unless_unfixable(self):
        return not getattr(self, UNFIXABLE, False) and should_recover(self)

    handle_error_noting_unfixable._lora_sweep = should_recover_unless_unfixable._lora_sweep = True
    Trial.handle_error, Trial.should_recover = handle_error_noting_unfixable, should_recover_unless_unfixable


def connect_ray(address: str | None) -> None:
    """Attach to a running cluster (--address / RAY_ADDRESS, as inside `ray job submit`), else start a local Ray."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    # where data comes from (never credentials: nodes take those from their own chain, e.g. an instance role)
    passed = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "LORA_SWEEP_CACHE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
              "AWS_DEFAULT_REGION", "AWS_REGION")
    env_vars = {k: os.environ[k] for k in passed if k in os.environ}
    if os.environ.get("GLUE_DIR"):  # absolute (each trial runs in its own directory), or a URI as it is
        glue = os.environ["GLUE_DIR"]
        env_vars["GLUE_DIR"] = glue if is_uri(glue) else str(Path(glue).expanduser().resolve())
    # Inside `ray job submit` the job's own env_vars already reach every trial, and naming one of them again
    # makes ray.init fail ("Failed to merge the Job's runtime env").
    runtime_env = {"env_vars": {k: v for k, v in env_vars.items() if k not in job_env_vars()}}
    if address:
        check_ray_address(address)  # ray.init itself retries an address nothing answers at for minutes
        try:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        except ConnectionError as err:  # `auto` with no cluster on this machine, a GCS that refuses the driver
            raise InputError("--address", f"cannot attach to a Ray cluster ({str(err).strip().splitlines()[0][:160]})",
                             got=address, allowed=RAY_ALLOWED) from None
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, runtime_env=runtime_env, log_to_driver=False)


def prepare_data(trials: list[TrialConfig]) -> None:
    """Tokenize each (dataset, model, max_length) once on this node before trials start (they hit the cache)."""
    from transformers import AutoTokenizer

    from tune_jobs.data.splits import tokenized_splits
    from tune_jobs.remote.model import local_model

    for data, model in {(t.data_config(), t.model): None for t in trials}:  # a model at a URI: staged here first
        tokenized_splits(data, AutoTokenizer.from_pretrained(local_model(model, weights=False)))


def run_sweep(study: Study, storage: str | None = None, name: str | None = None, resume: bool = False,
              max_concurrent: int | None = None, address: str | None = None, wandb: str | None = None,
              mlflow: str | None = None):
    """Run (or resume, or grow) the study with Ray Tune; returns the ResultGrid."""
    from ray import tune

    from record.metrics import SELECTION, higher_is_better, on_split

    from .early_stop import early_stopping
    from .hparams_logger import HParamsTBXLogger
    from .progress import ConciseProgress, print_summary, savings_line
    from .searcher import StudySearch, StudySearcher
    from .trackers import tracker_callbacks

    study = checked_study(study)  # every data problem is one line before anything starts (paths as the spec wrote)
    grid_cells = [replace(c, trials=tuple(absolute_paths(t) for t in c.trials)) for c in cells(study)]
    storage = storage_uri(storage)
    name = name or (f"{study.name}-{study.profile}" if study.profile else study.name)
    path = experiment_path(storage, name)
    fewest, most = trial_counts(study)
    trackers = tracker_callbacks(wandb, mlflow, name)  # checked before Ray starts
    # a cluster nothing answers at: one line within the connect timeout, before data is tokenized or Ray retries
    check_ray_address(address or os.environ.get("RAY_ADDRESS"), "--address" if address else "RAY_ADDRESS")
    # Ray warns on every frequent experiment snapshot; with an epoch checkpoint per report they are expected.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's newer console output prints a config box and a driver-side TensorBoard path even at verbose=0;
    # ConciseProgress replaces both (the right `tensorboard --logdir` is printed above).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    concurrency = max_concurrent or study.max_concurrent
    # Tune keeps one trial pending for a custom searcher, so an autoscaler would see one trial's demand at a time.
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(concurrency or 200))
    restoring = tune.Tuner.can_restore(path)  # checked before Ray starts: a mismatch must start nothing
    sel_metric = on_split(SELECTION, study.metric) if study.select else None
    recorded = recorded_trials(path, [t.to_dict() for c in grid_cells for t in c.trials], study.metric,
                               sel_metric) if restoring else None
    if resume and not restoring:
        raise InputError("--resume", "no experiment to resume at this storage and name", got=path,
                        allowed="check --storage and --name (default name: <study>-<profile>)")
    # before Ray starts: a data problem (hub id offline, bad rows) is one line, nothing else
    prepare_data([t for c in grid_cells for t in c.trials])
    connect_ray(address)
    count = f"{most} trials" if fewest == most else f"{fewest} to {most} trials (adaptive repeats)"
    print(f"lora-sweep: {count} of study {study.name!r} -> {path}")
    print(f"  watch live: tensorboard --logdir {path}", flush=True)
    if recorded is not None:
        done, known = sum(r.finished for r in recorded), {r.name for r in recorded}
        # (a confirm stage whose choice is open counts as its first candidate: an estimate until tuning ends)
        new = sum(t.trial_name not in known for c in counted(grid_cells) for t in c.trials[:c.repeats.min])
        print(f"  resuming {path}: {done} finished trials are kept, {len(recorded) - done} unfinished or errored "
              f"ones continue, {new} new grid points run" + (" (more if adaptive repeats ask)" if fewest < most else "")
              + ("" if resume else "; an experiment of this name exists"), flush=True)
    mode = "max" if higher_is_better(study.metric) else "min"
    searcher = StudySearcher(grid_cells, study.metric, mode, max_concurrent=concurrency, recorded=recorded,
                             selection_metric=sel_metric)
    if study.select:
        print(f"  tune, then confirm: each placement's {', '.join(study.select.axes)} chosen on {sel_metric} "
              + (f"(ASHA within each placement: grace {study.select.early_stop.grace_epochs} epoch(s), reduction "
                 f"{study.select.early_stop.reduction:g})" if study.select.early_stop else "(no early stopping)"),
              flush=True)
    tuner = tune.Tuner(
        trainable_for(study),
        tune_config=tune.TuneConfig(
            metric=study.metric, mode=mode,  # the task's primary metric
            search_alg=StudySearch(searcher),
            scheduler=early_stopping(grid_cells, study.select.early_stop, sel_metric, mode)
            if study.select and study.select.early_stop else None,
            num_samples=-1,  # the searcher says when the study is complete
            reuse_actors=True,  # a new actor per trial costs ~2 s of process start and torch import
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=name, storage_path=storage, verbose=0,
            callbacks=[ConciseProgress(concurrency, totals=(fewest, most)), HParamsTBXLogger(), *trackers],
            failure_config=tune.FailureConfig(max_failures=study.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
        # Tuner.restore would unpickle the first run's searcher (and grid) and takes no other, so a grown spec would
        # run nothing new. Instead: a Tuner of the current spec that resumes the experiment (tune.run's documented
        # resume_config; `_tuner_kwargs` is how Tuner passes it on). Tune restores trials and searcher state into it.
        _tuner_kwargs=None if recorded is None else {"resume_config": tune.ResumeConfig(
            unfinished=tune.ResumeConfig.ResumeType.RESUME, errored=tune.ResumeConfig.ResumeType.RESUME)},
    )
    never_retry_what_a_retry_cannot_fix()  # a node without a usable GPU: the trial errors once, not max_failures times
    started = time.time()
    results = tuner.fit()
    print_summary(results, time.time() - started, path)
    if fewest < most:
        print(savings_line(results, most, study.resources), flush=True)
    return results
