"""Experiment specs: YAML -> validated `Study` (its grid of `TrialConfig`s: `tune_jobs.grid`).

Precedence of training settings, lowest first: `TrainConfig` defaults < spec `train` < scenario `train` <
profile `train` < profile `scenarios.<name>.train`. Each section is merged from those layers (plain mappings, the
later key wins) and then checked once, so a profile overrides only the fields it names and the article's
per-scenario learning rates survive `--profile demo`. A list-valued training setting is a grid axis.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from lora_ext import COMPONENTS, SpecError, SpecErrors, load_model_config, num_layers
from lora_ext.placement import (
    BASELINES,
    Placement,
    check_alpha,
    check_dropout,
    check_rank,
    resolve_components,
    resolve_layers,
)

from . import fields as f
from .metrics import CLASSIFICATION, DEFAULT_METRIC, REGRESSION, TASK_METRICS
from .tasks import preset

PROFILES_FILE = Path(__file__).parent / "profiles.yaml"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and regularisation settings of one trial (the article's names where it has them)."""

    epochs: int = 3
    learning_rate: float = 1.4e-3
    batch_size: int = 32
    eval_batch_size: int = 256
    weight_decay: float = 0.01
    adam_betas: tuple[float, float] = (0.9, 0.98)
    adam_epsilon: float = 1e-6
    warmup_ratio: float = 0.1
    lr_schedule: str = "cosine"  # cosine | linear | constant (after warmup)
    grad_clip: float | None = None  # max global grad norm; None = no clipping
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    classifier_dropout: float | None = None  # None = the model's default (its hidden dropout)
    gradient_checkpointing: bool = False
    precision: str = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU


TRAIN_SCHEMA: dict[str, f.Check] = {
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
    "precision": f.choice("auto", "bf16", "fp32"),
}
# Every training setting may also be a list: a grid axis (a list of lists for list-valued settings, adam_betas).
TRAIN_AXES: dict[str, f.Check] = {
    k: f.axis(check, isinstance(getattr(TrainConfig, k), tuple)) for k, check in TRAIN_SCHEMA.items()
}


@dataclass(frozen=True)
class Selection:
    """The held-out selection split: a fraction of the train split or a number of its rows (exactly one)."""

    fraction: float | None = None
    rows: int | None = None


def _selection(value: Any, path: str) -> Selection:
    clean = f.section({"fraction": f.number(0, 1, low_open=True), "rows": f.integer(1)})(value, path)
    if len(clean) != 1:
        raise SpecError(path, "give fraction or rows, one of them", got=value,
                        allowed="e.g. {fraction: 0.1} or {rows: 2000}")
    return Selection(**clean)


@dataclass(frozen=True)
class Splits:
    """Which splits train and evaluate: hub split names, or file names (`dev`, `validation.parquet`) in a folder."""

    train: str | None = None  # None = train
    eval: str | None = None  # None = the preset's (validation, validation_matched), else validation


