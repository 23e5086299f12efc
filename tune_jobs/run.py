"""`lora-sweep run`: a whole study through Ray Tune; live TensorBoard, concise progress, resume, growth.

Also `python -m tune_jobs.sweep SPEC ...` (what `ray job submit -- ...` calls); the engine is `sweep/runner.py`.
"""

from __future__ import annotations

import argparse
import sys

from record.errors import EXIT_OK, EXIT_TRIALS_FAILED, InputError, run_guarded
from tune_jobs.study.spec import load_study
from tune_jobs.sweep.experiment import DEFAULT_STORAGE
from tune_jobs.sweep.runner import run_sweep

from .cli_args import OneLineParser, add_spec_args


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
    p.add_argument("--wandb", metavar="PROJECT", help="also log every trial to this W&B project (one run per trial; "
                                                       "pip install 'lora-sweep[wandb]'; WANDB_MODE=offline works)")
    p.add_argument("--mlflow", metavar="TRACKING_URI", help="also log every trial to MLflow, e.g. file:./mlruns or "
                                                            "http://host:5000 (pip install 'lora-sweep[mlflow]')")


def cmd_run(args: argparse.Namespace) -> int:
    study = load_study(args.spec, args.profile)
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise InputError("--max-concurrent", "must be >= 1", got=args.max_concurrent)
    results = run_sweep(study, args.storage, args.name, args.resume, args.max_concurrent, args.address,
                        wandb=args.wandb, mlflow=args.mlflow)
    return EXIT_TRIALS_FAILED if results.num_errors else EXIT_OK


def register(sub) -> None:
    p = sub.add_parser(
        "run", help="run a whole study as a Ray Tune grid (local Ray, or a cluster via --address)",
        description="Validate SPEC completely, then run every trial (scenario x rank x axes x repeat) with Ray Tune. "
                    "Results go to STORAGE/NAME (one folder per trial: params.json, result.json, progress.csv, "
                    "TensorBoard events, checkpoint). Rerun the same command (or add --resume) after an "
                    "interruption: finished trials are kept. Exit 0 when every trial finished (a diverged trial, "
                    "NaN/inf loss, is finished: not retried, marked diverged), 1 when some errored.")
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
