"""Trial data: a task's splits checked row by row with label ids (`tune_jobs.data.readers` reads them), tokenized once
per node (cached; sentence pairs through the tokenizer's pair interface), length-grouped batches."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from record.errors import InputError
from record.metrics import REGRESSION
from tune_jobs.remote.files import cache_root
from tune_jobs.study.data_section import DataConfig
from tune_jobs.study.spec import Study

from .readers import ROLES, Source, quiet_datasets, read_file, read_hub, resolve_source

LABELS = "labels"  # the column of label ids (or regression targets) after loading


# ---------------------------------------------------------------- checking rows and labels


def _label_text(value) -> str | None:
    """A label as text (`1`, `pos`); None when the row has none."""
    if isinstance(value, float):
        return None if math.isnan(value) else str(int(value)) if value.is_integer() else repr(value)
    text = None if value is None else str(value).strip()
    return text or None


def _target(value) -> float | None:
    """A regression target as a finite number; None when it is not one."""
    try:
        number = float(value) if not isinstance(value, bool) and value is not None else math.nan
    except (TypeError, ValueError):
        number = math.nan
    return number if math.isfinite(number) else None


def _targets(ds, column: str, where: Callable[[int], str]) -> list[float]:
    """A split's regression targets; `file:line` for the first that is not a number."""
    values = ds.data.column(column).to_pylist()
    out = [_target(v) for v in values]
    bad = next((i for i, t in enumerate(out) if t is None), None)
    if bad is not None:
        raise InputError("data.label", f"{where(bad)}: regression target {values[bad]!r} in column {column!r} is not a "
                        "number", allowed="a number in every row, or task: classification for class labels")
    return out