@dataclass(frozen=True)
class Reader:
    """Options of the CSV/TSV reader; None = the file type's default (.tsv: tab, no quoting, as GLUE's files;
    .csv: comma, CSV quoting; a header line; UTF-8 with or without a byte-order mark)."""

    delimiter: str | None = None
    header: bool | None = None  # false: no header line, name the columns in column_names
    column_names: tuple[str, ...] | None = None
    quoting: str | None = None  # none: a quote is text | minimal: CSV quoting
    encoding: str | None = None  # default utf-8-sig (strips a byte-order mark)


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from, which columns hold text and label, the task, and how much of it a trial uses.

    Fields left None come from the GLUE preset (`glue/rte`) or the defaults (`sentence`, `label`, classification);
    `resolve_data` fills them, and `num_labels`/`labels` of a non-preset dataset come from its train split.
    """

    dataset: str = "glue/sst2"  # glue/<task> preset, hub id, or a local directory of split files
    text: tuple[str, ...] | None = None  # one column, or two (a sentence pair)
    label: str | None = None
    splits: Splits | None = None
    task: str | None = None  # classification | regression
    metric: str | None = None  # the primary metric: reported, optimized by Ray Tune, compared by the report
    labels: tuple[str, ...] | None = None  # label names in id order (None: the train split's labels, sorted)
    num_labels: int | None = None
    reader: Reader | None = None
    train_limit: int | None = None  # seeded random subset of the train rows left after the selection split
    max_length: int = 128  # tokens; longer texts (pairs: longest first) are truncated
    selection: Selection | None = None  # rows held out of training (seeded by base_seed) to choose settings on

    def trial_fields(self, base_seed: int) -> dict[str, Any]:
        """The TrialConfig fields of this (resolved) data section."""
        sel = self.selection
        return dict(dataset=self.dataset, text_columns=list(self.text or ()), label_column=self.label,
                    train_split=self.splits.train if self.splits else None,
                    eval_split=self.splits.eval if self.splits else None, task=self.task,
                    label_names=list(self.labels) if self.labels else None,
                    primary_metric=f"val_{self.metric}" if self.metric else None,
                    reader=_options(self.reader), num_labels=self.num_labels, train_limit=self.train_limit,
                    max_length=self.max_length, selection_fraction=sel.fraction if sel else None,
                    selection_rows=sel.rows if sel else None, selection_seed=base_seed if sel else None)


def _options(reader: Reader | None) -> dict[str, Any] | None:
    """Reader options the spec set, JSON-able (a trial config value)."""
    if reader is None:
        return None
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(reader).items() if v is not None}


def _text_columns(value: Any, path: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not 1 <= len(items) <= 2:
        raise SpecError(path, "must be one column or a pair of two", got=value, allowed="e.g. sentence or "
                        "[sentence1, sentence2]")
    return tuple(f.text(v, f"{path}[{i}]" if isinstance(value, list) else path) for i, v in enumerate(items))


def _label_names(value: Any, path: str) -> tuple[str, ...]:
    ok = isinstance(value, list) and len(value) >= 2 and all(isinstance(v, (str, int)) and not isinstance(v, bool)
                                                             for v in value)
    if not ok or len({str(v) for v in value}) != len(value):
        raise SpecError(path, "must be a list of two or more distinct label names, in id order", got=value,
                        allowed="e.g. [negative, positive]")
    return tuple(str(v) for v in value)


def _splits(value: Any, path: str) -> Splits:
    return Splits(**f.section({"train": f.text, "eval": f.text})(value, path))


def _delimiter(value: Any, path: str) -> str:
    if not isinstance(value, str) or len(value) != 1:
        raise SpecError(path, "must be one character", got=value, allowed="e.g. ',' or a tab (\"\\t\")")
    return value


def _column_names(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise SpecError(path, "must be a list of column names", got=value, allowed="e.g. [source, label, mark, sentence]")
    return tuple(value)


READER_SCHEMA: dict[str, f.Check] = {
    "delimiter": _delimiter, "header": f.boolean, "column_names": _column_names,
    "quoting": f.choice("none", "minimal"), "encoding": f.text,
}


def _reader(value: Any, path: str) -> Reader:
    return Reader(**f.section(READER_SCHEMA)(value, path))


DATA_SCHEMA: dict[str, f.Check] = {
    "dataset": f.text,
    "text": _text_columns,
    "label": f.text,
    "splits": _splits,
    "task": f.choice(CLASSIFICATION, REGRESSION),
    "metric": f.choice(*(m for names in TASK_METRICS.values() for m in names)),
    "labels": _label_names,
    "num_labels": f.optional(f.integer(1)),
    "reader": f.optional(_reader),
    "train_limit": f.optional(f.integer(1)),
    "max_length": f.integer(8, 4096),
    "selection": f.optional(_selection),
}


def resolve_data(data: DataConfig) -> DataConfig:
    """Fill what the spec left out from the GLUE preset or the defaults, and check that the fields agree."""
    task = preset(data.dataset)
    kind = data.task or (task.kind if task else CLASSIFICATION)
    same_kind = task is not None and task.kind == kind
    splits = data.splits or Splits()
    labels = data.labels or (task.label_names if same_kind else None)
    metric = data.metric or (task.metric if same_kind else DEFAULT_METRIC[kind])
    if metric not in TASK_METRICS[kind]:
        raise SpecError("data.metric", f"not a {kind} metric", got=metric, allowed="one of " + ", ".join(TASK_METRICS[kind]))
    num_labels = data.num_labels
    if kind == REGRESSION:
        if data.labels:
            raise SpecError("data.labels", "a regression task has no label names", got=list(data.labels),
                            allowed="remove it, or set task: classification")
        if num_labels not in (None, 1):
            raise SpecError("data.num_labels", "a regression task has one output", got=num_labels,
                            allowed="remove it (or 1), or set task: classification")
        num_labels = 1
    elif num_labels == 1:
        raise SpecError("data.num_labels", "a classification task needs at least 2 labels", got=1,
                        allowed="the number of classes, or task: regression for one numeric output")
    elif labels and num_labels is not None and num_labels != len(labels):
        raise SpecError("data.num_labels", f"differs from the {len(labels)} names in data.labels", got=num_labels,
                        allowed="remove one of them")
    elif labels:
        num_labels = len(labels)
    return replace(data, text=data.text or (task.text if task else ("sentence",)), label=data.label or "label",
                   splits=Splits(splits.train or "train", splits.eval or (task.eval_split if task else "validation")),
                   task=kind, metric=metric, labels=labels, num_labels=num_labels)


def _ranks(value: Any, path: str) -> tuple:
    """`ranks`: a list whose items are an int or a per-component mapping (e.g. {q: 8, up: 4})."""
    if isinstance(value, (int, dict)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise SpecError(path, "must be a non-empty list of ranks", got=value, allowed="e.g. [1, 8] or [{q: 8, up: 4}]")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, dict):
            for comp, r in item.items():
                if comp not in COMPONENTS:
                    raise SpecError(f"{path}[{i}]", "unknown component in per-component rank", got=comp,
                                    allowed="any of " + ", ".join(COMPONENTS))
                check_rank(r, f"{path}[{i}].{comp}")
            out.append(tuple(sorted(item.items(), key=lambda kv: COMPONENTS.index(kv[0]))))
        else:
            out.append(check_rank(item, f"{path}[{i}]"))
    if len(set(out)) != len(out):
        raise SpecError(path, "duplicate rank", got=value, allowed="list each rank once")
    return tuple(out)


LORA_SCHEMA: dict[str, f.Check] = {"ranks": _ranks, "alpha": check_alpha, "dropout": check_dropout}


@dataclass(frozen=True)
class Repeats:
    """Seeds per cell: `min` always, then one more at a time while the cell's 95 % t half-width of the study's
    metric is above `until_halfwidth`, up to `max`. A fixed count n is Repeats(n, n)."""

    min: int
    max: int
    until_halfwidth: float | None = None

    @property
    def adaptive(self) -> bool:
        return self.until_halfwidth is not None and self.max > self.min


REPEATS_KEYS = ("min", "max", "until_halfwidth")


def _repeats(value: Any, path: str) -> Repeats:
    """`repeats`: an integer (fixed seeds per cell) or `{min, max, until_halfwidth}` (adaptive)."""
    adaptive = "{min: 3, max: 10, until_halfwidth: 0.004}"
    if not isinstance(value, dict):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return Repeats(value, value)
        raise SpecError(path, "must be an integer >= 1 or a mapping", got=value, allowed=f"e.g. 5, or {adaptive}")
    for key in value:
        if key not in REPEATS_KEYS:
            raise f.unknown_key_error(key, REPEATS_KEYS, path)
    missing = [k for k in REPEATS_KEYS if k not in value]
    if missing:
        raise SpecError(f"{path}.{missing[0]}", "missing",
                        allowed=f"adaptive repeats need min, max and until_halfwidth, e.g. {adaptive}")
    low = f.integer(1)(value["min"], f"{path}.min")
    high = f.integer(1)(value["max"], f"{path}.max")
    if low > high:
        raise SpecError(f"{path}.min", f"must be <= {path}.max ({high})", got=low, allowed="raise max or lower min")
    return Repeats(low, high, f.number(0, None, low_open=True)(value["until_halfwidth"], f"{path}.until_halfwidth"))


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
    "repeats": _repeats,
    "base_seed": f.integer(0),
    "resources": _resources,
    "max_failures": f.integer(0),
    "max_concurrent": f.optional(f.integer(1)),
    "scenarios": lambda v, p: v,  # checked item by item below
    "profiles": f.mapping,
}
SCENARIO_KEYS = ("name", "baseline", "layers", "components", "ranks", "alpha", "dropout", "train", "repeats")
PROFILE_KEYS = tuple(k for k in STUDY_SCHEMA if k not in ("name", "profiles", "scenarios")) + ("scenarios",)
SECTIONS = ("data", "train", "lora")
REPEATS_SCHEMA: dict[str, f.Check] = {"repeats": _repeats}


@dataclass(frozen=True)
class Scenario:
    """One placement (or baseline) of a study with its fully merged training settings."""

    name: str
    baseline: str | None
    layers: tuple[int, ...]
    components: tuple[str, ...]
    ranks: tuple  # ints or per-component tuples; () for baselines
    alpha: float | None
    lora_dropout: float
    train: TrainConfig  # settings shared by the scenario's trials (an axis setting holds its first value)
    repeats: Repeats
    axes: tuple[tuple[str, tuple], ...] = ()  # training-setting axes (setting, values), in TRAIN_SCHEMA order

    def train_points(self) -> list[tuple[dict[str, Any], TrainConfig]]:
        """(axis values, training settings) for every point of the scenario's training-setting grid."""
        keys = [k for k, _ in self.axes]
        combos = itertools.product(*(values for _, values in self.axes))
        return [(dict(zip(keys, c)), replace(self.train, **dict(zip(keys, c)))) for c in combos]


