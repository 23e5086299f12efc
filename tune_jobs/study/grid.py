"""A study's grid: cells (scenario x rank x training-setting axes) x repeat -> `TrialConfig`s with readable names."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import yaml

from lora_ext.methods import DEFAULT_LORAPLUS_LR_RATIO, PLAIN, uses_loraplus
from record.errors import InputError, InputErrors, one_of
from record.fields import CONFIRM, TUNE, count_text, short

from .repeats import Repeats
from .spec import TRAIN_SCHEMA, Budgeted, Scenario, Study, TrialConfig


def _rank_parts(rank, method: str | None) -> tuple[int, dict[str, int], int | None]:
    """(r, rank_pattern, budget): PEFT wants one `r` plus `rank_pattern` exceptions; per-component ranks use the
    largest as `r`, a budget its base rank with r + 1 on some modules."""
    if isinstance(rank, Budgeted):
        chosen = rank.ranks(method)
        return chosen.r, dict(chosen.rank_pattern), rank.budget
    if isinstance(rank, int):
        return rank, {}, None
    per = dict(rank)
    top = max(per.values())
    return top, {c: r for c, r in per.items() if r != top}, None


def _rank_label(rank) -> str:
    if isinstance(rank, Budgeted):
        return f"b{count_text(rank.budget)}"
    if isinstance(rank, int):
        return f"r{rank}"
    return "r" + "-".join(f"{c}{r}" for c, r in rank)


def value_text(value: Any) -> str:
    """A setting's value for names and tables: 1e-3 (not 0.001), 0.98, 32, on/off, none, 0.9_0.98."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return "_".join(map(value_text, value))
    if not isinstance(value, float):
        return str(value)
    text = f"{value:.6g}" if value == 0 or abs(value) >= 0.01 else f"{value:.5e}"
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    return f"{mantissa.rstrip('0').rstrip('.') if '.' in mantissa else mantissa}e{int(exponent)}"


def _method_label(method: str | None) -> list[str]:
    """A trial name's method part: none for plain LoRA (so names of studies before methods stay), else dora-rslora."""
    return [] if method in (None, PLAIN) else [method.replace("+", "-")]


def setting_label(key: str, value: Any) -> str:
    """A training setting's part of a trial name: lr1e-3, bs32, sched-cosine."""
    text = value_text(value)
    return short(key) + (text if isinstance(value, (int, float)) and not isinstance(value, bool) else
                                  "-" + text)


def _config_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class Cell:
    """A grid point without its repeat (every other field equal): its repeat policy and its trials up to `max`.

    Under a spec's `select:` a cell is one stage of one candidate: `stage` tune (its `tune_repeats` seeds) or confirm
    (seeds after those), and `choice` names the placement whose candidates compete (None: nothing to choose)."""

    label: str  # the trial names without `-rep<k>`, e.g. upper-r8-lr1e-3
    repeats: Repeats
    # repeat 0 .. repeats.max - 1 (a confirm stage: from tune_repeats), seed base_seed + repeat
    trials: tuple[TrialConfig, ...]
    stage: str | None = None  # tune | confirm under `select:`
    choice: str | None = None  # the placement's label (its name without the chosen settings) when candidates compete


def cells(study: Study) -> list[Cell]:
    """The grid's cells: scenario x rank x method x training-setting axes (baselines are not multiplied by rank or
    method); under `select:` each cell's tune and confirm stages, a placement's tune cells before its confirm cells.

    Names carry the rank, the method (unless plain LoRA) and the axes a scenario varies, e.g.
    `upper-r8-dora-lr1e-3-rep0`.
    """
    out = []
    for sc in study.scenarios:
        ranks = sc.ranks if sc.baseline is None else (None,)
        methods = sc.methods if sc.baseline is None else (None,)
        chosen = [k for k, _ in sc.axes if study.select is not None and k in study.select.axes]
        groups: dict[str, list[tuple[str, Callable[[int, str | None], TrialConfig]]]] = {}
        for rank, method, (point, train) in itertools.product(ranks, methods, sc.train_points()):
            head = [sc.name, *([_rank_label(rank)] if rank is not None else []), *_method_label(method)]
            label = "-".join([*head, *(setting_label(k, v) for k, v in point.items())])
            placement = "-".join([*head, *(setting_label(k, v) for k, v in point.items() if k not in chosen)])
            make = functools.partial(_trial, study, sc, label, rank, method, train, tuple(chosen))
            groups.setdefault(placement, []).append((label, make))
        for placement, candidates in groups.items():
            out += _stage_cells(study, sc, placement, candidates)
    _check_trial_names([t for c in out for t in c.trials])
    return out