def _sort_labels(labels: set[str]) -> list[str]:
    """Integer labels in numeric order, any others alphabetically."""
    if all(t.lstrip("-").isdigit() for t in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def label_vocabulary(train: list[str], names: tuple[str, ...] | None, num_labels: int | None,
                     where: Callable[[int], str]) -> dict[str, int]:
    """Label text -> id from the train split: by `names` (the preset's or data.labels; integer labels are their
    index), else the train split's labels sorted (integers numerically; `num_labels` fixes how many)."""
    seen = set(train)
    if names is not None:
        by_name = {n: i for i, n in enumerate(names)}
        for ids in (by_name, {str(i): i for i in range(len(names))}):
            if seen <= set(ids):
                return ids
        bad = next(i for i, t in enumerate(train) if t not in by_name)
        raise InputError("data.label", f"{where(bad)}: label {train[bad]!r} is not one of data.labels", got=train[bad],
                        allowed="labels: " + ", ".join(names) + " (or their ids 0.." + f"{len(names) - 1})")
    ints = all(t.lstrip("-").isdigit() for t in seen)
    if num_labels is not None and ints:
        bad = next((i for i, t in enumerate(train) if not 0 <= int(t) < num_labels), None)
        if bad is not None:
            raise InputError("data.dataset", f"{where(bad)}: label {train[bad]} is outside 0..{num_labels - 1}",
                            got=train[bad], allowed=f"labels 0..{num_labels - 1}, or set data.num_labels to the number "
                                                    "of classes (or leave it out: it is read from the train split)")
        return {str(i): i for i in range(num_labels)}
    ordered = _sort_labels(seen)
    if num_labels is not None and len(ordered) != num_labels:
        raise InputError("data.num_labels", f"the train split has {len(ordered)} labels ({', '.join(ordered[:6])}), "
                        f"not {num_labels}", got=num_labels, allowed="leave it out (it is read from the train split), "
                                                                     "or list every label in data.labels")
    if len(ordered) < 2:
        raise InputError("data.label", f"the train split has {len(ordered)} distinct label ({', '.join(ordered)}); "
                        "classification needs 2 or more", allowed="check data.label, or set task: regression")
    return {t: i for i, t in enumerate(ordered)}


def _label_column(ds, column: str, where: Callable[[int], str]) -> list[str]:
    """A split's labels as text (a ClassLabel id as its name); a row without one is `file:line: malformed row`."""
    import datasets

    feature = ds.features[column]
    values = ds.data.column(column).to_pylist()
    if isinstance(feature, datasets.ClassLabel):  # hub / HF Parquet export: ids with names
        values = [feature.int2str(v) if v is not None and 0 <= v < feature.num_classes else v for v in values]
    out = [_label_text(v) for v in values]
    missing = next((i for i, t in enumerate(out) if t is None), None)
    if missing is not None:
        raise InputError("data.dataset", f"{where(missing)}: malformed row, no value in column {column!r}",
                        allowed="a label in every row; check the delimiter and data.reader")
    return out


def _class_names(ds, column: str) -> tuple[str, ...] | None:
    """The label names a hub dataset (or an HF Parquet export) declares, in id order."""
    import datasets

    feature = ds.features[column]
    return tuple(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def _check_rows(ds, data: DataConfig, name: str, where: Callable[[int], str]) -> None:
    """At least one row, and text in every row of the text columns."""
    import pyarrow.compute as pc

    if len(ds) == 0:
        raise InputError("data.dataset", f"{name}: has no rows", allowed="a split with at least one row")
    for column in data.text:
        values = ds.data.column(column)
        if values.null_count:
            row = pc.index(pc.is_null(values), True).as_py()
            raise InputError("data.dataset", f"{where(row)}: malformed row, no value in column {column!r}",
                            allowed="text in every row; check the delimiter and data.reader")


@dataclass(frozen=True)
class LoadedSplits:
    """The loaded train and eval splits (text columns + `labels`) and the label names in id order."""

    train: object  # datasets.Dataset
    eval: object
    label_names: tuple[str, ...] | None  # None for regression


def load_splits(data: DataConfig) -> LoadedSplits:
    """Read both splits, check every row, and map labels to ids (classification) or numbers (regression).

    A label of the eval split that the train split lacks (and data.labels does not list) is an error.
    """
    source = resolve_source(data)
    if source.hub is not None:
        raw = read_hub(source, data)
        wheres = {r: (lambda i, n=getattr(data.splits, r): f"{data.dataset} split {n} row {i + 1}") for r in ROLES}
        names = {r: f"{data.dataset} split {getattr(data.splits, r)}" for r in ROLES}
    else:
        raw = {f.role: read_file(f, data) for f in source.files}
        wheres = {f.role: f.where for f in source.files}
        names = {f.role: f.shown for f in source.files}
    for role, ds in raw.items():
        _check_rows(ds, data, names[role], wheres[role])
    if data.task == REGRESSION:
        out, vocab = {r: _targets(ds, data.label, wheres[r]) for r, ds in raw.items()}, None
    else:
        texts = {r: _label_column(ds, data.label, wheres[r]) for r, ds in raw.items()}
        given = data.labels or _class_names(raw["train"], data.label)
        ids = label_vocabulary(texts["train"], given, data.num_labels, wheres["train"])
        vocab = given or tuple(sorted(ids, key=ids.get))
        out = {}
        for role, values in texts.items():
            bad = next((i for i, t in enumerate(values) if t not in ids), None)
            if bad is not None:
                raise InputError("data.label", f"{wheres[role](bad)}: label {values[bad]!r} is not a label of the "
                                "train split", got=values[bad],
                                allowed="labels: " + ", ".join(vocab) + "; fix the row, or "
                                "list every label in data.labels")
            out[role] = [ids[t] for t in values]
    loaded = {r: ds.remove_columns([c for c in ds.column_names if c not in data.text]).add_column(LABELS, out[r])
              for r, ds in raw.items()}
    return LoadedSplits(loaded["train"], loaded["eval"], vocab)


def check_data(data: DataConfig, load_hub: bool = False) -> DataConfig:
    """Every problem of the data found before anything starts (`plan`, `run`, `trial`); returns the data section
    with `num_labels` and `labels` read from the train split. A hub dataset loads only with `load_hub` or when its
    number of labels is not known otherwise (a GLUE preset knows it), so `plan` stays offline; `run` loads it
    before Ray starts."""
    if not load_hub and resolve_source(data).hub is not None and data.num_labels is not None:
        return data
    splits = load_splits(data)
    if data.selection is not None:  # the held-out rows must leave some to train on: say so now, not in a trial
        selection_split(len(splits.train), data.selection.fraction, data.selection.rows, 0)
    if data.task == REGRESSION:
        return data
    return replace(data, labels=splits.label_names, num_labels=len(splits.label_names))


def checked_study(study: Study, load_hub: bool = False) -> Study:
    """The study with its data checked and its labels read (see `check_data`)."""
    return replace(study, data=check_data(study.data, load_hub))


# ---------------------------------------------------------------- tokenizing (cached per node)


def _fingerprint(source: Source, data: DataConfig, tokenizer) -> str:
    """Cache key: the resolved source (folder + file sizes/mtimes, or hub id), the column mapping and the tokenizer."""
    mapping = [data.text, data.label, vars(data.splits), data.task, data.labels, data.num_labels,
               vars(data.reader) if data.reader else None]
    key = json.dumps([source.key, mapping, tokenizer.name_or_path, type(tokenizer).__name__, len(tokenizer),
                      data.max_length, 3], default=list)  # 3: splits keyed by role (train, eval)
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def tokenized_splits(data: DataConfig, tokenizer) -> tuple[object, tuple[str, ...] | None]:
    """Tokenized train/validation splits (a DatasetDict) and the label names, computed once per (data, tokenizer,
    max_length) on this node. A pair is tokenized through the tokenizer's pair interface (truncation
    longest_first); `length` is the pair's length. Concurrent trials on a node wait on a file lock and then load the
    cached copy instead of re-tokenizing.
    """
    import datasets
    from filelock import FileLock

    target = cache_root() / "tokenized" / _fingerprint(resolve_source(data), data, tokenizer)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "dataset_dict.json").is_file():
            names = json.loads((target / "labels.json").read_text())
            return datasets.load_from_disk(str(target)), tuple(names) if names is not None else None
        splits = load_splits(data)
        raw = datasets.DatasetDict({"train": splits.train, "eval": splits.eval})  # the roles of data.splits

        def encode(batch):
            enc = tokenizer(*(batch[c] for c in data.text), truncation="longest_first", max_length=data.max_length)
            enc[LABELS] = batch[LABELS]
            enc["length"] = [len(ids) for ids in enc["input_ids"]]
            return enc

        with quiet_datasets():
            tok = raw.map(encode, batched=True, remove_columns=list(data.text), desc="tokenize")
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        tok.save_to_disk(str(tmp))
        (tmp / "labels.json").write_text(json.dumps(splits.label_names))
        os.replace(tmp, target)  # atomic: a reader never sees a half-written cache
        return datasets.load_from_disk(str(target)), splits.label_names


def subset_indices(n_rows: int, limit: int | None, seed: int) -> np.ndarray:
    """A seeded random subset of `limit` rows (all rows, in order, when limit is None or >= n_rows)."""
    if limit is None or limit >= n_rows:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).permutation(n_rows)[:limit])


