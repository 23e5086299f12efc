"""The trial config, declared once: every field a grid point has, with its Arrow type, its role and how it is
labelled. The Parquet schema, trial names, TensorBoard's HParams, the analysis' configuration key and group labels
are all derived from `FIELDS`; Ray's config dict, `tune_jobs.study.spec.TrialConfig`, is a plain dataclass that
lists the same fields (tests/test_trial_config.py checks them field by field: names, order, types, defaults).
What a trial records about the node it ran on (versions, device, commit) is declared here too, as `PROVENANCE`: a
record's fields, not config.

A new field is one `Field` here plus its line in `TrialConfig`; a new training setting also its check in
`tune_jobs.study.spec.TRAIN_SCHEMA` and its use in the trial (`tune_jobs.study.spec.TrainConfig` is derived from the
TRAINING fields).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

IDENTITY, PLACEMENT, MODEL, DATA, TRAINING = "identity", "placement", "model", "data", "training"
PROVENANCE_ROLE = "provenance"  # where and with what a trial ran: recorded by the trial, never a config value
NO_DEFAULT = object()  # fields that always come from the spec and the grid, and that every record holds


@dataclass(frozen=True)
class Field:
    """One config field of a trial."""

    name: str
    arrow: pa.DataType
    role: str  # identity (labels and bookkeeping: never part of a group) | placement | model | data | training
    # | provenance (PROVENANCE: what the trial reports about its node, never part of the config)
    nullable: bool = False  # None is a valid value (unset, or not read yet)
    short: str | None = None  # its name in trial names and group labels (lr, ep, bs, ...); None: the full name
    label_order: int | None = None  # the order in which group labels add it to tell same-named groups apart
    hparam: bool = False  # a column of TensorBoard's HParams table
    mapping: bool = False  # a mapping in the config dict, stored as sorted JSON text in Parquet
    # training settings: the value when no spec layer sets it; other fields: the value a record made before the field
    # existed holds (an old experiment's params.json, resumed or analysed)
    default: Any = NO_DEFAULT

    @property
    def in_configuration(self) -> bool:
        """Part of what a trial computes (so of a group's identity), unlike labels, repeat and seed."""
        return self.role not in (IDENTITY, PROVENANCE_ROLE)

    @property
    def python_type(self) -> type:
        """The Python type of the config value (lists stay lists; JSON-able, as Ray Tune stores it)."""
        base = dict if self.mapping else _PYTHON.get(self.arrow, list if pa.types.is_list(self.arrow) else object)
        return base | None if self.nullable else base


_PYTHON = {pa.string(): str, pa.int32(): int, pa.int64(): int, pa.float64(): float, pa.bool_(): bool}
S, I32, I64, F, B = pa.string(), pa.int32(), pa.int64(), pa.float64(), pa.bool_()

FIELDS: tuple[Field, ...] = (
    Field("study", S, IDENTITY),
    Field("trial_name", S, IDENTITY, hparam=True),
    Field("scenario", S, IDENTITY, hparam=True),
    Field("baseline", S, PLACEMENT, nullable=True, hparam=True),  # classifier_only | full | None (LoRA)
    Field("layers", pa.list_(pa.int32()), PLACEMENT, hparam=True),
    Field("components", pa.list_(pa.string()), PLACEMENT, hparam=True),
    Field("r", I32, PLACEMENT, nullable=True, label_order=0, hparam=True),
    # `lora: {budgets: [N]}`: the adapters' trainable parameters (head excluded) the ranks were chosen for; r and
    # rank_pattern then follow from it and the placement (lora_ext.budget). None: ranks given directly
    Field("budget", I64, PLACEMENT, nullable=True, short="b", hparam=True, default=None),
    Field("method", S, PLACEMENT, nullable=True, label_order=1, hparam=True,  # lora | dora+rslora | ...; None: baseline
          default="lora"),
    Field("loraplus_lr_ratio", F, PLACEMENT, nullable=True, short="loraplus", hparam=True, default=None),  # LoRA+ only
    # {component: rank} exceptions to r; a budget's {component@layer: r + 1} (`up@3`)
    Field("rank_pattern", S, PLACEMENT, label_order=2, mapping=True),
    Field("alpha", F, PLACEMENT, nullable=True, label_order=3, hparam=True),
    Field("lora_dropout", F, PLACEMENT, short="dropout", label_order=4, hparam=True),
    Field("repeat", I32, IDENTITY, hparam=True),
    Field("seed", I64, IDENTITY, hparam=True),
    # looks of a sequential design (`repeats: {until: decided}`): the report spends alpha over them; 1 otherwise
    Field("looks", I32, IDENTITY, default=1),
    # under a spec's `select:`: tune (a candidate value, judged on the selection split) or confirm (compared on dev);
    # None: a study without stages. `selected`: the settings its placement chooses (e.g. [learning_rate])
    Field("stage", S, IDENTITY, nullable=True, hparam=True, default=None),
    Field("selected", pa.list_(pa.string()), IDENTITY, nullable=True, default=None),
    Field("model", S, MODEL, label_order=13, hparam=True),
    Field("model_init", S, MODEL),
    Field("dataset", S, DATA, label_order=14, hparam=True),
    Field("text_columns", pa.list_(pa.string()), DATA),
    Field("label_column", S, DATA),
    Field("train_split", S, DATA),
    Field("eval_split", S, DATA),
    Field("task", S, DATA),  # classification | regression
    Field("label_names", pa.list_(pa.string()), DATA, nullable=True),  # id order; None until the data is read
    Field("primary_metric", S, IDENTITY),  # e.g. val_mcc: what the study optimizes (a label, not a setting)
    # what Ray reserved for the trial ({cpu: 4, gpu: 1}): the unit of its bill, not of its result
    Field("resources", S, IDENTITY, nullable=True, mapping=True, default=None),
    Field("reader", S, DATA, nullable=True, mapping=True),  # the CSV/TSV reader options the spec set
    Field("train_limit", I64, DATA, nullable=True, label_order=15, hparam=True),
    Field("max_length", I32, DATA, label_order=16),
    Field("num_labels", I32, DATA, nullable=True),  # None until the data is read (non-preset datasets)
    Field("selection_fraction", F, DATA, nullable=True, hparam=True),
    Field("selection_rows", I64, DATA, nullable=True, hparam=True),
    Field("selection_seed", I64, DATA, nullable=True),  # the study's base_seed: every trial holds out the same rows
    # training settings (the article's names where it has them); any of them may be a grid axis
    Field("epochs", I32, TRAINING, short="ep", label_order=6, hparam=True, default=3),
    Field("learning_rate", F, TRAINING, short="lr", label_order=5, hparam=True, default=1.4e-3),
    Field("batch_size", I32, TRAINING, short="bs", label_order=7, hparam=True, default=32),
    Field("eval_batch_size", I32, TRAINING, short="ebs", hparam=True, default=256),
    Field("weight_decay", F, TRAINING, short="wd", label_order=8, hparam=True, default=0.01),
    Field("adam_betas", pa.list_(pa.float64()), TRAINING, short="betas", hparam=True, default=(0.9, 0.98)),
    Field("adam_epsilon", F, TRAINING, short="eps", hparam=True, default=1e-6),
    Field("warmup_ratio", F, TRAINING, short="warmup", label_order=9, hparam=True, default=0.1),
    Field("lr_schedule", S, TRAINING, short="sched", label_order=10, hparam=True,  # cosine | linear | constant
          default="cosine"),
    Field("grad_clip", F, TRAINING, nullable=True, short="clip", hparam=True, default=None),  # max global grad norm
    Field("hidden_dropout", F, TRAINING, short="hdrop", hparam=True, default=0.1),
    Field("attention_dropout", F, TRAINING, short="adrop", hparam=True, default=0.1),
    Field("classifier_dropout", F, TRAINING, nullable=True, short="cdrop", hparam=True,  # None: the model's own
          default=None),
    Field("gradient_checkpointing", B, TRAINING, short="gc", label_order=12, hparam=True, default=False),
    Field("precision", S, TRAINING, short="prec", label_order=11, hparam=True,  # auto: bf16 where supported
          default="auto"),
)
BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
TRAINING_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS if f.role == TRAINING)
CONFIGURATION: tuple[str, ...] = tuple(f.name for f in FIELDS if f.in_configuration)
LABEL_ORDER: tuple[str, ...] = tuple(sorted((f.name for f in FIELDS if f.label_order is not None),
                                            key=lambda n: BY_NAME[n].label_order))
