"""`select:` of a spec: tune, then confirm. Each placement's candidate values of some training-setting axes (say
`learning_rate`) train with `tune_repeats` seeds, optionally stopped early by ASHA on the selection split; the value
with the best mean selection-split metric is then trained with `confirm_repeats` seeds, and only those confirmed
trials are compared on the dev set.

    select:
      axes: [learning_rate]
      tune_repeats: 1
      # or {min, max, until_halfwidth | until: decided}; default: the study's repeats
      confirm_repeats: 5
      early_stop: {grace_epochs: 1, reduction: 3} # Ray Tune's ASHA within each placement's candidates (optional)
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from record.errors import InputError
from record.fields import TRAINING_NAMES  # the training settings (each has its check in spec.TRAIN_SCHEMA)

from . import checks as f
from .repeats import Repeats, check_repeats


@dataclass(frozen=True)
class EarlyStop:
    """ASHA's settings: a trial is compared with its placement's other candidates after `grace_epochs` epochs (then
    every `reduction` times as many), and stopped unless in the top 1/`reduction` of those that reached that epoch."""

    grace_epochs: int = 1
    reduction: float = 3.0


@dataclass(frozen=True)
class Selecting:
    """The two stages of a study with `select:` (see the module docstring)."""

    axes: tuple[str, ...]
    tune_repeats: int = 1
    confirm_repeats: Repeats | None = None  # None: each scenario's own `repeats`
    early_stop: EarlyStop | None = None


def _axes(value: Any, path: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise InputError(path, "must be a training setting or a list of them", got=value,
                         allowed="e.g. [learning_rate]")
    for item in items:
        if item not in TRAINING_NAMES:
            close = difflib.get_close_matches(str(item), list(TRAINING_NAMES), n=1)
            raise InputError(path, "not a training setting", got=item, allowed=(f"did you mean {close[0]!r}? " if close
                             else "") + "one of " + ", ".join(TRAINING_NAMES))
    if len(set(items)) != len(items):
        raise InputError(path, "lists a setting twice", got=value)
    return tuple(items)


EARLY_STOP_SCHEMA: dict[str, f.Check] = {"grace_epochs": f.integer(1),
                                         "reduction": f.number(1, None, low_open=True)}


def _early_stop(value: Any, path: str) -> EarlyStop | None:
    if value is None or value is False:
        return None
    return EarlyStop(**f.section(EARLY_STOP_SCHEMA)({} if value is True else value, path))


SELECT_SCHEMA: dict[str, f.Check] = {"axes": _axes, "tune_repeats": f.integer(1), "confirm_repeats": check_repeats,
                                     "early_stop": _early_stop}


def check_select(value: Any, path: str) -> Selecting | None:
    """`select:` -> Selecting (None: no tuning stage; every cell is compared on dev)."""
    if value is None:
        return None
    clean = f.section(SELECT_SCHEMA)(value, path)
    if "axes" not in clean:
        raise InputError(f"{path}.axes", "missing", allowed="the training-setting axes to choose per placement, "
                                                              "e.g. [learning_rate]")
    return Selecting(**clean)


__all__ = ["EarlyStop", "Selecting", "check_select"]