def selection_split(n_rows: int, fraction: float | None, rows: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out selection rows, train rows left), both sorted; the same for every trial of a study (its base seed)."""
    held = rows if rows is not None else max(1, round(fraction * n_rows))
    if held >= n_rows:
        raise InputError("data.selection", f"holds out {held:,} of the train split's {n_rows:,} rows, leaving none to "
                        "train on", allowed="a smaller fraction or fewer rows")
    order = np.random.default_rng([seed, 1]).permutation(n_rows)  # a stream apart from the trial's subset draw
    return np.sort(order[:held]), np.sort(order[held:])


def length_grouped_batches(lengths: np.ndarray, batch_size: int, seed: int,
                           chunk_batches: int = 64) -> list[np.ndarray]:
    """Batches of similar-length rows: shuffle, sort by length inside chunks of `chunk_batches` batches, shuffle
    the batches. Random enough for SGD, and dynamic padding then wastes little (see `padding_efficiency`)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    chunk = batch_size * chunk_batches
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(-lengths[part], kind="stable")]
        batches.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def padding_efficiency(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """Real tokens / tokens after padding each batch to its longest row."""
    real = sum(int(lengths[b].sum()) for b in batches)
    padded = sum(int(lengths[b].max()) * len(b) for b in batches)
    return real / padded if padded else 1.0


def _padded_rows(column, lengths: np.ndarray, width: int, pad: int, left: bool) -> np.ndarray:
    """A list-of-ints Arrow column as one [rows, width] int32 array, each row padded with `pad` on the right (or
    on the left): vectorised, no Python loop over rows."""
    import pyarrow as pa

    flat = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    values = flat.flatten().to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    starts = flat.offsets.to_numpy()[:-1]
    out = np.full((len(lengths), width), pad, dtype=np.int32)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = np.arange(len(values)) - np.repeat(starts - starts[0], lengths)
    if left:
        cols += np.repeat(width - lengths, lengths)
    out[rows, cols] = values
    return out


@dataclass(frozen=True)
class PaddedSplit:
    """A tokenized split as arrays padded once (what `DataCollatorWithPadding` would build row by row at every
    step): each model input [rows, longest row], the row lengths and the labels. A batch is a slice of rows cut to
    its longest row, with the attention mask from the lengths; the tokenizer's padding side is kept."""

    inputs: dict[str, np.ndarray]  # input_ids, token_type_ids (when the tokenizer makes them): int32
    lengths: np.ndarray
    labels: np.ndarray  # int64 class ids, or float32 regression targets
    left: bool  # padded on the left (the tokenizer's padding_side)

    @classmethod
    def of(cls, split, tokenizer) -> PaddedSplit:
        """From a tokenized `datasets` split (input_ids, token_type_ids where made, length, labels)."""
        return cls.from_table(split.with_format("arrow")[:], tokenizer)  # honours a select()'s row mapping

    @classmethod
    def from_table(cls, table, tokenizer) -> PaddedSplit:
        """From an Arrow table of tokenized rows (bench/gpu.py builds one without `datasets`)."""
        lengths = table.column("length").to_numpy().astype(np.int64)
        width, left = int(lengths.max(initial=1)), tokenizer.padding_side == "left"
        pads = {"input_ids": tokenizer.pad_token_id, "token_type_ids": tokenizer.pad_token_type_id}
        inputs = {name: _padded_rows(table.column(name), lengths, width, pad, left)
                  for name, pad in pads.items() if name in table.column_names}
        labels = table.column(LABELS).to_numpy()
        labels = labels.astype(np.float32) if labels.dtype.kind == "f" else labels.astype(np.int64)
        return cls(inputs, lengths, labels, left)

    def batch(self, rows: np.ndarray) -> dict:
        """The model's inputs for these rows (int64 tensors, as the collator makes them), cut to the longest row."""
        import torch

        longest = int(self.lengths[rows].max())
        cut = slice(-longest, None) if self.left else slice(0, longest)
        out = {name: torch.from_numpy(array[rows, cut].astype(np.int64)) for name, array in self.inputs.items()}
        positions = np.arange(longest)
        real = self.lengths[rows][:, None]
        mask = positions >= longest - real if self.left else positions < real
        out["attention_mask"] = torch.from_numpy(mask.astype(np.int64))
        out[LABELS] = torch.from_numpy(self.labels[rows])
        return out


@dataclass
class TrialData:
    """Tokenized splits of one trial plus the row lengths the batcher needs.

    `sel` (None without `data.selection`) is held out of the train split before `train_limit` draws from the rest.
    """

    train: object  # datasets.Dataset
    eval: object  # the eval split (data.splits.eval): its metrics are reported as val_*
    train_lengths: np.ndarray
    eval_lengths: np.ndarray
    label_names: tuple[str, ...] | None  # in id order; None for regression
    sel: object = None
    sel_lengths: np.ndarray | None = None
    padded: dict[str, PaddedSplit] | None = None  # "train", "eval", "sel": the splits as padded arrays

    @classmethod
    def build(cls, data: DataConfig, tokenizer, seed: int, selection_seed: int = 0) -> TrialData:
        splits, names = tokenized_splits(data, tokenizer)
        train, eval_, sel = splits["train"], splits["eval"], None
        rows = np.arange(len(train))
        if data.selection is not None:
            held, rows = selection_split(len(train), data.selection.fraction, data.selection.rows, selection_seed)
            sel = train.select(held)
        train = train.select(rows[subset_indices(len(rows), data.train_limit, seed)])
        padded = {role: PaddedSplit.of(split, tokenizer) for role, split in
                  (("train", train), ("eval", eval_), ("sel", sel)) if split is not None}
        return cls(train, eval_, padded["train"].lengths, padded["eval"].lengths, names, sel,
                   None if sel is None else padded["sel"].lengths, padded)

    @staticmethod
    def batch(split, indices: np.ndarray, collator) -> dict:
        """A batch built row by row by a collator (the bare reference loop of bench/trial_throughput.py)."""
        rows = split[[int(i) for i in indices]]
        features = [{k: rows[k][j] for k in rows if k != "length"} for j in range(len(indices))]
        return collator(features)