HPARAMS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.hparam)
ARROW: list[tuple[str, pa.DataType]] = [(f.name, f.arrow) for f in FIELDS]
MAPPINGS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.mapping)


# Provenance: the training node's versions, device and source, reported by the trial in the first report of each run
# (`tune_jobs.train.provenance`; a resumed run reports its own node's) and a column each of trials.parquet (the run that
# reported last). Not config: never in TrialConfig, a group or a trial name. None: not known there (no GPU: no driver;
# not a git checkout: no commit), or a record made before provenance was recorded.
PROVENANCE: tuple[Field, ...] = tuple(Field(name, arrow, PROVENANCE_ROLE, nullable=True, default=None)
                                      for name, arrow in (
    ("lora_sweep_version", S),  # the installed distribution's version (None: a checkout that is not installed)
    ("git_commit", S),  # HEAD of the lora-sweep checkout the trial imported (None: not a checkout, e.g. Ray's
    ("git_dirty", B),  # working_dir upload); git_dirty: tracked files changed since that commit
    ("python_version", S), ("torch_version", S), ("transformers_version", S), ("peft_version", S), ("ray_version", S),
    ("cuda_version", S),  # the CUDA torch was built with (torch.version.cuda; None: a CPU build)
    ("driver_version", S),  # the NVIDIA driver (NVML) of a trial on a GPU; None on CPU
    ("device_name", S),  # e.g. "NVIDIA H100 80GB HBM3", or "cpu (x86_64)"
    ))
