"""GLUE task presets: one table of what each task is (columns, labels, metric) and where its files lie.

`dataset: glue/<task>` loads from `$GLUE_DIR/<folder>` when GLUE_DIR is set (the convention of the BERT and
transformers run_glue scripts; the GLUE folder name such as `RTE` or its lowercase `rte`), else from the hub
(`nyu-mll/glue`). A local folder may hold the GLUE release TSVs (read with the layout below and renamed to the hub's
columns) or the Hugging Face Parquet export (`train.parquet`, `validation.parquet`, already in the hub's columns).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from record.errors import InputError, one_of
from record.metrics import CLASSIFICATION, REGRESSION

GLUE_PREFIX = "glue/"
HUB_GLUE = "nyu-mll/glue"


@dataclass(frozen=True)
class GlueTsv:
    """How the GLUE release TSVs of a task look: header or not, column names, and the rename to the hub's columns."""

    header: bool = True
    column_names: tuple[str, ...] | None = None  # for header-less files
    rename: tuple[tuple[str, str], ...] = ()  # (GLUE TSV column, hub column)


@dataclass(frozen=True)
class Task:
    """A GLUE task: the hub's columns and splits, label names in id order (None: regression), primary metric."""

    name: str  # the hub config, e.g. rte
    folder: str  # the GLUE release folder, e.g. RTE
    text: tuple[str, ...]
    label_names: tuple[str, ...] | None
    metric: str
    tsv: GlueTsv = GlueTsv()
    eval_split: str = "validation"

    @property
    def kind(self) -> str:
        return REGRESSION if self.label_names is None else CLASSIFICATION

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)


_NLI = ("entailment", "not_entailment")
_MNLI = dict(name="mnli", folder="MNLI", text=("premise", "hypothesis"), label_names=("entailment", "neutral",
             "contradiction"), metric="accuracy",
             tsv=GlueTsv(rename=(("sentence1", "premise"), ("sentence2", "hypothesis"), ("gold_label", "label"))))
TASKS: dict[str, Task] = {
    "glue/sst2": Task("sst2", "SST-2", ("sentence",), ("negative", "positive"), "accuracy"),
    "glue/cola": Task("cola", "CoLA", ("sentence",), ("unacceptable", "acceptable"), "mcc",
                      GlueTsv(header=False, column_names=("source", "label", "mark", "sentence"))),
    "glue/mrpc": Task("mrpc", "MRPC", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), "f1",
                      GlueTsv(rename=(("Quality", "label"), ("#1 String", "sentence1"), ("#2 String", "sentence2")))),
    "glue/rte": Task("rte", "RTE", ("sentence1", "sentence2"), _NLI, "accuracy"),
    "glue/qnli": Task("qnli", "QNLI", ("question", "sentence"), _NLI, "accuracy"),
    "glue/qqp": Task("qqp", "QQP", ("question1", "question2"), ("not_duplicate", "duplicate"), "f1",
                     GlueTsv(rename=(("is_duplicate", "label"),))),
    "glue/stsb": Task("stsb", "STS-B", ("sentence1", "sentence2"), None, "pearson",
                      GlueTsv(rename=(("score", "label"),))),
    "glue/mnli": Task(**_MNLI, eval_split="validation_matched"),
    "glue/mnli-mm": Task(**_MNLI, eval_split="validation_mismatched"),
}


def preset(dataset: str) -> Task | None:
    """The GLUE task a `dataset` names (`glue/rte`), None for anything else; InputError for an unknown glue/ task."""
    if not dataset.startswith(GLUE_PREFIX):
        return None
    if dataset not in TASKS:
        raise InputError("data.dataset", "unknown GLUE task", got=dataset,
                         allowed=one_of(dataset, TASKS))
    return TASKS[dataset]


def glue_folder_names(task: Task) -> tuple[str, str]:
    """The names a task's folder has under GLUE_DIR: GLUE's own (`SST-2`) or the lowercase one (`sst2`)."""
    return task.folder, task.folder.lower().replace("-", "")


def glue_folder(task: Task, glue_dir: str) -> Path:
    """The task's folder under GLUE_DIR (`RTE`, or the lowercase `rte`), as an absolute path."""
    root = Path(glue_dir).expanduser()
    for name in glue_folder_names(task):
        if (root / name).is_dir():
            return (root / name).resolve()
    raise InputError("data.dataset", f"GLUE_DIR has no folder {task.folder} or {task.folder.lower().replace('-', '')} "
                    f"for glue/{task.name}", got=glue_dir,
                    allowed="point GLUE_DIR at the folder that holds it (e.g. export GLUE_DIR=../shared/data), or "
                            "unset GLUE_DIR to load from the hub")


def glue_dir() -> str | None:
    """GLUE_DIR from the environment (None or empty: load GLUE tasks from the hub)."""
    return os.environ.get("GLUE_DIR") or None
