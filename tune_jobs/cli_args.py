"""Pieces every subcommand's parser shares (kept apart from cli.py so subcommand modules never import it back)."""

from __future__ import annotations

import argparse

from record.errors import EXIT_INPUT


def installed_version() -> str:
    """The installed distribution's version (pyproject.toml), or 'unknown' in a checkout that is not installed."""
    from record.versions import package_version

    return package_version("lora-sweep") or "unknown"


class OneLineParser(argparse.ArgumentParser):
    """argparse that exits 2 with one line (no usage dump) on a bad argument."""

    def error(self, message: str) -> None:  # noqa: D401 - argparse API
        self.exit(EXIT_INPUT, f"{self.prog}: {message} (see --help)\n")


def add_spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="experiment spec (YAML), e.g. tune_jobs/experiments/layers.yaml")
    p.add_argument("--profile", help="apply a profile over the spec: 'demo' (CPU, offline), 'paper' (GPU), or one "
                                     "the spec defines under `profiles:`")
