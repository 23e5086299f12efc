"""Experiment specs: YAML -> validated `Study` (its grid of `TrialConfig`s: `tune_jobs.study.grid`).

Precedence of training settings, lowest first: `TrainConfig` defaults < spec `train` < scenario `train` <
profile `train` < profile `scenarios.<name>.train`. Each section is merged from those layers (plain mappings, the
later key wins) and then checked once, so a profile overrides only the fields it names and the article's
per-scenario learning rates survive `--profile demo`. A list-valued training setting is a grid axis.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import MISSING, asdict, dataclass, field, fields, make_dataclass, replace
from pathlib import Path
from typing import Any

from lora_ext import COMPONENTS, num_layers
from lora_ext.architectures import Architecture, architecture_for, layer_types
from lora_ext.budget import BudgetRanks, module_costs, ranks_for_budget
from lora_ext.methods import check_loraplus_lr_ratio, check_method_with_ranks, resolve_methods, uses_loraplus
from lora_ext.placement import (
    BASELINES,
    Placement,
    check_alpha,
    check_dropout,
    check_rank,
    resolve_components,
    resolve_layers,
)
from record import fields as record_fields
from record.errors import InputError, InputErrors, did_you_mean
from record.metrics import DEV, metric_of
from tune_jobs.remote.model import load_model_config

from . import checks as f
from .data_section import DATA_SCHEMA, DataConfig, Reader, Selection, Splits
from .profiles import at_holding_profile, chosen_profile, profile_scenarios, read_yaml
from .repeats import Repeats, check_repeats
from .select_section import Selecting, check_select

# Optimisation and regularisation settings of one trial: the TRAINING fields of the record, with their defaults.
TrainConfig = make_dataclass("TrainConfig", [(name, record_fields.BY_NAME[name].python_type,
                                              field(default=record_fields.BY_NAME[name].default))
                                             for name in record_fields.TRAINING_NAMES], frozen=True)
TrainConfig.__module__ = __name__


TRAIN_SCHEMA: dict[str, f.Check] = {  # the check of every training setting (tests: one per TRAINING field)
    "epochs": f.integer(1),
    "learning_rate": f.number(0, low_open=True, high=None),
    "batch_size": f.integer(1),
    "eval_batch_size": f.integer(1),
    "weight_decay": f.number(0, None),
    "adam_betas": f.pair_of(f.number(0, 1)),
    "adam_epsilon": f.number(0, None, low_open=True),
    "warmup_ratio": f.number(0, 1),
    "lr_schedule": f.choice("cosine", "linear", "constant"),
    "grad_clip": f.optional(f.number(0, None, low_open=True)),
    "hidden_dropout": check_dropout,
    "attention_dropout": check_dropout,
    "classifier_dropout": f.optional(check_dropout),
    "gradient_checkpointing": f.boolean,
    "precision": f.choice("auto", "bf16", "fp16", "fp32"),
}
# Every training setting may also be a list: a grid axis (a list of lists for list-valued settings, adam_betas).
TRAIN_AXES: dict[str, f.Check] = {
    k: f.axis(check, isinstance(getattr(TrainConfig, k), tuple)) for k, check in TRAIN_SCHEMA.items()
}


def _ranks(value: Any, path: str) -> tuple:
    """`ranks`: a list whose items are an int or a per-component mapping (e.g. {q: 8, up: 4})."""
    if isinstance(value, (int, dict)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise InputError(path, "must be a non-empty list of ranks", got=value, allowed="e.g. [1, 8] or [{q: 8, up: 4}]")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, dict):
            for comp, r in item.items():
                if comp not in COMPONENTS:
                    raise InputError(f"{path}[{i}]", "unknown component in per-component rank", got=comp,
                                    allowed=did_you_mean(comp, COMPONENTS) + "any of " + ", ".join(COMPONENTS))
                check_rank(r, f"{path}[{i}].{comp}")
            out.append(tuple(sorted(item.items(), key=lambda kv: COMPONENTS.index(kv[0]))))
        else:
            out.append(check_rank(item, f"{path}[{i}]"))
    if len(set(out)) != len(out):
        raise InputError(path, "duplicate rank", got=value, allowed="list each rank once")
    return tuple(out)


def _budgets(value: Any, path: str) -> tuple[int, ...]:
    """`budgets`: trainable adapter parameters (head excluded), one or a list; each placement gets the ranks that
    come nearest (lora_ext.budget)."""
    items = value if isinstance(value, list) else [value]
    allowed = "a positive whole number of adapter parameters, or a list of them, e.g. [83000, 332000]"
    if not items:
        raise InputError(path, "empty", got=value, allowed=allowed)
    for i, n in enumerate(items):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"{path}[{i}]" if isinstance(value, list) else path, "not a parameter budget", got=n,
                             allowed=allowed)
    if len(set(items)) != len(items):
        raise InputError(path, "duplicate budget", got=value, allowed="list each budget once")
    named: dict[str, int] = {}
    for n in items:
        if record_fields.count_text(n) in named:
            raise InputError(path, f"{named[record_fields.count_text(n)]:,} and {n:,} would both be named "
                             f"b{record_fields.count_text(n)} in trial names", got=value,
                             allowed="budgets that differ in their first three digits")
        named[record_fields.count_text(n)] = n
    return tuple(items)


LORA_SCHEMA: dict[str, f.Check] = {"ranks": _ranks, "budgets": _budgets, "alpha": check_alpha,
                                   "dropout": check_dropout, "method": resolve_methods,
                                   "loraplus_lr_ratio": check_loraplus_lr_ratio}


@dataclass(frozen=True)
class Budgeted:
    """One `budgets` entry of a scenario: the budget and the ranks it gives the scenario's placement per method
    (DoRA's magnitudes take part of the budget, so its ranks can differ)."""

    budget: int
    by_method: tuple[tuple[str, BudgetRanks], ...]

    def ranks(self, method: str) -> BudgetRanks:
        return dict(self.by_method)[method]


@dataclass(frozen=True)
class LoraSettings:
    """A scenario's LoRA settings after merging (`lora:` of the spec, the scenario, the profile)."""

    ranks: tuple = (8,)  # ints or per-component tuples
    budgets: tuple[int, ...] = ()  # instead of ranks: the adapter parameters each placement's ranks come nearest
    alpha: float | None = None  # None: alpha = r
    dropout: float = 0.0
    method: tuple[str, ...] = ("lora",)  # canonical methods (lora_ext.methods); several: an axis, like ranks
    loraplus_lr_ratio: float | None = None  # None: DEFAULT_LORAPLUS_LR_RATIO where a method uses LoRA+


def _resources(value: Any, path: str) -> dict:
    clean = {}
    f.mapping(value, path)
    for key, v in value.items():
        if key not in ("cpu", "gpu"):
            raise f.unknown_key_error(key, ["cpu", "gpu"], path)
        lo_open = key == "cpu"
        clean[key] = f.number(0, None, low_open=lo_open)(v, f"{path}.{key}")
    return clean


STUDY_SCHEMA: dict[str, f.Check] = {
    "name": f.text,
    "description": f.text,
    "model": f.text,
    "model_init": f.choice("pretrained", "random"),
    "data": f.mapping,
    "train": f.mapping,
    "lora": f.mapping,
    "repeats": check_repeats,
    "base_seed": f.integer(0),
    "resources": _resources,
    "max_failures": f.integer(0),
    "max_concurrent": f.optional(f.integer(1)),
    "select": check_select,
    "scenarios": lambda v, p: v,  # checked item by item below
    "profiles": f.mapping,
}
SCENARIO_KEYS = ("name", "baseline", "layers", "components", "ranks", "budgets", "alpha", "dropout", "method",
                 "loraplus_lr_ratio", "train", "repeats")
PROFILE_KEYS = tuple(k for k in STUDY_SCHEMA if k not in ("name", "profiles", "scenarios")) + ("scenarios",)
SECTIONS = ("data", "train", "lora")
REPEATS_SCHEMA: dict[str, f.Check] = {"repeats": check_repeats}


@dataclass(frozen=True)
class Scenario:
    """One placement (or baseline) of a study with its fully merged training settings."""

    name: str
    baseline: str | None
    layers: tuple[int, ...]
    components: tuple[str, ...]
    ranks: tuple  # ints, per-component tuples or `Budgeted` (lora.budgets); () for baselines
    alpha: float | None
    lora_dropout: float
    train: TrainConfig  # settings shared by the scenario's trials (an axis setting holds its first value)
    repeats: Repeats
    axes: tuple[tuple[str, tuple], ...] = ()  # training-setting axes (setting, values), in TRAIN_SCHEMA order
    methods: tuple[str, ...] = ()  # LoRA methods (an axis when several); () for baselines
    loraplus_lr_ratio: float | None = None  # the ratio of the scenario's LoRA+ methods

    def train_points(self) -> list[tuple[dict[str, Any], TrainConfig]]:
        """(axis values, training settings) for every point of the scenario's training-setting grid."""
        keys = [k for k, _ in self.axes]
        combos = itertools.product(*(values for _, values in self.axes))
        return [(dict(zip(keys, c)), replace(self.train, **dict(zip(keys, c)))) for c in combos]

    def cells_count(self) -> int:
        """Groups (grid cells) the scenario makes: ranks x methods (LoRA) x training-setting points."""
        points = math.prod(len(values) for _, values in self.axes)
        return points if self.baseline is not None else points * len(self.ranks) * max(len(self.methods), 1)


@dataclass(frozen=True, kw_only=True)
class Study:
    """A validated experiment spec (after the profile is applied); the defaults are those of a spec that leaves
    a key out."""

    model: str
    data: DataConfig
    scenarios: tuple[Scenario, ...]
    num_layers: int
    model_type: str
    profile: str | None = None
    name: str = "study"
    description: str = ""
    model_init: str = "pretrained"
    base_seed: int = 42
    resources: dict = field(default_factory=lambda: {"cpu": 1})
    max_failures: int = 2
    max_concurrent: int | None = None
    select: Selecting | None = None  # tune, then confirm (tune_jobs.study.select_section); None: every cell on dev

    @property
    def metric(self) -> str:
        """The final result that ranks trials and that adaptive repeats measure: the task's primary metric."""
        return f"{DEV}{self.data.metric}"  # a DataConfig always has one (resolved when made)


# the top-level spec keys that are Study settings with a default (model, data and scenarios are built by parse_study)
STUDY_SETTINGS = tuple(fl.name for fl in fields(Study) if fl.name in STUDY_SCHEMA
                       and (fl.default is not MISSING or fl.default_factory is not MISSING))


@dataclass(frozen=True, kw_only=True)
class TrialConfig:
    """One grid point, flat and JSON-able: the config dict Ray Tune hands a trial (`to_dict`, `from_dict`).

    Its fields are the trial record's declaration (record.fields.FIELDS: name, Arrow type, role), in that order, so
    the Parquet schema, trial names, HParams and the analysis' configuration key can never disagree with it;
    tests/test_trial_config.py checks names, order, types and defaults field by field. A default is the record's:
    a training setting's value when no spec layer sets it, another field's value in records made before it existed
    (`from_dict` still wants every field, after `record.fields.filled`)."""

    study: str
    trial_name: str
    scenario: str
    # placement
    baseline: str | None  # classifier_only | full | None (LoRA)
    layers: list[int]
    components: list[str]
    r: int | None
    budget: int | None = None  # `lora.budgets`: the adapter parameters r and rank_pattern were chosen for
    method: str | None = "lora"  # lora | dora+rslora | ...; None: a baseline
    loraplus_lr_ratio: float | None = None  # LoRA+ methods only
    rank_pattern: dict[str, int]  # {component: rank} exceptions to r; a budget's {component@layer: r + 1}
    alpha: float | None
    lora_dropout: float
    # identity
    repeat: int
    seed: int
    looks: int = 1
    stage: str | None = None  # tune | confirm under a spec's `select:`
    selected: list[str] | None = None
    # model and data (primary_metric and resources: identity, labels rather than settings)
    model: str
    model_init: str
    dataset: str
    text_columns: list[str]
    label_column: str
    train_split: str
    eval_split: str
    task: str  # classification | regression
    label_names: list[str] | None
    primary_metric: str
    resources: dict[str, float] | None = None  # what Ray reserved for the trial ({cpu: 4, gpu: 1})
    reader: dict[str, Any] | None
    train_limit: int | None
    max_length: int
    num_labels: int | None
    selection_fraction: float | None
    selection_rows: int | None
    selection_seed: int | None
    # training settings (TrainConfig)
    epochs: int = 3
    learning_rate: float = 1.4e-3
    batch_size: int = 32
    eval_batch_size: int = 256
    weight_decay: float = 0.01
    adam_betas: list[float] | tuple[float, ...] = (0.9, 0.98)  # a list in a grid point (JSON)
    adam_epsilon: float = 1e-6
    warmup_ratio: float = 0.1
    lr_schedule: str = "cosine"
    grad_clip: float | None = None
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    classifier_dropout: float | None = None
    gradient_checkpointing: bool = False
    precision: str = "auto"

    def placement(self) -> Placement:
        """The LoRA placement (or baseline) this trial trains."""
        return Placement(
            layers=tuple(self.layers), components=tuple(self.components), r=self.r, alpha=self.alpha,
            dropout=self.lora_dropout, rank_pattern=tuple(self.rank_pattern.items()), baseline=self.baseline,
            **({"method": self.method, "loraplus_lr_ratio": self.loraplus_lr_ratio} if self.baseline is None else {}),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def data_config(self) -> DataConfig:
        """The data section this trial was made from (what `tune_jobs.data.splits` reads)."""
        held = self.selection_fraction is not None or self.selection_rows is not None
        return DataConfig(
            dataset=self.dataset, text=tuple(self.text_columns), label=self.label_column,
            splits=Splits(self.train_split, self.eval_split), task=self.task,
            metric=metric_of(self.primary_metric).name, labels=tuple(self.label_names) if self.label_names else None,
            num_labels=self.num_labels,
            reader=Reader(**{k: tuple(v) if isinstance(v, list) else v for k, v in self.reader.items()})
            if self.reader else None, train_limit=self.train_limit, max_length=self.max_length,
            selection=Selection(self.selection_fraction, self.selection_rows) if held else None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialConfig:
        """Typed view of a config dict (Ray may hand it back with extra keys; those are ignored; fields added after
        the config was written get what the record meant before them)."""
        data = record_fields.filled(data)
        missing = set(record_fields.NAMES) - set(data)
        if missing:
            raise InputError("trial config", "missing keys", got=sorted(missing))
        return cls(**{k: data[k] for k in record_fields.NAMES})


# ---------------------------------------------------------------- loading


def load_study(path: str | Path, profile: str | None = None, data: dict | None = None) -> Study:
    """Read, apply `profile` (and `data`, e.g. the CLI's --data, over both), validate completely and return the
    Study; raises InputErrors with every problem."""
    return parse_study(read_yaml(path), profile, data)


def _pick(body: Any, keys) -> dict:
    return {k: body[k] for k in keys if k in body} if isinstance(body, dict) else {}


def _omit(body: Any, keys) -> dict:
    return {k: v for k, v in body.items() if k not in keys} if isinstance(body, dict) else {}


def parse_study(raw: dict, profile: str | None = None, data_override: dict | None = None) -> Study:
    """Validate a raw spec mapping (see `load_study` and the module docstring for the layers merged)."""
    errors: list[InputError] = []
    prof, pp = chosen_profile(raw, profile, PROFILE_KEYS, errors)
    top = f.layered(STUDY_SCHEMA, [("", _omit(raw, SECTIONS)), (pp, _omit(prof, SECTIONS + ("scenarios",)))], errors)
    data_fields = f.layered(DATA_SCHEMA, [("data", raw.get("data")), (f"{pp}.data", prof.get("data")),
                                          ("--data", data_override)], errors)
    try:
        data = DataConfig(**data_fields)
    except InputError as err:  # fields that disagree: reported with the rest; the default data stands in
        errors.append(err)
        data = DataConfig()
    if "scenarios" not in raw:
        errors.append(InputError("scenarios", "missing", allowed="a list of scenarios, each with a name"))

    model = top.get("model", "")
    n_layers, model_type, arch, kinds, cfg = 0, "", None, None, None
    if not model:
        errors.append(InputError("model", "missing", allowed="e.g. 'minilm-l6' or 'roberta-base'"))
    else:
        try:
            cfg = load_model_config(model, data.num_labels or 2)
            n_layers, model_type = num_layers(cfg), cfg.model_type
            arch, kinds = architecture_for(model_type), layer_types(cfg)
        except InputError as err:
            errors.append(err)

    raw_scen = raw.get("scenarios")
    if raw_scen is not None and (not isinstance(raw_scen, list) or not raw_scen):
        errors.append(InputError("scenarios", "must be a non-empty list", got=raw_scen))
        raw_scen = []
    raw_scen = raw_scen or []
    names = {s["name"] for s in raw_scen if isinstance(s, dict) and isinstance(s.get("name"), str)}
    prof_scen = profile_scenarios(prof, pp, names, errors)
    scenarios: list[Scenario] = []
    seen: set[str] = set()
    for i, item in enumerate(raw_scen):
        body = f.check_section(item, {k: (lambda v, p: v) for k in SCENARIO_KEYS}, f"scenarios[{i}]", errors)
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            errors.append(InputError(f"scenarios[{i}].name", "missing or empty", got=name,
                                    allowed="a short unique name"))
            continue
        path = f"scenarios[{i}] ({name})"
        if name in seen:
            errors.append(InputError(f"{path}.name", "duplicate scenario name", got=name))
        seen.add(name)
        placed = {k: v for k, v in prof_scen.get(name, {}).items() if k in ("layers", "components")}
        if placed and body.get("baseline") is not None:
            errors.append(InputError(f"{pp}.scenarios.{name}.{next(iter(placed))}", "a baseline has no LoRA "
                                     "placement", got=next(iter(placed.values())), allowed="remove it"))
        elif placed:
            body = {**body, **placed}  # the profile's placement of this scenario, checked as the scenario's own
        train = f.layered(TRAIN_AXES, [("train", raw.get("train")), (f"{path}.train", body.get("train")),
                                       (f"{pp}.train", prof.get("train")),
                                       (f"{pp}.scenarios.{name}.train", prof_scen.get(name, {}).get("train"))], errors)
        lora = f.layered(LORA_SCHEMA, [("lora", raw.get("lora")), (path, _pick(body, LORA_SCHEMA)),
                                       (f"{pp}.lora", prof.get("lora"))], errors)
        repeats = f.layered(REPEATS_SCHEMA, [("", _pick(raw, REPEATS_SCHEMA)), (path, _pick(body, REPEATS_SCHEMA)),
                                             (pp, _pick(prof, REPEATS_SCHEMA))], errors).get("repeats", Repeats())
        scenarios.extend(_scenario(body, path, name, train, lora, repeats, (n_layers, arch, kinds, cfg), errors))
    ratio_set = [sc for sc in scenarios if sc.loraplus_lr_ratio is not None]
    if ratio_set and not any(uses_loraplus(m) for sc in scenarios for m in sc.methods):
        errors.append(InputError("lora.loraplus_lr_ratio", "set, but no scenario's method uses loraplus",
                                 got=ratio_set[0].loraplus_lr_ratio, allowed="add loraplus to `method`, or remove it"))
    errors += _check_select(top.get("select"), data, scenarios, "select" if "select" in raw else f"{pp}.select")
    select = top.get("select")
    errors += _check_references(scenarios, select.confirm_repeats if select is not None else None)
    if errors:
        raise InputErrors(_unique(at_holding_profile(errors, raw, profile)))
    settings = {k: v for k, v in top.items() if k in STUDY_SETTINGS}
    return Study(model=model, data=data, scenarios=tuple(scenarios), num_layers=n_layers, model_type=model_type,
                 profile=profile, **settings)


def _check_references(scenarios: list[Scenario], confirm: Repeats | None) -> list[InputError]:
    """`repeats: {until: decided, reference: R}` (or select's confirm_repeats) names a scenario of the study that is
    one group (one grid cell)."""
    errors, by_name = [], {sc.name: sc for sc in scenarios}
    named = [sc.repeats.reference for sc in scenarios] + [confirm.reference if confirm is not None else None]
    for ref in sorted({r for r in named if r is not None}):
        target = by_name.get(ref)
        field = "repeats.reference" if ref != (confirm.reference if confirm else None) else \
            "select.confirm_repeats.reference"
        if target is None:
            errors.append(InputError(field, "not a scenario of this study", got=ref,
                                     allowed=", ".join(sorted(by_name))))
        elif target.cells_count() != 1:
            errors.append(InputError(field, f"scenario {ref!r} is {target.cells_count()} groups (ranks, methods or "
                                            "training-setting axes); the reference must be one", got=ref,
                                     allowed="a scenario with one rank and no axes, e.g. a baseline"))
    return errors


def _check_select(select: Selecting | None, data: DataConfig, scenarios: list[Scenario], path: str) -> list[InputError]:
    """`select:` needs a selection split, and each of its axes varied by some scenario; early stopping needs epochs
    after its grace period."""
    if select is None:
        return []
    if data.selection is None:
        return [InputError(path, "chooses on the selection split, and the spec holds none out (choosing on dev, or "
                                 "stopping early on it, would bias the numbers the dev set reports)",
                           allowed="add data.selection, e.g. {fraction: 0.05} of the train split, never trained on")]
    varied = {k for sc in scenarios for k, _ in sc.axes}
    missing = [a for a in select.axes if a not in varied]
    if missing and scenarios:
        return [InputError(f"{path}.axes", f"{missing[0]} is not an axis of any scenario: there is nothing to choose",
                           got=missing[0], allowed=f"make it a list in train (e.g. {missing[0]}: [a, b]), or drop it")]
    choosing = [sc for sc in scenarios if any(k in select.axes for k, _ in sc.axes)]
    stop = select.early_stop
    longest = max((max(dict(sc.axes).get("epochs", (sc.train.epochs,))) for sc in choosing), default=0)
    if stop is not None and choosing and stop.grace_epochs >= longest:
        return [InputError(f"{path}.early_stop.grace_epochs", f"must be below the tuning trials' epochs ({longest}), "
                           "or nothing is ever stopped", got=stop.grace_epochs, allowed=f"1..{longest - 1}")]
    return []


def _unique(errors: list[InputError]) -> list[InputError]:
    """A spec-level value is checked once per scenario it reaches: report each problem once."""
    return list({str(e): e for e in errors}.values())


def _budgeted(cfg, layers: tuple[int, ...], components: tuple[str, ...], lora: LoraSettings,
              path: str) -> tuple[Budgeted, ...]:
    """Each budget's ranks for this placement, per method, counted on the model's meta-device build."""
    costs = {m: module_costs(cfg, Placement(layers=layers, components=components, r=1, method=m))
             for m in lora.method}  # one meta-device count per method, whatever the budgets
    out = []
    for i, budget in enumerate(lora.budgets):
        by_method = []
        for method in lora.method:
            ranks = ranks_for_budget(costs[method], budget, f"{path}.budgets[{i}]")
            check_method_with_ranks(method, bool(ranks.rank_pattern), f"{path}.method")
            by_method.append((method, ranks))
        out.append(Budgeted(budget, tuple(by_method)))
    return tuple(out)


def _scenario(body: dict, path: str, name: str, train: dict, lora: dict, repeats: Repeats,
              shape: tuple[int, Architecture | None, tuple[str, ...] | None, Any],
              errors: list[InputError]) -> list[Scenario]:
    """Validate one scenario on a model of `shape` (layers, architecture, layer_types, its transformers config);
    `layers: each` yields one scenario per layer, named `<name>_L<i>`."""
    n_layers, arch, kinds, cfg = shape
    axes = tuple((k, train[k]) for k in TRAIN_SCHEMA if isinstance(train.get(k), f.Axis))
    tc = TrainConfig(**{k: v[0] if isinstance(v, f.Axis) else v for k, v in train.items()})
    try:
        baseline = body.get("baseline")
        if baseline is not None:
            if baseline not in BASELINES:
                raise InputError(f"{path}.baseline", "unknown baseline", got=baseline,
                                allowed="classifier_only or full (or leave it out for LoRA)")
            extra = [k for k in ("layers", "components", "ranks", "budgets", "alpha", "dropout", "method",
                                 "loraplus_lr_ratio") if k in body]
            if extra:
                raise InputError(f"{path}.{extra[0]}", "a baseline has no LoRA placement", got=body[extra[0]],
                                allowed=f"remove it, or drop `baseline: {baseline}`")
            return [Scenario(name, baseline, (), (), (), None, 0.0, tc, repeats, axes)]
        if "layers" not in body:
            raise InputError(f"{path}.layers", "missing", allowed="e.g. all, upper, lower, even, 3 or [0, 5]")
        if "components" not in body:
            raise InputError(f"{path}.components", "missing", allowed="e.g. all, v+up, [q, v]")
        components = resolve_components(body["components"], f"{path}.components", arch)
        if "budgets" in lora and "ranks" in lora:
            raise InputError(f"{path}.budgets", "set together with ranks (in the spec, this scenario or the profile)",
                             got=lora["budgets"], allowed="ranks (fixed ranks) or budgets (ranks chosen per placement "
                                                          "for that many adapter parameters), not both")
        lora = LoraSettings(**lora)
        if "loraplus_lr_ratio" in body and not any(uses_loraplus(m) for m in lora.method):
            # its own ratio, and none of its methods reads it: silently ignored otherwise (another scenario's LoRA+
            # keeps the study-wide check below quiet)
            raise InputError(f"{path}.loraplus_lr_ratio", f"set, but this scenario's method ({', '.join(lora.method)}) "
                             "does not use LoRA+, so the ratio would be ignored", got=body["loraplus_lr_ratio"],
                             allowed="set `method: loraplus` (or e.g. dora+loraplus) in this scenario, or remove the "
                                     "ratio")
        ranks = lora.ranks
        for i, r in enumerate(ranks):
            if isinstance(r, tuple) and set(c for c, _ in r) - set(components):
                bad = sorted(set(c for c, _ in r) - set(components))
                raise InputError(f"{path}.ranks[{i}]", "rank given for a component the scenario does not adapt",
                                got=bad, allowed="components: " + "+".join(components))
        for method in lora.method:
            check_method_with_ranks(method, any(isinstance(r, tuple) and len({v for _, v in r}) > 1 for r in ranks),
                                    f"{path}.method")
        common = dict(components=components, ranks=ranks, alpha=lora.alpha, lora_dropout=lora.dropout, train=tc,
                      repeats=repeats, baseline=None, axes=axes, methods=lora.method,
                      loraplus_lr_ratio=lora.loraplus_lr_ratio)
        if n_layers == 0:  # model unknown: its error is already reported
            return []
        each = body["layers"] == "each"
        named = [(f"{name}_L{i}", (i,)) for i in range(n_layers)] if each else \
            [(name, resolve_layers(body["layers"], n_layers, f"{path}.layers", kinds))]
        if lora.budgets:
            return [Scenario(name=n, layers=ls, **{**common, "ranks": _budgeted(cfg, ls, components, lora, path)})
                    for n, ls in named]
        return [Scenario(name=n, layers=ls, **common) for n, ls in named]
    except InputError as err:
        errors.append(err)
        return []


__all__ = ["Repeats", "Scenario", "Study", "TrainConfig", "TrialConfig", "load_study", "parse_study"]
