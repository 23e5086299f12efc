"""`lora-sweep plan`: the expanded grid with exact trainable-parameter counts, offline and without weights."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from lora_ext import ParamCount, architecture_for, count_params
from lora_ext.placement import Placement
from record.errors import EXIT_OK, InputError, check_positive
from record.fields import CONFIRM, TUNE, short
from tune_jobs.remote.model import load_model_config
from tune_jobs.study.grid import axis_settings, cells, counted, setting_label, value_text
from tune_jobs.study.spec import TRAIN_SCHEMA, Study, TrialConfig

from .cli_args import add_spec_args


@dataclass(frozen=True)
class PlannedTrial:
    """A grid point and what it trains."""

    trial: TrialConfig
    params: ParamCount
    conditional: bool = False  # an adaptive repeat beyond the cell's `min`: runs only while the cell is unsettled
    chosen_later: tuple[str, ...] = ()  # settings of a confirm trial that its placement's tune stage will choose
    head_params: int = 0  # what the classification head trains (every placement trains it in full)

    @property
    def adapter_params(self) -> int | None:
        """What the LoRA adapters train, head excluded (the quantity a budget is of); None for a baseline."""
        return None if self.trial.baseline is not None else self.params.trainable - self.head_params

    def row(self) -> dict:
        t = self.trial
        return {
            "trial_name": t.trial_name, "scenario": t.scenario, "baseline": t.baseline, "layers": t.layers,
            "components": t.components, "r": t.r, "rank_pattern": t.rank_pattern, "alpha": t.alpha,
            "method": t.method, "loraplus_lr_ratio": t.loraplus_lr_ratio,
            "repeat": t.repeat, "seed": t.seed, "stage": t.stage, "chosen_later": list(self.chosen_later),
            "model": t.model,
            **{k: getattr(t, k) for k in TRAIN_SCHEMA},
            "selection_fraction": t.selection_fraction, "selection_rows": t.selection_rows,
            "budget": t.budget, "adapter_params": self.adapter_params,
            "budget_distance": None if t.budget is None else self.adapter_params - t.budget,
            "trainable_params": self.params.trainable, "total_params": self.params.full_model_total,
            "params_relative_pct": round(self.params.relative_pct, 4), "conditional": self.conditional,
        }


def plan(study: Study) -> list[PlannedTrial]:
    """Every trial the study can run (adaptive repeats up to `max`) with its parameter count (once per placement);
    under `select:` every candidate's tune trials, then one confirm stage per placement whose chosen settings are
    open (`chosen_later`; the first candidate's values stand in)."""
    model_config = load_model_config(study.model, study.data.num_labels)
    head = count_params(model_config, Placement(baseline="classifier_only")).trainable
    cache: dict = {}
    out = []
    for cell in counted(cells(study)):
        open_settings = tuple(cell.trials[0].selected or ()) if cell.stage == CONFIRM and cell.choice else ()
        for trial in cell.trials:
            placement = trial.placement()
            if placement not in cache:
                cache[placement] = count_params(model_config, placement)
            out.append(PlannedTrial(trial, cache[placement], trial.repeat - cell.trials[0].repeat >= cell.repeats.min,
                                    open_settings, head))
    return out


def _layers_text(layers: list[int]) -> str:
    if not layers:
        return "-"
    if len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(map(str, layers))


def _data_text(study: Study) -> str:
    data, sel = study.data, study.data.selection
    text = f"data {data.dataset}" + (f" (train_limit {data.train_limit})" if data.train_limit else "")
    text += f", {data.task}" + (f" ({data.num_labels} labels)" if data.task == "classification" else "") \
        + f", metric val_{data.metric}"
    if sel:
        held = f"{sel.rows:,} rows" if sel.rows else f"{100 * sel.fraction:g} %"
        text += f", selection split {held} of train (seed {study.base_seed})"
    return text


def format_table(study: Study, planned: list[PlannedTrial]) -> str:
    """Human-readable plan: one row per trial (with its epochs, learning rate and any other axis), then totals."""
    extra = [k for k in axis_settings(study) if k not in ("epochs", "learning_rate")]
    width = max([26, *(len(p.trial.trial_name) for p in planned)])
    every = architecture_for(study.model_type).component_names
    methods = {p.trial.method for p in planned} - {None, "lora"}
    mwidth = max([len(m) for m in methods] + [6]) if methods else 0
    staged = study.select is not None
    budgeted = any(p.trial.budget is not None for p in planned)
    header = f"{'trial':<{width}} {'layers':<16} {'components':<18} {'r':>3} " \
             + (f"{'budget':>9} {'adapters':>9} {'off by':>7} " if budgeted else "") \
             + (f"{'method':<{mwidth}} " if methods else "") + (f"{'stage':<7} " if staged else "") \
             + f"{'rep':>3} {'seed':>5} {'ep':>3} " \
             f"{'lr':>8} " + "".join(f"{k:>12} " for k in extra) + f"{'trainable':>12} {'% full FT':>9}"
    lines = [
        f"study {study.name!r}" + (f" (profile {study.profile})" if study.profile else "")
        + f": model {study.model} ({study.model_type}, {study.num_layers} layers), {_data_text(study)}",
        header, "-" * len(header),
    ]
    for p in planned:
        t = p.trial
        name = t.trial_name if not p.chosen_later else _open_name(t, p.chosen_later)
        setting = lambda k: "chosen" if k in p.chosen_later else value_text(getattr(t, k))  # noqa: E731
        comps = t.baseline or ("all" if tuple(t.components) == every else "+".join(t.components))
        r = "-" if t.r is None else (str(t.r) + ("*" if t.rank_pattern else ""))
        axes = "".join(f"{setting(k):>12} " for k in extra)
        rep = f"{t.repeat}+" if p.conditional else str(t.repeat)
        method = f"{t.method or '-':<{mwidth}} " if methods else ""
        stage = f"{t.stage or '-':<7} " if staged else ""
        budget = (f"{'-' if t.budget is None else format(t.budget, ','):>9} "
                  f"{'-' if p.adapter_params is None else format(p.adapter_params, ','):>9} "
                  f"{'-' if t.budget is None else format(p.adapter_params - t.budget, '+,'):>7} ") if budgeted else ""
        lines.append(f"{name:<{width}} {_layers_text(t.layers):<16} {comps:<18} {r:>3} {budget}{method}{stage}{rep:>3} "
                     f"{t.seed:>5} {t.epochs:>3} {setting('learning_rate'):>8} {axes}{p.params.trainable:>12,} "
                     f"{p.params.relative_pct:>8.3f}%")
    distinct = len({p.trial.trial_name.rsplit("-rep", 1)[0] for p in planned})
    total = planned[0].params.full_model_total if planned else 0
    lines.append("-" * len(header))
    fewest = sum(not p.conditional for p in planned)
    count = f"{len(planned)} trials" if fewest == len(planned) else f"{fewest} to {len(planned)} trials"
    lines.append(f"{count}, {distinct} distinct configurations; full model {total:,} parameters")
    if fewest < len(planned):
        adaptive = [sc.repeats for sc in study.scenarios if sc.repeats.adaptive]
        rules = sorted({r.describe() for r in adaptive})
        when = [*(["while the cell's 95 % t half-width of final " + study.metric + " is above until_halfwidth"]
                  if any(not r.until_decided for r in adaptive) else []),
                *(["while the cell's comparison with the best group is still open (until decided; alpha spent over "
                   "the planned looks)"] if any(r.until_decided for r in adaptive) else [])]
        lines.append(f"+ adaptive repeats ({'; '.join(rules)}): run only {', or '.join(when)}")
    if staged:
        sel = study.select
        tuned = sum(p.trial.stage == TUNE for p in planned)
        lines.append(f"tune, then confirm: {tuned} tune trials ({sel.tune_repeats} seed(s) per candidate) choose each "
                     f"placement's {', '.join(sel.axes)} on the selection split's final sel_{study.data.metric}; "
                     f"{len(planned) - tuned} confirm trials (seeds after those) are compared on dev"
                     + (f"; ASHA stops a placement's worse candidates after {sel.early_stop.grace_epochs} epoch(s) "
                        f"(reduction {sel.early_stop.reduction:g}), so the tune stage may cost less"
                        if sel.early_stop else ""))
    if any(p.trial.rank_pattern and p.trial.budget is None for p in planned):
        lines.append("* per-component ranks (see --json rank_pattern)")
    if budgeted:
        mixed = any(p.trial.rank_pattern and p.trial.budget for p in planned)
        lines.append("budget: the adapters' trainable parameters the ranks were chosen for (head excluded: it trains "
                     "in full everywhere); adapters: what they train exactly; off by: adapters - budget, never more "
                     "than one module's rank step" + ("; * r + 1 on some modules (--json rank_pattern)"
                                                      if mixed else ""))
    return "\n".join(lines)


def _open_name(trial: TrialConfig, settings: tuple[str, ...]) -> str:
    """A confirm trial's name before its placement chooses: `lora_all-r8-lr?-rep1`."""
    name = trial.trial_name
    for key in settings:
        name = name.replace(setting_label(key, getattr(trial, key)), f"{short(key)}?", 1)
    return name


def format_json(planned: list[PlannedTrial]) -> str:
    return json.dumps([p.row() for p in planned], indent=1)


def cmd_plan(args: argparse.Namespace) -> int:
    from tune_jobs.data.splits import checked_study
    from tune_jobs.study.spec import load_study

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
        from tune_jobs.sweep.reach import check_ray_address

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
    p = sub.add_parser("plan", help="validate a spec and list its trials with exact trainable parameters",
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
