"""The data section of a spec: where the data comes from, its columns, splits, reader and selection split; checked
field by field (`DATA_SCHEMA`) and resolved against the GLUE presets once, when a DataConfig is made."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from record.errors import InputError, one_of
from record.metrics import ALL_TASK_METRICS, CLASSIFICATION, DEFAULT_METRIC, DEV, REGRESSION, TASK_METRICS

from . import checks as f
from .tasks import preset


@dataclass(frozen=True)
class Selection:
    """The held-out selection split: a fraction of the train split or a number of its rows (exactly one)."""

    fraction: float | None = None
    rows: int | None = None


def _selection(value: Any, path: str) -> Selection:
    clean = f.section({"fraction": f.number(0, 1, low_open=True), "rows": f.integer(1)})(value, path)
    if len(clean) != 1:
        raise InputError(path, "give fraction or rows, one of them", got=value,
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

    Fields left None come from the GLUE preset (`glue/rte`) or the defaults (`sentence`, `label`, classification),
    filled at construction; `num_labels`/`labels` of a non-preset dataset come from its train split (`check_data`).
    Resolved fields carry over through `dataclasses.replace`: for another dataset or task, make a new DataConfig.
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

    def __post_init__(self) -> None:
        """Resolve once, at construction: fill what the spec left out from the GLUE preset or the defaults, and
        check that the fields agree (InputError). Every DataConfig in the program is a resolved one."""
        task = preset(self.dataset)
        kind = self.task or (task.kind if task else CLASSIFICATION)
        same_kind = task is not None and task.kind == kind
        splits = self.splits or Splits()
        labels = self.labels or (task.label_names if same_kind else None)
        metric = self.metric or (task.metric if same_kind else DEFAULT_METRIC[kind])
        if metric not in TASK_METRICS[kind]:
            raise InputError("data.metric", f"not a {kind} metric", got=metric,
                             allowed=one_of(metric, TASK_METRICS[kind]))
        num_labels = self.num_labels
        if kind == REGRESSION:
            if self.labels:
                raise InputError("data.labels", "a regression task has no label names", got=list(self.labels),
                                allowed="remove it, or set task: classification")
            if num_labels not in (None, 1):
                raise InputError("data.num_labels", "a regression task has one output", got=num_labels,
                                allowed="remove it (or 1), or set task: classification")
            num_labels = 1
        elif num_labels == 1:
            raise InputError("data.num_labels", "a classification task needs at least 2 labels", got=1,
                            allowed="the number of classes, or task: regression for one numeric output")
        elif labels and num_labels is not None and num_labels != len(labels):
            raise InputError("data.num_labels", f"differs from the {len(labels)} names in data.labels", got=num_labels,
                            allowed="remove one of them")
        elif labels:
            num_labels = len(labels)
        resolved = dict(text=self.text or (task.text if task else ("sentence",)), label=self.label or "label",
                        splits=Splits(splits.train or "train",
                                      splits.eval or (task.eval_split if task else "validation")),
                        task=kind, metric=metric, labels=labels, num_labels=num_labels)
        for name, value in resolved.items():  # frozen: set once, here, at construction
            object.__setattr__(self, name, value)

    def trial_fields(self, base_seed: int) -> dict[str, Any]:
        """The TrialConfig fields of this (resolved) data section."""
        sel = self.selection
        return dict(dataset=self.dataset, text_columns=list(self.text), label_column=self.label,
                    train_split=self.splits.train, eval_split=self.splits.eval, task=self.task,
                    label_names=list(self.labels) if self.labels else None, primary_metric=f"{DEV}{self.metric}",
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
        raise InputError(path, "must be one column or a pair of two", got=value, allowed="e.g. sentence or "
                        "[sentence1, sentence2]")
    return tuple(f.text(v, f"{path}[{i}]" if isinstance(value, list) else path) for i, v in enumerate(items))


def _label_names(value: Any, path: str) -> tuple[str, ...]:
    ok = isinstance(value, list) and len(value) >= 2 and all(isinstance(v, (str, int)) and not isinstance(v, bool)
                                                             for v in value)
    if not ok or len({str(v) for v in value}) != len(value):
        raise InputError(path, "must be a list of two or more distinct label names, in id order", got=value,
                        allowed="e.g. [negative, positive]")
    return tuple(str(v) for v in value)


def _splits(value: Any, path: str) -> Splits:
    return Splits(**f.section({"train": f.text, "eval": f.text})(value, path))


def _delimiter(value: Any, path: str) -> str:
    if not isinstance(value, str) or len(value) != 1:
        raise InputError(path, "must be one character", got=value, allowed="e.g. ',' or a tab (\"\\t\")")
    return value


def _column_names(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise InputError(path, "must be a list of column names", got=value,
                         allowed="e.g. [source, label, mark, sentence]")
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
    "metric": f.choice(*ALL_TASK_METRICS),
    "labels": _label_names,
    "num_labels": f.optional(f.integer(1)),
    "reader": f.optional(_reader),
    "train_limit": f.optional(f.integer(1)),
    "max_length": f.integer(8, 4096),
    "selection": f.optional(_selection),
}
