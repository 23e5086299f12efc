"""`lora-sweep run`: a whole study as one Ray Tune grid; live TensorBoard, concise progress, resume.

Also `python -m tune_jobs.sweep SPEC ...` (what `ray job submit -- ...` calls). Every grid point's fields
(scenario, layers, components, r, repeat, seed, ...) are top-level config keys, so they are config columns of
Ray's ResultGrid / experiment files.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from lora_ext import SpecError

from .cli_args import OneLineParser, add_spec_args, run_guarded
from .data import checked_study
from .grid import expand, with_overrides
from .spec import Study, TrialConfig, load_study

DEFAULT_STORAGE = "lora_sweep_results"


def absolute_paths(trial: TrialConfig) -> TrialConfig:
    """Relative local dataset/model paths resolved from here: Ray runs each trial in its own directory."""
    changes = {}
    for key in ("dataset", "model"):
        value = getattr(trial, key)
        if value.startswith(".") or Path(value).expanduser().is_dir():
            changes[key] = str(Path(value).expanduser().resolve())
    return with_overrides(trial, **changes)


def grid_param_space(grid: list[dict]) -> dict:
    """Ray param_space that yields exactly `grid`: a grid_search over the index, each field looked up from it.

    A grid_search over whole dicts would nest them (`config/trial/scenario`); looking each field up keeps them
    top-level config columns.
    """
    from ray import tune

    space: dict = {"grid_index": tune.grid_search(list(range(len(grid))))}
    for key in grid[0]:
        space[key] = tune.sample_from(lambda config, key=key: grid[config["grid_index"]][key])
    return space


def storage_uri(storage: str | None) -> str:
    """Absolute local path (Ray needs one) or a URI such as s3://bucket/prefix, unchanged."""
    storage = storage or DEFAULT_STORAGE
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


def experiment_path(storage: str, name: str) -> str:
    return f"{storage.rstrip('/')}/{name}"


def check_same_grid(path: str, grid: list[dict]) -> None:
    """Refuse to resume an experiment whose trials were made from a different spec (or profile).

    Compares each trial recorded in the experiment state with the grid point of the same name, so an edited
    spec cannot silently mix two studies in one experiment.
    """
    import pyarrow.fs as pafs

    from raylog import open_experiment, trial_states

    fs, exp = open_experiment(path)
    by_name = {g["trial_name"]: g for g in grid}
    for state in trial_states(fs, exp, fs.get_file_info(pafs.FileSelector(exp))).values():
        stored = {k: v for k, v in state["config"].items() if k != "grid_index"}
        name = stored.get("trial_name")
        if not isinstance(name, str):
            continue  # not resolved yet when the driver stopped
        if name not in by_name:
            raise SpecError("spec", f"differs from the experiment at {path}: it has trial {name} the spec no longer "
                            "makes", allowed="resume with the spec and profile it was started with, or use a new --name")
        wanted = by_name[name]
        changed = sorted(k for k in wanted if k in stored and stored[k] != wanted[k])
        if changed:
            raise SpecError("spec", f"differs from the experiment at {path} in {', '.join(changed)} of trial {name}",
                            allowed="resume with the spec and profile it was started with, or use a new --name")


def trainable_for(study: Study):
    from ray import tune

    from .trial import ray_trainable

    resources = {"cpu": study.resources.get("cpu", 1)}
    if study.resources.get("gpu"):
        resources["gpu"] = study.resources["gpu"]
    return tune.with_resources(ray_trainable, resources)


