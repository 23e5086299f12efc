"""`lora-sweep`: one command line for planning, running and analysing LoRA placement studies."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from lora_ext import SpecError, SpecErrors

EXIT_USAGE = 2
EPILOG = """\
typical session:
  lora-sweep plan tune_jobs/experiments/final.yaml --profile paper      what would run, params per trial
  lora-sweep trial tune_jobs/experiments/final.yaml --profile demo --scenario lora_all --r 8
  lora-sweep run tune_jobs/experiments/layers.yaml --profile demo       the whole grid with Ray Tune
Profiles: 'demo' (offline MiniLM on a CPU, 4,000 SST-2 rows) and 'paper' (RoBERTa-base, full SST-2, GPUs)."""


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line (no usage dump) on a bad argument."""

    def error(self, message: str) -> None:  # noqa: D401 - argparse API
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see --help)\n")


def add_spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="experiment spec (YAML), e.g. tune_jobs/experiments/layers.yaml")
    p.add_argument("--profile", help="apply a profile over the spec: 'demo' (CPU, offline), 'paper' (GPU), or one "
                                     "the spec defines under `profiles:`")


def cmd_plan(args: argparse.Namespace) -> int:
    from .plan import format_json, format_table, plan
    from .spec import load_study

    study = load_study(args.spec, args.profile)
    planned = plan(study)
    print(format_json(planned) if args.json else format_table(study, planned))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lora-sweep",
        description="Sweep LoRA placements (layers x components x rank x repeat) of a transformer classifier "
                    "with Ray Tune, then analyse them. Specs are YAML files; see tune_jobs/experiments/.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("plan", help="validate a spec and list its trials with exact trainable parameters",
                       description="Validate SPEC (every error at once), expand it into trials (scenario x rank x "
                                   "training-setting axes x repeat) and print each with its trainable parameters and %% of full fine-tuning. "
                                   "Offline and in seconds: the model is built on the meta device, no weights load.")
    add_spec_args(p)
    p.add_argument("--json", action="store_true", help="print a JSON array of trial objects instead of a table")
    p.set_defaults(func=cmd_plan)

    for register in _registrars():
        register(sub)
    return parser


def _registrars() -> list[Callable]:
    from analysis import aggregate, report

    from . import sweep, trial_cli

    return [trial_cli.register, sweep.register, aggregate.register, report.register]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (SpecError, SpecErrors) as err:
        if args.debug:
            raise
        print(f"error: {err}".replace("\n", "\nerror: "), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