def _trial(study: Study, sc: Scenario, label: str, rank, method: str | None, train, chosen: tuple[str, ...],
           repeat: int, stage: str | None, looks: int = 1) -> TrialConfig:
    """One grid point: a cell's trial with seed base_seed + repeat (`looks`: its cell's sequential design)."""
    r, pattern, budget = _rank_parts(rank, method) if rank is not None else (None, {}, None)
    ratio = (sc.loraplus_lr_ratio or DEFAULT_LORAPLUS_LR_RATIO) if method and uses_loraplus(method) else None
    return TrialConfig(
        study=study.name, trial_name=f"{label}-rep{repeat}", scenario=sc.name, baseline=sc.baseline,
        layers=list(sc.layers), components=list(sc.components), r=r, budget=budget, method=method,
        loraplus_lr_ratio=ratio, rank_pattern=pattern, alpha=sc.alpha, lora_dropout=sc.lora_dropout, repeat=repeat,
        looks=looks,
        seed=study.base_seed + repeat, stage=stage, selected=list(chosen) or None,
        model=study.model, model_init=study.model_init, resources=dict(study.resources),
        **study.data.trial_fields(study.base_seed),
        **{k: _config_value(v) for k, v in asdict(train).items()},
    )


def _stage_cells(study: Study, sc: Scenario, placement: str, candidates: list) -> list[Cell]:
    """One placement's cells: each candidate's repeats (no `select:`), or its tune cells then its confirm cells."""
    if study.select is None:
        return [Cell(label, sc.repeats, tuple(make(k, None, sc.repeats.looks) for k in range(sc.repeats.max)))
                for label, make in candidates]
    tune, confirm = study.select.tune_repeats, study.select.confirm_repeats or sc.repeats
    choice = placement if len(candidates) > 1 else None  # one candidate: nothing to tune, confirm it directly
    tuned = [Cell(label, Repeats(tune, tune), tuple(make(k, TUNE) for k in range(tune)), TUNE, choice)
             for label, make in candidates] if choice else []
    return tuned + [Cell(label, confirm, tuple(make(tune + k, CONFIRM, confirm.looks) for k in range(confirm.max)),
                         CONFIRM, choice) for label, make in candidates]


def counted(grid: list[Cell]) -> list[Cell]:
    """The cells a study runs: under `select:` one confirm cell stands for each choice (the chosen candidate's,
    unknown before tuning; the first candidate's here, which costs the same but for its training settings)."""
    seen: set[str] = set()
    out = []
    for cell in grid:
        if cell.stage == CONFIRM and cell.choice is not None:
            if cell.choice in seen:
                continue
            seen.add(cell.choice)
        out.append(cell)
    return out


def expand(study: Study) -> list[TrialConfig]:
    """Every trial the study can run: each cell's repeats up to `max` (adaptive repeats may stop earlier)."""
    return [t for c in cells(study) for t in c.trials]


def trial_counts(study: Study) -> tuple[int, int]:
    """(fewest, most) trials of the study: every cell at its `min` repeats, and at its `max` (under `select:` every
    candidate's tune seeds plus one confirm cell per placement; before early stopping)."""
    grid = counted(cells(study))
    return sum(c.repeats.min for c in grid), sum(c.repeats.max for c in grid)


def axis_settings(study: Study) -> list[str]:
    """The training settings that some scenario of the study varies, in TRAIN_SCHEMA order."""
    varied = {k for sc in study.scenarios for k, _ in sc.axes}
    return [k for k in TRAIN_SCHEMA if k in varied]


def _check_trial_names(trials: list[TrialConfig]) -> None:
    names = [t.trial_name for t in trials]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputErrors([InputError("scenarios", "two trials would have the same name", got=twice[0],
                                    allowed="rename a scenario, or make axis values differ in 6 significant digits")])


