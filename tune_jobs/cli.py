"""`lora-sweep`: one command line for planning, running and analysing LoRA placement studies.

Subcommand modules are imported only for the subcommand being run (and its --help), so `lora-sweep --help`
imports nothing heavy and `analyze`/`report` never import torch, ray or transformers.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from record.errors import run_guarded

from .cli_args import OneLineParser, installed_version

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
    "plan": ("tune_jobs.plan", "validate a spec and list its trials with exact trainable parameters"),
    "trial": ("tune_jobs.trial",
              "run one trial of a spec locally, without Ray (one JSON line of metrics per epoch)"),
    "run": ("tune_jobs.run", "run a whole study as a Ray Tune grid (local Ray, or a cluster via --address)"),
    "analyze": ("analysis.aggregate", "turn experiment directories into trials.parquet + epochs.parquet"),
    "report": ("analysis.report", "the answer: statistics, verdicts, cost and figures of experiments (or of analyze's "
                                  "Parquet files)"),
    "export": ("tune_jobs.export", "write one trial's trained adapter (or model) as a directory PEFT / transformers "
                                   "load, with a model card"),
}


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