PROVENANCE_NAMES: tuple[str, ...] = tuple(f.name for f in PROVENANCE)
PROVENANCE_ARROW: list[tuple[str, pa.DataType]] = [(f.name, f.arrow) for f in PROVENANCE]


def provenance_of(reports: list[dict]) -> dict:
    """The provenance of the last run among a trial's reports (the last report that carries it: a resumed trial's
    node that went on, all fields from that one report), each field None where no report carries it."""
    origin = next((r for r in reversed(reports) if any(n in r for n in PROVENANCE_NAMES)), {})
    return {n: origin.get(n) for n in PROVENANCE_NAMES}


TUNE, CONFIRM = "tune", "confirm"  # the values of `stage`: a study with `select:` (tune_jobs.study.select_section)


def filled(config: dict[str, Any]) -> dict[str, Any]:
    """A config dict with the fields it predates set to what records before them meant (`method`: plain LoRA, or
    none for a baseline); keys it has are kept as they are."""
    out = dict(config)
    for fl in FIELDS:
        if fl.name not in out and fl.default is not NO_DEFAULT and fl.role != TRAINING:
            out[fl.name] = None if fl.role == PLACEMENT and out.get("baseline") is not None else fl.default
    return out


def count_text(n: int) -> str:
    """83k, 1.33M: a parameter count short enough for names and labels (the exact figure stays in the record)."""
    for scale, unit in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
        if float(f"{n:.3g}") >= scale:  # 999,600 rounds to 1e6: 1M, not 1e+03k
            return f"{float(f'{n / scale:.3g}'):g}{unit}"
    return str(n)


def short(name: str) -> str:
    """The field's name in trial names and group labels: lr for learning_rate, gc for gradient_checkpointing."""
    return BY_NAME[name].short or name if name in BY_NAME else name
