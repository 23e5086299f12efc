"""`lora-sweep`: one command line for planning, running and analysing LoRA placement studies.

Subcommand modules are imported only for the subcommand being run (and its --help), so `lora-sweep --help`
imports nothing heavy and `analyze`/`report` never import torch, ray or transformers.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from record.errors import EXIT_OK, InputError, check_positive, run_guarded

from .cli_args import OneLineParser, add_spec_args, installed_version

EPILOG = """\
typical session:
  lora-sweep run tune_jobs/experiments/layers.yaml --profile demo       the whole grid with Ray Tune
  lora-sweep report lora_sweep_results/layers-demo                      the answer: verdicts, cost, report.html
  lora-sweep export lora_sweep_results/layers-demo --best --out my_adapter   the best group, loads with PEFT
  lora-sweep plan tune_jobs/experiments/final.yaml --profile paper      what would run, params per trial
  lora-sweep trial tune_jobs/experiments/final.yaml --profile demo --scenario lora_all --r 8   one trial, no Ray
  lora-sweep analyze lora_sweep_results/layers-demo --out analysis_out  Parquet for pandas / DuckDB
Profiles: 'demo' (offline MiniLM on a CPU, 4,000 SST-2 rows) and 'paper' (RoBERTa-base, full SST-2, GPUs).
Docs: README.md and docs/."""

# name -> (module with `register(subparsers)`, one-line help shown by `lora-sweep --help`)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "plan": ("tune_jobs.cli", "validate a spec and list its trials with exact trainable parameters"),
    "trial": ("tune_jobs.trial_cli",
              "run one trial of a spec locally, without Ray (one JSON line of metrics per epoch)"),
    "run": ("tune_jobs.sweep", "run a whole study as a Ray Tune grid (local Ray, or a cluster via --address)"),
    "analyze": ("analysis.aggregate", "turn experiment directories into trials.parquet + epochs.parquet"),
    "report": ("analysis.report", "the answer: statistics, verdicts, cost and figures of experiments (or of analyze's "
                                  "Parquet files)"),
    "export": ("tune_jobs.export", "write one trial's trained adapter (or model) as a directory PEFT / transformers "
                                   "load, with a model card"),
}


def cmd_plan(args: argparse.Namespace) -> int:
    from .data import checked_study
    from .plan import format_json, format_table, plan
    from .spec import load_study

    check_positive(args.price_per_hour, "--price-per-hour", "e.g. 1.2 (per GPU-hour, or per CPU-hour for a spec "
                                                            "without GPUs)")
    extra = [flag for flag, value in (("--price-per-hour", args.price_per_hour), ("--address", args.address),
                                      ("--device", args.device), ("--calibrate-alone", args.calibrate_alone or None))
             if value is not None and not args.calibrate]
    if extra or (args.calibrate and args.json):
        raise InputError(extra[0] if extra else "--json", "only with --calibrate (and not with --json)" if extra else
                         "cannot be combined with --calibrate", allowed="plan --calibrate [--price-per-hour P] "
                         "[--address RAY] [--device D] [--calibrate-alone] for the bill, --json for the trials")
    if args.steps < 1:
        raise InputError("--steps", "must be >= 1", got=args.steps, allowed="e.g. 6")
    if args.address:  # a cluster nothing answers at: one line within the connect timeout, before any work
        from .reach import check_ray_address

        check_ray_address(args.address)
    if args.device is not None:
        import torch

        try:
            torch.device(args.device)
        except (RuntimeError, ValueError):
            raise InputError("--device", "not a torch device", got=args.device, allowed="e.g. cpu, cuda, cuda:1") \
                from None
    study = checked_study(load_study(args.spec, args.profile))  # columns, rows and labels, before anything runs
    planned = plan(study)
    print(format_json(planned) if args.json else format_table(study, planned))
    if args.json:
        return EXIT_OK
    from .calibrate import calibrate, format_costs, project, setups

    if not args.calibrate:
        print(f"cost: `--calibrate` times a few steps of each of the {len(setups(study))} distinct setup(s) here (or "
              "on a cluster node with --address) and projects trial-hours, resource-hours and, with "
              "--price-per-hour, money; without it no cost is estimated")
        return EXIT_OK
    timings = calibrate(study, device=args.device, steps=args.steps, address=args.address,
                        alone=args.calibrate_alone)
    where = f"on the cluster at {args.address}" if args.address else "on this machine"
    print(format_costs(study, timings, project(study, timings), args.price_per_hour, where))
    return EXIT_OK


def register(sub) -> None:
    p = sub.add_parser("plan", help=SUBCOMMANDS["plan"][1],
                       description="Validate SPEC (every error at once), expand it into trials (scenario x rank x "
                                   "training-setting axes x repeat) and print each with its trainable parameters "
                                   "and % of full fine-tuning. "
                                   "Offline and in seconds: the model is built on the meta device, no weights load.")
    add_spec_args(p)
    p.add_argument("--json", action="store_true", help="print a JSON array of trial objects instead of a table")
    p.add_argument("--calibrate", action="store_true",
                   help="time a few training steps, an evaluation and a checkpoint of each distinct setup (model, "
                        "placement, method, data, batch size, precision) and project the study's trial-hours and "
                        "GPU- or CPU-hours at its resources (a range with adaptive repeats); loads the weights. At "
                        "a fractional GPU ({gpu: 0.25}: Ray runs 4 trials on one GPU) it times that many copies at "
                        "once, each with the trial's CPU threads, and projects the slowest copy's time")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per setup (default 10, after 2 warm-up)")
    p.add_argument("--price-per-hour", type=float, metavar="P",
                   help="with --calibrate: money per GPU-hour (CPU-hour for a spec without GPUs)")
    p.add_argument("--address", help="with --calibrate: time on a node of this Ray cluster, each setup in a task "
                                     "with the spec's resources (default: this machine)")
    p.add_argument("--device", help="with --calibrate: torch device to time on, e.g. cpu (default: cuda when the "
                                    "spec's resources ask for a GPU, an error where there is none; else cpu)")
    p.add_argument("--calibrate-alone", action="store_true",
                   help="with --calibrate at a fractional GPU: time one trial alone instead of as many at once as "
                        "share a GPU (faster; the table then says a real trial can take up to that many times "
                        "longer)")
    p.set_defaults(func=cmd_plan)


def chosen_subcommand(argv: Sequence[str]) -> str | None:
    """The first argument that names a subcommand (options such as --debug may come before it)."""
    return next((a for a in argv if a in SUBCOMMANDS), None)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The full parser of the subcommand named in `argv`; the others are listed by name and help only."""
    parser = OneLineParser(
        prog="lora-sweep",
        description="Sweep LoRA placements (layers x components x rank x repeat) of a transformer classifier "
                    "with Ray Tune, then analyse them. Specs are YAML files; see tune_jobs/experiments/.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    parser.add_argument("--version", action="version", version=f"lora-sweep {installed_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    chosen = chosen_subcommand(argv)
    for name, (module, help_) in SUBCOMMANDS.items():
        if name == chosen:
            importlib.import_module(module).register(sub)
        else:
            sub.add_parser(name, help=help_, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    return run_guarded(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