def connect_ray(address: str | None) -> None:
    """Attach to a running cluster (--address / RAY_ADDRESS, as inside `ray job submit`), else start a local Ray."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    env_vars = {k: os.environ[k] for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "LORA_SWEEP_CACHE") if k in os.environ}
    if os.environ.get("GLUE_DIR"):  # absolute: each trial runs in its own directory
        env_vars["GLUE_DIR"] = str(Path(os.environ["GLUE_DIR"]).expanduser().resolve())
    runtime_env = {"env_vars": env_vars}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, runtime_env=runtime_env, log_to_driver=False)


def prepare_data(trials: list[TrialConfig]) -> None:
    """Tokenize each (dataset, model, max_length) once on this node before trials start (they hit the cache)."""
    from transformers import AutoTokenizer

    from lora_ext import model_location

    from .data import tokenized_splits

    for data, model in {(t.data_config(), t.model): None for t in trials}:
        tokenized_splits(data, AutoTokenizer.from_pretrained(model_location(model)))


def run_sweep(study: Study, storage: str | None = None, name: str | None = None, resume: bool = False,
              max_concurrent: int | None = None, address: str | None = None):
    """Run (or resume) the study's grid with Ray Tune; returns the ResultGrid."""
    from ray import tune

    from .hparams_logger import HParamsTBXLogger
    from .metrics import higher_is_better
    from .progress import ConciseProgress, print_summary

    study = checked_study(study)  # every data problem is one line before anything starts
    trials = [absolute_paths(t) for t in expand(study)]
    storage = storage_uri(storage)
    name = name or (f"{study.name}-{study.profile}" if study.profile else study.name)
    path = experiment_path(storage, name)
    grid = [t.to_dict() for t in trials]
    metric = trials[0].primary_metric  # one dataset per study
    # Ray warns on every frequent experiment snapshot; with an epoch checkpoint per report they are expected.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's newer console output prints a config box and a driver-side TensorBoard path even at verbose=0;
    # ConciseProgress replaces both (the right `tensorboard --logdir` is printed above).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    restoring = tune.Tuner.can_restore(path)  # checked before Ray starts: a mismatch must start nothing
    if restoring:
        check_same_grid(path, grid)
    elif resume:
        raise SpecError("--resume", "no experiment to resume at this storage and name", got=path,
                        allowed="check --storage and --name (default name: <study>-<profile>)")
    prepare_data(trials)  # before Ray starts: a data problem (hub id offline, bad rows) is one line, nothing else
    connect_ray(address)
    print(f"lora-sweep: {len(grid)} trials of study {study.name!r} -> {path}")
    print(f"  watch live: tensorboard --logdir {path}", flush=True)
    if restoring:
        # Tune restores its own TuneConfig/RunConfig (concurrency, callbacks) from tuner.pkl.
        print(f"  resuming {path}: finished trials are kept, unfinished and errored ones run"
              + ("" if resume else " (an experiment of this name exists; reusing it)"), flush=True)
        tuner = tune.Tuner.restore(path, trainable=trainable_for(study), resume_unfinished=True, resume_errored=True,
                                   param_space=grid_param_space(grid))
    else:
        tuner = tune.Tuner(
            trainable_for(study),
            param_space=grid_param_space(grid),
            tune_config=tune.TuneConfig(
                metric=metric, mode="max" if higher_is_better(metric) else "min",  # the task's primary metric
                max_concurrent_trials=max_concurrent or study.max_concurrent,
                reuse_actors=True,  # a new actor per trial costs ~2 s of process start and torch import
                trial_dirname_creator=lambda trial: grid[trial.config["grid_index"]]["trial_name"],
            ),
            run_config=tune.RunConfig(
                name=name, storage_path=storage, verbose=0,
                callbacks=[ConciseProgress(max_concurrent or study.max_concurrent), HParamsTBXLogger()],
                failure_config=tune.FailureConfig(max_failures=study.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            ),
        )
    started = time.time()
    results = tuner.fit()
    print_summary(results, time.time() - started, path)
    return results


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_spec_args(p)
    p.add_argument("--storage", help=f"where experiments go: a local path, NFS mount or s3://bucket/prefix "
                                     f"(default ./{DEFAULT_STORAGE}); must be shared storage on a multi-node cluster")
    p.add_argument("--name", help="experiment name (default <study>-<profile>); rerunning with the same name and "
                                  "storage resumes it")
    p.add_argument("--resume", action="store_true", help="resume an interrupted sweep; finished trials are not rerun "
                                                         "(an error if there is nothing to resume)")
    p.add_argument("--max-concurrent", type=int, help="at most N trials at once (default: as resources allow)")
    p.add_argument("--address", help="Ray cluster to attach to (default: $RAY_ADDRESS, else start a local Ray)")


def cmd_run(args: argparse.Namespace) -> int:
    study = load_study(args.spec, args.profile)
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise SpecError("--max-concurrent", "must be >= 1", got=args.max_concurrent)
    results = run_sweep(study, args.storage, args.name, args.resume, args.max_concurrent, args.address)
    return 1 if results.num_errors else 0


def register(sub) -> None:
    p = sub.add_parser(
        "run", help="run a whole study as a Ray Tune grid (local Ray, or a cluster via --address)",
        description="Validate SPEC completely, then run every trial (scenario x rank x axes x repeat) with Ray Tune. "
                    "Results go to STORAGE/NAME (one folder per trial: params.json, result.json, progress.csv, "
                    "TensorBoard events, checkpoint). Rerun the same command (or add --resume) after an "
                    "interruption: finished trials are kept. Exit 0 when every trial finished (a diverged trial, NaN/inf loss, is "
                    "finished: not retried, marked diverged), 1 when some errored.")
    add_arguments(p)
    p.set_defaults(func=cmd_run)


def main(argv: list[str] | None = None) -> int:
    """`python -m tune_jobs.sweep SPEC ...`: the same as `lora-sweep run SPEC ...`."""
    parser = OneLineParser(prog="python -m tune_jobs.sweep", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    add_arguments(parser)
    return run_guarded(cmd_run, parser.parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