def select_trial(study: Study, scenario: str, r: int | None = None, repeat: int = 0,
                 axis: dict[str, Any] | None = None, method: str | None = None,
                 budget: int | None = None) -> TrialConfig:
    """The grid point a user names on the command line (`--scenario`, `--r` or `--budget`, `--method`, `--repeat`,
    `--axis KEY=VALUE`)."""
    trials = expand(study)
    names = sorted({t.scenario for t in trials})
    if scenario not in names:
        raise InputError("--scenario", "no such scenario in the spec", got=scenario,
                         allowed=one_of(scenario, names))
    matches = [t for t in trials if t.scenario == scenario]
    budgets = sorted({t.budget for t in matches if t.budget is not None})
    if budget is not None or budgets:
        if budget is None and len(budgets) > 1:
            raise InputError("--budget", f"scenario {scenario} has several budgets; pick one",
                             allowed=f"one of {budgets}")
        if budget is not None and budget not in budgets:
            raise InputError("--budget", "scenario has no such budget", got=budget,
                             allowed=f"budgets of {scenario}: {budgets or 'none (it has ranks: use --r)'}")
        matches = [t for t in matches if t.budget == (budget if budget is not None else budgets[0])]
    matches = pick_method(matches, method, scenario)  # a budget's ranks can differ by method (DoRA's magnitudes)
    ranks = sorted({t.r for t in matches if t.r is not None})
    if r is not None:
        matches = [t for t in matches if t.r == r]
        if not matches:
            raise InputError("--r", "scenario has no such rank", got=r,
                             allowed=f"ranks of {scenario}: {ranks or 'none'}")
    elif len(ranks) > 1:
        raise InputError("--r", f"scenario {scenario} has several ranks; pick one", allowed=f"one of {ranks}")
    varied = dict(next(sc.axes for sc in study.scenarios if sc.name == scenario))
    for key, text in (axis or {}).items():
        if key not in varied:
            raise InputError("--axis", f"scenario {scenario} has no axis {key}", got=key,
                            allowed=f"its axes: {', '.join(varied) or 'none'}")
        raw = yaml.safe_load(text) if isinstance(text, str) else text  # "1e-3", "[0.9, 0.95]", "true"
        value = _config_value(TRAIN_SCHEMA[key](raw, f"--axis {key}"))
        matches = [t for t in matches if getattr(t, key) == value]
        if not matches:
            raise InputError(f"--axis {key}", "not a value of the axis", got=text,
                            allowed="one of " + ", ".join(value_text(v) for v in varied[key]))
    missing = [k for k in varied if k not in (axis or {})]
    if missing:
        raise InputError("--axis", f"scenario {scenario} varies {', '.join(missing)}; pick a value",
                        allowed=f"e.g. --axis {missing[0]}={value_text(varied[missing[0]][0])} (see `lora-sweep plan`)")
    repeats = sorted({t.repeat for t in matches})
    chosen = [t for t in matches if t.repeat == repeat]
    if not chosen:
        raise InputError("--repeat", "no such repeat", got=repeat, allowed=f"one of {repeats}")
    return chosen[0]


def pick_method(configs: list, method: str | None, scenario: str, key=lambda t: t.method) -> list:
    """The configs of one LoRA method: `method` (e.g. --method dora+rslora), or the only one the scenario has."""
    methods = sorted({key(t) for t in configs if key(t) is not None})
    if method is not None:
        from lora_ext.methods import resolve_method

        chosen = resolve_method(method, "--method")
        configs = [t for t in configs if key(t) == chosen]
        if not configs:
            raise InputError("--method", "scenario has no such method", got=method,
                             allowed=f"methods of {scenario}: {', '.join(methods) or 'none (a baseline)'}")
    elif len(methods) > 1:
        raise InputError("--method", f"scenario {scenario} has several methods; pick one",
                         allowed="one of " + ", ".join(methods))
    return configs


def with_overrides(trial: TrialConfig, **changes: Any) -> TrialConfig:
    """A copy of a trial config with some fields changed (CLI flags such as --epochs)."""
    return replace(trial, **{k: v for k, v in changes.items() if v is not None})


__all__ = ["Cell", "axis_settings", "cells", "counted", "expand", "pick_method", "select_trial", "trial_counts",
           "value_text", "with_overrides"]
