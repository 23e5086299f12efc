"""Trial data: load SST-2-style splits with `datasets`, tokenize once per node (cached), length-grouped batches."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lora_ext import SpecError

from .ray_job import UPLOAD_FIX, resolved_inside_upload

TEXT_COLUMN, LABEL_COLUMN = "sentence", "label"
_DEV_NAMES = ("dev", "validation")


def cache_root() -> Path:
    """Where tokenized splits are cached on this node (`LORA_SWEEP_CACHE`, default ~/.cache/lora-sweep)."""
    return Path(os.environ.get("LORA_SWEEP_CACHE", Path.home() / ".cache" / "lora-sweep"))


def _local_files(directory: Path) -> dict[str, Path]:
    """train + dev split files of a local dataset directory (TSV preferred, then Parquet)."""
    for ext in (".tsv", ".parquet"):
        train = directory / f"train{ext}"
        dev = next((directory / f"{n}{ext}" for n in _DEV_NAMES if (directory / f"{n}{ext}").is_file()), None)
        if train.is_file() and dev is not None:
            return {"train": train, "validation": dev}
    raise SpecError("data.dataset", "directory has no train.tsv + dev.tsv (or train/validation .parquet) files",
                    got=str(directory), allowed="a GLUE-format directory such as ../shared/data/sst2")


def _label_error(path: Path, where: str, label, num_labels: int) -> SpecError:
    return SpecError("data.dataset", f"{path}:{where}: label {label} is outside 0..{num_labels - 1}", got=str(label),
                     allowed=f"labels 0..{num_labels - 1}, or set data.num_labels to the number of classes")


def check_tsv(path: Path, num_labels: int | None = None) -> None:
    """Reject a malformed GLUE TSV with the file and line: header `sentence<TAB>label`, at least one row, integer
    labels (in 0..num_labels-1 when given)."""
    with open(path, encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        if header[:2] != [TEXT_COLUMN, LABEL_COLUMN]:
            raise SpecError("data.dataset", f"{path}:1: header must be 'sentence<TAB>label'", got="\t".join(header))
        rows = 0
        for lineno, line in enumerate(fh, start=2):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2 or not parts[1].strip().lstrip("-").isdigit():
                raise SpecError("data.dataset", f"{path}:{lineno}: malformed row, expected 'sentence<TAB>label' "
                                "with an integer label", got=line.rstrip("\n")[:80])
            if num_labels is not None and not 0 <= int(parts[1]) < num_labels:
                raise _label_error(path, str(lineno), int(parts[1]), num_labels)
            rows += 1
    if rows == 0:
        raise SpecError("data.dataset", f"{path}: has a header but no rows", allowed="a split with at least one row")


def check_parquet(path: Path, num_labels: int | None = None) -> None:
    """Reject a Parquet split without the sentence/label columns, without rows, or with labels out of range."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ... for a damaged file
        raise SpecError("data.dataset", f"{path}: not a readable Parquet file ({str(err).splitlines()[0][:80]})") from None
    missing = {TEXT_COLUMN, LABEL_COLUMN} - set(table.column_names)
    if missing:
        raise SpecError("data.dataset", f"{path}: lacks columns {sorted(missing)}", got=table.column_names)
    if table.num_rows == 0:
        raise SpecError("data.dataset", f"{path}: has no rows", allowed="a split with at least one row")
    labels = table.column(LABEL_COLUMN)
    if not pa.types.is_integer(labels.type):
        raise SpecError("data.dataset", f"{path}: column label must hold integers", got=str(labels.type))
    if num_labels is not None:
        lo, hi = pc.min_max(labels).values()
        for bound in (lo, hi):
            if bound.as_py() is not None and not 0 <= bound.as_py() < num_labels:
                raise _label_error(path, "label", bound.as_py(), num_labels)


def check_data(dataset: str, num_labels: int) -> None:
    """Every problem of a local dataset, found before anything starts (`plan` and `run`); hub ids load in `run`
    before Ray starts."""
    check_dataset_location(dataset)
    directory = Path(dataset).expanduser()
    if not directory.is_dir():
        return
    for path in _local_files(directory).values():
        (check_tsv if path.suffix == ".tsv" else check_parquet)(path, num_labels)


def check_dataset_location(dataset: str) -> None:
    """Fail early on a local dataset path that does not exist (hub ids are checked when they load)."""
    if dataset.startswith((".", "/", "~")) and not Path(dataset).expanduser().is_dir():
        inside = resolved_inside_upload(dataset)  # `ray job submit --working-dir`: only the upload is there
        if inside is not None:
            raise SpecError("data.dataset", f"local dataset directory not found: resolved from the job's uploaded "
                            f"working directory to {inside}, where only the files --working-dir uploaded are",
                            got=dataset, allowed=UPLOAD_FIX)
        raise SpecError("data.dataset", "local dataset directory not found", got=dataset,
                        allowed="a directory with train.tsv and dev.tsv, e.g. ../shared/data/sst2 "
                                "(relative paths are resolved from the current directory)")


