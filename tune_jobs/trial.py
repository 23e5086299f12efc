"""`lora-sweep trial`: run one grid point of a spec without Ray, one JSON line of metrics per epoch."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from record.errors import EXIT_OK, EXIT_TRIALS_FAILED, InputError
from record.outcome import DIVERGED, TERMINATED, outcome
from record.predictions import PREDICTIONS_FILE

from .cli_args import add_spec_args


def cmd_trial(args: argparse.Namespace) -> int:
    from tune_jobs.data.splits import checked_study
    from tune_jobs.study.grid import select_trial, with_overrides
    from tune_jobs.study.spec import load_study
    from tune_jobs.train.loop import copy_checkpoint_to, run_trial

    study = checked_study(load_study(args.spec, args.profile, {"dataset": args.data} if args.data else None),
                          load_hub=True)  # an offline hub is one line, before the trial starts
    trial = select_trial(study, args.scenario, args.r, args.repeat, _axis_values(args.axis), args.method, args.budget)
    trial = with_overrides(trial, epochs=args.epochs, train_limit=args.train_limit)
    if args.resume_from and not (Path(args.resume_from) / "trial_state.json").is_file():
        raise InputError("--resume-from", "not a trial checkpoint directory (no trial_state.json)",
                         got=args.resume_from)
    keep = copy_checkpoint_to(Path(args.checkpoint_dir)) if args.checkpoint_dir else None
    predictions = Path(args.predictions) if args.predictions else None

    def on_epoch(metrics: dict, checkpoint_dir: str | None) -> None:
        if keep:
            keep(metrics, checkpoint_dir)
        if predictions and checkpoint_dir:  # the epoch's dev predictions, from its checkpoint (latest epoch wins)
            keep_predictions(Path(checkpoint_dir), predictions)
        print(json.dumps({"trial": trial.trial_name, **metrics}), flush=True)

    print(f"# trial {trial.trial_name}: model {trial.model}, data {trial.dataset} (train_limit {trial.train_limit}), "
          f"{trial.epochs} epochs, lr {trial.learning_rate:g}, batch {trial.batch_size}", file=sys.stderr, flush=True)
    history = run_trial(trial.to_dict(), on_epoch=on_epoch, resume_from=args.resume_from, device=args.device)
    if outcome(TERMINATED, history[-1] if history else None, trial.to_dict()) == DIVERGED:  # returned, as Ray sees it
        print(f"error: trial {trial.trial_name} diverged: {history[-1]['diverged_reason']}; lower learning_rate or "
              "set grad_clip", file=sys.stderr)
        return EXIT_TRIALS_FAILED
    kept = Path(args.checkpoint_dir) / PREDICTIONS_FILE if args.checkpoint_dir else None
    where = [str(f) for f in (predictions, kept) if f is not None and f.is_file()]
    if where:
        print(f"# dev-split predictions of epoch {history[-1]['epoch']}: {', '.join(where)}", file=sys.stderr)
    return EXIT_OK


def keep_predictions(checkpoint_dir: Path, target: Path) -> None:
    """Copy a checkpoint's predictions file to `target` (replaced atomically; its folder made if missing)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(checkpoint_dir / PREDICTIONS_FILE, tmp)
    os.replace(tmp, target)


def _axis_values(pairs: list[str] | None) -> dict[str, str]:
    """`--axis learning_rate=1e-3` (repeatable) -> {"learning_rate": "1e-3"}."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError("--axis", "must be KEY=VALUE", got=pair, allowed="e.g. --axis learning_rate=1e-3")
        out[key.strip()] = value.strip()
    return out


def _reported() -> str:
    """The epoch columns a trial prints, from the one table of metrics (dev-split ones; Ray's own left out)."""
    from record.metrics import EPOCH_COLUMNS, SELECTION

    ours = [n for n, _ in EPOCH_COLUMNS if not n.startswith(SELECTION)]
    return ", ".join(ours[:ours.index("checkpoint_mb") + 1]) + " (the task's metrics only)"


def register(sub) -> None:
    p = sub.add_parser(
        "trial", help="run one trial of a spec locally, without Ray (one JSON line of metrics per epoch)",
        description="Train one grid point of SPEC on this machine and print a JSON line of metrics after every "
                    f"epoch ({_reported()}; sel_* with a selection split). Use it to "
                    "debug or benchmark a placement before a sweep. A NaN/inf loss ends the trial with a last JSON "
                    "line {diverged: true, diverged_reason: ...} and exit code 1.")
    add_spec_args(p)
    p.add_argument("--scenario", required=True, help="scenario name from the spec (see `lora-sweep plan`)")
    p.add_argument("--r", type=int, help="rank, when the scenario has several")
    p.add_argument("--budget", type=int, help="parameter budget, when the scenario has several (lora.budgets)")
    p.add_argument("--method", help="LoRA method, when the scenario has several (e.g. dora, dora+rslora)")
    p.add_argument("--repeat", type=int, default=0, help="repeat index (seed = base_seed + repeat); default 0")
    p.add_argument("--axis", action="append", metavar="KEY=VALUE",
                   help="a value of a training-setting axis the scenario varies, e.g. learning_rate=1e-3 (repeatable)")
    p.add_argument("--epochs", type=int, help="override the number of epochs")
    p.add_argument("--train-limit", type=int, help="override the number of training rows (seeded subset)")
    p.add_argument("--data", help="override data.dataset (glue/<task>, hub id or local directory); the columns "
                                  "and task come from its preset or the spec")
    p.add_argument("--device", help="torch device; `cpu` runs a GPU spec's trial on the CPU on purpose (default: CUDA "
                                    "when the spec's resources ask for a GPU, and then it must be usable; the CPU "
                                    "for gpu: 0; else CUDA if available)")
    p.add_argument("--checkpoint-dir", help="keep the latest epoch checkpoint here (adapters, head, optimizer)")
    p.add_argument("--resume-from", help="continue from a checkpoint directory written by --checkpoint-dir")
    p.add_argument("--predictions", metavar="FILE",
                   help="write the last epoch's predictions on the dev split here (Parquet: example, label, "
                        "prediction, score); with --checkpoint-dir they are also in it, as predictions.parquet")
    p.set_defaults(func=cmd_trial)