@dataclass(frozen=True)
class Study:
    """A validated experiment spec (after the profile is applied)."""

    name: str
    description: str
    profile: str | None
    model: str
    model_init: str
    data: DataConfig
    base_seed: int
    resources: dict
    max_failures: int
    max_concurrent: int | None
    scenarios: tuple[Scenario, ...]
    num_layers: int
    model_type: str

    @property
    def metric(self) -> str:
        """The final result that ranks trials and that adaptive repeats measure: the task's primary metric."""
        return f"val_{self.data.metric}" if self.data.metric else "val_accuracy"


@dataclass(frozen=True)
class TrialConfig:
    """One grid point: everything a trial needs, flat and JSON-able (it becomes Ray Tune's config)."""

    study: str
    trial_name: str
    scenario: str
    baseline: str | None
    layers: list[int]
    components: list[str]
    r: int | None
    rank_pattern: dict[str, int]
    alpha: float | None
    lora_dropout: float
    repeat: int
    seed: int
    model: str
    model_init: str
    dataset: str
    text_columns: list[str]
    label_column: str
    train_split: str
    eval_split: str
    task: str  # classification | regression
    label_names: list[str] | None  # in id order; None until the data is read (non-preset datasets)
    primary_metric: str  # the epoch metric Ray Tune optimizes and the report compares, e.g. val_mcc
    reader: dict[str, Any] | None  # CSV/TSV reader options the spec set
    train_limit: int | None
    max_length: int
    num_labels: int | None  # None until the data is read (non-preset datasets)
    selection_fraction: float | None
    selection_rows: int | None
    selection_seed: int | None  # the study's base_seed: every trial holds out the same rows
    epochs: int
    learning_rate: float
    batch_size: int
    eval_batch_size: int
    weight_decay: float
    adam_betas: list[float]
    adam_epsilon: float
    warmup_ratio: float
    lr_schedule: str
    grad_clip: float | None
    hidden_dropout: float
    attention_dropout: float
    classifier_dropout: float | None
    gradient_checkpointing: bool
    precision: str

    def placement(self) -> Placement:
        return Placement(
            layers=tuple(self.layers), components=tuple(self.components), r=self.r, alpha=self.alpha,
            dropout=self.lora_dropout, rank_pattern=tuple(self.rank_pattern.items()), baseline=self.baseline,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def data_config(self) -> DataConfig:
        """The data section this trial was made from (what `tune_jobs.data` reads)."""
        held = self.selection_fraction is not None or self.selection_rows is not None
        return DataConfig(
            dataset=self.dataset, text=tuple(self.text_columns), label=self.label_column,
            splits=Splits(self.train_split, self.eval_split), task=self.task, metric=self.primary_metric.removeprefix("val_"),
            labels=tuple(self.label_names) if self.label_names else None, num_labels=self.num_labels,
            reader=Reader(**{k: tuple(v) if isinstance(v, list) else v for k, v in self.reader.items()})
            if self.reader else None, train_limit=self.train_limit, max_length=self.max_length,
            selection=Selection(self.selection_fraction, self.selection_rows) if held else None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialConfig:
        """Typed view of a config dict (Ray may hand it back with extra keys; those are ignored)."""
        names = {fl.name for fl in fields(cls)}
        missing = names - set(data)
        if missing:
            raise SpecError("trial config", "missing keys", got=sorted(missing))
        return cls(**{k: data[k] for k in names})


# ---------------------------------------------------------------- loading


def read_yaml(path: str | Path, what: str = "spec") -> dict:
    """Read a YAML mapping; SpecError for a missing file, malformed YAML or a non-mapping document."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(what, "file not found", got=str(path), allowed="pass the path of a YAML experiment spec")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(what, f"malformed YAML at {where}: {problem}") from None
    if not isinstance(data, dict):
        raise SpecError(what, "top level must be a mapping of keys", got=type(data).__name__, allowed=f"see {path}")
    return data


def builtin_profiles() -> dict[str, dict]:
    return read_yaml(PROFILES_FILE, "profiles")


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_study(path: str | Path, profile: str | None = None, data: dict | None = None) -> Study:
    """Read, apply `profile` (and `data`, e.g. the CLI's --data, over both), validate completely and return the
    Study; raises SpecErrors with every problem."""
    return parse_study(read_yaml(path), profile, data)


def _pick(body: Any, keys) -> dict:
    return {k: body[k] for k in keys if k in body} if isinstance(body, dict) else {}


def _omit(body: Any, keys) -> dict:
    return {k: v for k, v in body.items() if k not in keys} if isinstance(body, dict) else {}


def _any(value: Any, path: str) -> Any:
    return value


def _chosen_profile(raw: dict, name: str | None, errors: list[SpecError]) -> tuple[dict, str]:
    """The profile's mapping (built-in, with the spec's `profiles.<name>` merged over it) and its YAML path."""
    if name is None:
        return {}, ""
    profiles = builtin_profiles()
    own = raw.get("profiles")
    for pname, body in (own.items() if isinstance(own, dict) else ()):
        profiles[pname] = _deep_merge(profiles.get(pname, {}), body if isinstance(body, dict) else {})
    if name not in profiles:
        raise SpecErrors([SpecError("--profile", "unknown profile", got=name,
                                    allowed="known profiles: " + ", ".join(sorted(profiles)))])
    path = f"profiles.{name}"
    return f.check_section(profiles[name], {k: _any for k in PROFILE_KEYS}, path, errors), path


def _profile_scenarios(prof: dict, ppath: str, names: set, errors: list[SpecError]) -> dict[str, dict]:
    """A profile's per-scenario overrides (`scenarios: {NAME: {train: ...}}`), each naming a spec scenario."""
    over = f.check_section(prof["scenarios"], {n: _any for n in sorted(names)}, f"{ppath}.scenarios", errors) \
        if "scenarios" in prof else {}
    return {n: f.check_section(body, {"train": _any}, f"{ppath}.scenarios.{n}", errors) for n, body in over.items()}


def parse_study(raw: dict, profile: str | None = None, data_override: dict | None = None) -> Study:
    """Validate a raw spec mapping (see `load_study` and the module docstring for the layers merged)."""
    errors: list[SpecError] = []
    prof, pp = _chosen_profile(raw, profile, errors)
    top = f.layered(STUDY_SCHEMA, [("", _omit(raw, SECTIONS)), (pp, _omit(prof, SECTIONS + ("scenarios",)))], errors)
    data = DataConfig(**f.layered(DATA_SCHEMA, [("data", raw.get("data")), (f"{pp}.data", prof.get("data")),
                                                ("--data", data_override)], errors))
    try:
        data = resolve_data(data)
    except SpecError as err:
        errors.append(err)
    if "scenarios" not in raw:
        errors.append(SpecError("scenarios", "missing", allowed="a list of scenarios, each with a name"))

    model = top.get("model", "")
    n_layers, model_type = 0, ""
    if not model:
        errors.append(SpecError("model", "missing", allowed="e.g. 'minilm-l6' or 'roberta-base'"))
    else:
        try:
            cfg = load_model_config(model, data.num_labels or 2)
            n_layers, model_type = num_layers(cfg), cfg.model_type
        except SpecError as err:
            errors.append(err)

    raw_scen = raw.get("scenarios")
    if raw_scen is not None and (not isinstance(raw_scen, list) or not raw_scen):
        errors.append(SpecError("scenarios", "must be a non-empty list", got=raw_scen))
        raw_scen = []
    raw_scen = raw_scen or []
    names = {s["name"] for s in raw_scen if isinstance(s, dict) and isinstance(s.get("name"), str)}
    prof_scen = _profile_scenarios(prof, pp, names, errors)
    scenarios: list[Scenario] = []
    seen: set[str] = set()
    for i, item in enumerate(raw_scen):
        body = f.check_section(item, {k: _any for k in SCENARIO_KEYS}, f"scenarios[{i}]", errors)
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            errors.append(SpecError(f"scenarios[{i}].name", "missing or empty", got=name,
                                    allowed="a short unique name"))
            continue
        path = f"scenarios[{i}] ({name})"
        if name in seen:
            errors.append(SpecError(f"{path}.name", "duplicate scenario name", got=name))
        seen.add(name)
        train = f.layered(TRAIN_AXES, [("train", raw.get("train")), (f"{path}.train", body.get("train")),
                                       (f"{pp}.train", prof.get("train")),
                                       (f"{pp}.scenarios.{name}.train", prof_scen.get(name, {}).get("train"))], errors)
        lora = f.layered(LORA_SCHEMA, [("lora", raw.get("lora")), (path, _pick(body, LORA_SCHEMA)),
                                       (f"{pp}.lora", prof.get("lora"))], errors)
        repeats = f.layered(REPEATS_SCHEMA, [("", _pick(raw, REPEATS_SCHEMA)), (path, _pick(body, REPEATS_SCHEMA)),
                                             (pp, _pick(prof, REPEATS_SCHEMA))], errors).get("repeats", Repeats(1, 1))
        scenarios.extend(_scenario(body, path, name, train, lora, repeats, n_layers, errors))
    if errors:
        raise SpecErrors(_unique(errors))
    return Study(
        name=top.get("name", "study"), description=top.get("description", ""), profile=profile,
        model=model, model_init=top.get("model_init", "pretrained"), data=data,
        base_seed=top.get("base_seed", 42), resources=top.get("resources", {"cpu": 1}),
        max_failures=top.get("max_failures", 2), max_concurrent=top.get("max_concurrent"),
        scenarios=tuple(scenarios), num_layers=n_layers, model_type=model_type,
    )


def _unique(errors: list[SpecError]) -> list[SpecError]:
    """A spec-level value is checked once per scenario it reaches: report each problem once."""
    return list({str(e): e for e in errors}.values())


def _scenario(body: dict, path: str, name: str, train: dict, lora: dict, repeats: Repeats, n_layers: int,
              errors: list[SpecError]) -> list[Scenario]:
    """Validate one scenario; `layers: each` yields one scenario per layer, named `<name>_L<i>`."""
    axes = tuple((k, train[k]) for k in TRAIN_SCHEMA if isinstance(train.get(k), f.Axis))
    tc = TrainConfig(**{k: v[0] if isinstance(v, f.Axis) else v for k, v in train.items()})
    try:
        baseline = body.get("baseline")
        if baseline is not None:
            if baseline not in BASELINES:
                raise SpecError(f"{path}.baseline", "unknown baseline", got=baseline,
                                allowed="classifier_only or full (or leave it out for LoRA)")
            extra = [k for k in ("layers", "components", "ranks", "alpha", "dropout") if k in body]
            if extra:
                raise SpecError(f"{path}.{extra[0]}", "a baseline has no LoRA placement", got=body[extra[0]],
                                allowed=f"remove it, or drop `baseline: {baseline}`")
            return [Scenario(name, baseline, (), (), (), None, 0.0, tc, repeats, axes)]
        if "layers" not in body:
            raise SpecError(f"{path}.layers", "missing", allowed="e.g. all, upper, lower, even, 3 or [0, 5]")
        if "components" not in body:
            raise SpecError(f"{path}.components", "missing", allowed="e.g. all, v+up, [q, v]")
        components = resolve_components(body["components"], f"{path}.components")
        ranks = lora.get("ranks", (8,))
        for i, r in enumerate(ranks):
            if isinstance(r, tuple) and set(c for c, _ in r) - set(components):
                bad = sorted(set(c for c, _ in r) - set(components))
                raise SpecError(f"{path}.ranks[{i}]", "rank given for a component the scenario does not adapt",
                                got=bad, allowed="components: " + "+".join(components))
        common = dict(components=components, ranks=ranks, alpha=lora.get("alpha"),
                      lora_dropout=lora.get("dropout", 0.0), train=tc, repeats=repeats, baseline=None, axes=axes)
        if n_layers == 0:  # model unknown: its error is already reported
            return []
        if body["layers"] == "each":
            return [Scenario(name=f"{name}_L{i}", layers=(i,), **common) for i in range(n_layers)]
        layers = resolve_layers(body["layers"], n_layers, f"{path}.layers")
        return [Scenario(name=name, layers=layers, **common)]
    except SpecError as err:
        errors.append(err)
        return []


__all__ = ["DataConfig", "Reader", "Repeats", "Scenario", "Selection", "Splits", "Study", "TrainConfig", "TrialConfig",
           "load_study", "parse_study", "read_yaml", "resolve_data"]