def load_splits(dataset: str):
    """`datasets.DatasetDict` with `train` and `validation` splits of (sentence, label).

    `dataset` is a local directory (GLUE TSV or Parquet) or a hub id (`glue/sst2`, needs the network).
    """
    import datasets

    directory = Path(dataset).expanduser()
    if directory.is_dir():
        files = _local_files(directory)
        if files["train"].suffix == ".tsv":
            for path in files.values():
                check_tsv(path)
            # quoting=3 (QUOTE_NONE): SST-2 sentences contain bare quotes that are text, not CSV quoting.
            ds = datasets.load_dataset("csv", data_files={k: str(v) for k, v in files.items()}, delimiter="\t",
                                       quoting=3, keep_default_na=False)
        else:
            ds = datasets.load_dataset("parquet", data_files={k: str(v) for k, v in files.items()})
    elif dataset.startswith((".", "/", "~")):
        check_dataset_location(dataset)
    else:
        name, _, config = dataset.partition("/")
        try:
            ds = datasets.load_dataset("nyu-mll/glue", config) if name == "glue" else datasets.load_dataset(dataset)
        except Exception as err:  # datasets raises many types (ConnectionError, DatasetNotFoundError, ...)
            raise SpecError("data.dataset", f"cannot load from the hub ({type(err).__name__})", got=dataset,
                            allowed="a local directory of train.tsv/dev.tsv, or a hub id with network access") from None
    for split in ("train", "validation"):
        missing = {TEXT_COLUMN, LABEL_COLUMN} - set(ds[split].column_names)
        if missing:
            raise SpecError("data.dataset", f"split {split} lacks columns {sorted(missing)}", got=dataset)
    return ds


def _fingerprint(dataset: str, tokenizer, max_length: int) -> str:
    directory = Path(dataset).expanduser()
    if directory.is_dir():
        stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(_local_files(directory).values())]
        source = [str(directory.resolve()), stats]
    else:
        source = [dataset]
    key = json.dumps([source, tokenizer.name_or_path, type(tokenizer).__name__, len(tokenizer), max_length, 1])
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def tokenized_splits(dataset: str, tokenizer, max_length: int):
    """Tokenized train/validation splits, computed once per (data, tokenizer, max_length) on this node.

    Concurrent trials on a node wait on a file lock and then load the cached copy instead of re-tokenizing.
    """
    import datasets
    from filelock import FileLock

    datasets.disable_progress_bars()
    target = cache_root() / "tokenized" / _fingerprint(dataset, tokenizer, max_length)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "dataset_dict.json").is_file():
            return datasets.load_from_disk(str(target))
        raw = load_splits(dataset)

        def encode(batch):
            enc = tokenizer(batch[TEXT_COLUMN], truncation=True, max_length=max_length)
            enc["labels"] = batch[LABEL_COLUMN]
            enc["length"] = [len(ids) for ids in enc["input_ids"]]
            return enc

        tok = raw.map(encode, batched=True, remove_columns=raw["train"].column_names, desc="tokenize")
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        tok.save_to_disk(str(tmp))
        os.replace(tmp, target)  # atomic: a reader never sees a half-written cache
        return datasets.load_from_disk(str(target))


def subset_indices(n_rows: int, limit: int | None, seed: int) -> np.ndarray:
    """A seeded random subset of `limit` rows (all rows, in order, when limit is None or >= n_rows)."""
    if limit is None or limit >= n_rows:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).permutation(n_rows)[:limit])


def selection_split(n_rows: int, fraction: float | None, rows: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out selection rows, train rows left), both sorted; the same for every trial of a study (its base seed)."""
    held = rows if rows is not None else max(1, round(fraction * n_rows))
    if held >= n_rows:
        raise SpecError("data.selection", f"holds out {held:,} of the train split's {n_rows:,} rows, leaving none to "
                        "train on", allowed="a smaller fraction or fewer rows")
    order = np.random.default_rng([seed, 1]).permutation(n_rows)  # a stream apart from the trial's subset draw
    return np.sort(order[:held]), np.sort(order[held:])


def length_grouped_batches(lengths: np.ndarray, batch_size: int, seed: int, chunk_batches: int = 64) -> list[np.ndarray]:
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


@dataclass
class TrialData:
    """Tokenized splits of one trial plus the row lengths the batcher needs.

    `sel` (None without `data.selection`) is held out of the train split before `train_limit` draws from the rest.
    """

    train: object  # datasets.Dataset
    dev: object
    train_lengths: np.ndarray
    dev_lengths: np.ndarray
    sel: object = None
    sel_lengths: np.ndarray | None = None

    @classmethod
    def build(cls, dataset: str, tokenizer, max_length: int, train_limit: int | None, seed: int,
              selection_fraction: float | None = None, selection_rows: int | None = None,
              selection_seed: int = 0) -> TrialData:
        splits = tokenized_splits(dataset, tokenizer, max_length)
        train, dev, sel = splits["train"], splits["validation"], None
        rows = np.arange(len(train))
        if selection_fraction is not None or selection_rows is not None:
            held, rows = selection_split(len(train), selection_fraction, selection_rows, selection_seed)
            sel = train.select(held)
        train = train.select(rows[subset_indices(len(rows), train_limit, seed)])
        return cls(train, dev, np.asarray(train["length"]), np.asarray(dev["length"]), sel,
                   None if sel is None else np.asarray(sel["length"]))

    @staticmethod
    def batch(split, indices: np.ndarray, collator) -> dict:
        rows = split[[int(i) for i in indices]]
        features = [{k: rows[k][j] for k in rows if k != "length"} for j in range(len(indices))]
        return collator(features)
