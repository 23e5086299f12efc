"""Where a task's splits are and how to read them: local CSV, TSV, JSON Lines or Parquet files (a directory, or a
GLUE task's folder under GLUE_DIR; either may be a URI such as s3://bucket/prefix, fetched by `remote.files`) or a
hub dataset, into `datasets.Dataset`s of the named columns.

What `datasets` does natively: reading CSV/TSV (its csv builder passes pandas' delimiter, header, names, quoting and
encoding options, so GLUE's byte-order mark, header-less files and bare quotes are reader options), JSON Lines and
Parquet, and the hub. Written here: finding a split's file, reading its header to check the named columns before
anything loads, and turning the reader's error or a bad row into `file:line`.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from record.errors import InputError
from tune_jobs.remote.files import RemoteFolder, cache_root, fetched, is_uri, list_folder
from tune_jobs.study.data_section import DataConfig, Reader
from tune_jobs.study.tasks import HUB_GLUE, GlueTsv, glue_dir, glue_folder, glue_folder_names, preset

from .job_upload import UPLOAD_FIX, resolved_inside_upload

FILE_TYPES = {".tsv": "csv", ".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
ROLES = ("train", "eval")  # the keys of data.splits


@dataclass(frozen=True)
class SplitFile:
    """One split's local file and how to read it (reader options resolved; `rename`: file column -> task column)."""

    role: str  # train | eval
    path: Path
    delimiter: str = ","
    header: bool = True
    column_names: tuple[str, ...] | None = None
    quoting: str = "minimal"
    encoding: str = "utf-8-sig"
    rename: tuple[tuple[str, str], ...] = ()
    origin: str | None = None  # the object's URI when `path` is the node's copy of a remote file

    @property
    def kind(self) -> str:
        return FILE_TYPES[self.path.suffix]

    @property
    def shown(self) -> str:
        """The file as a user named it: the URI of a remote object, else the local path."""
        return self.origin or str(self.path)

    def where(self, row: int) -> str:
        """`file:line` of a data row (0-based), or `file: row N` for Parquet."""
        line = _line_of(self, row)
        return f"{self.shown}:{line}" if line else f"{self.shown}: row {row + 1}"


@dataclass(frozen=True)
class Source:
    """Where a dataset's splits come from: local files, or a hub dataset (path, config); `key` names it for the
    cache."""

    key: str
    files: tuple[SplitFile, ...] = ()
    hub: tuple[str, str | None] | None = None


def check_dataset_location(dataset: str) -> None:
    """Fail early on a local dataset path that does not exist (hub ids are checked when they load)."""
    if dataset.startswith((".", "/", "~")) and not Path(dataset).expanduser().is_dir():
        inside = resolved_inside_upload(dataset)  # `ray job submit --working-dir`: only the upload is there
        if inside is not None:
            raise InputError("data.dataset", f"local dataset directory not found: resolved from the job's uploaded "
                            f"working directory to {inside}, where only the files --working-dir uploaded are",
                            got=dataset, allowed=UPLOAD_FIX)
        raise InputError("data.dataset", "local dataset directory not found", got=dataset,
                        allowed="a directory of split files (train.tsv, dev.tsv, ...), e.g. ../shared/data/sst2 "
                                "(relative paths are resolved from the current directory)")


def resolve_source(data: DataConfig) -> Source:
    """The splits' files (a local directory, or a GLUE task's folder under GLUE_DIR) or the hub dataset."""
    task = preset(data.dataset)
    if task is not None:
        root = glue_dir()
        if root is None:
            return Source(key=f"hub:{HUB_GLUE}/{task.name}", hub=(HUB_GLUE, task.name))
        if is_uri(root):
            return _remote_source(_remote_glue_folder(task, root), data, task.tsv)
        return _folder_source(glue_folder(task, root), data, task.tsv)
    if is_uri(data.dataset):
        return _remote_source(list_folder(data.dataset), data, None)
    directory = Path(data.dataset).expanduser()
    if directory.is_dir():
        return _folder_source(directory.resolve(), data, None)
    check_dataset_location(data.dataset)
    return Source(key=f"hub:{data.dataset}", hub=(data.dataset, None))


def _folder_source(directory: Path, data: DataConfig, glue: GlueTsv | None) -> Source:
    files = tuple(_split_file(directory, role, getattr(data.splits, role), data.reader, glue) for role in ROLES)
    stats = [(f.path.name, f.path.stat().st_size, f.path.stat().st_mtime_ns) for f in files]
    return Source(key=json.dumps([str(directory), stats]), files=files)


def _find_name(files: set[str], where: str, role: str, name: str) -> str:
    """The file of split `name` among `files` (the folder `where`'s): `name` itself (`dev.tsv`), else `name.<ext>`;
    a `validation*` split may also be GLUE's `dev*` file."""
    stems = [name] + (["dev" + name[len("validation"):]] if name.startswith("validation") else [])
    candidates = [name] if Path(name).suffix in FILE_TYPES else []
    candidates += [f"{stem}{ext}" for stem in stems for ext in FILE_TYPES]
    found = next((c for c in candidates if c in files), None)
    if found is None:
        have = sorted(f for f in files if Path(f).suffix in FILE_TYPES)
        raise InputError(f"data.splits.{role}", f"no file for split {name!r} in {where}", got=have or "no data files",
                        allowed=f"a file {name}.tsv/.csv/.jsonl/.parquet" + (" (or dev.*)" if stems[1:] else "")
                        + f", or set data.splits.{role} to a file name")
    return found


def _find_file(directory: Path, role: str, name: str) -> Path:
    """A split's local file: `name` as a path under `directory` (`sub/train.tsv`, or absolute), else as above."""
    if (directory / name).is_file():
        return directory / name
    return directory / _find_name({p.name for p in directory.iterdir() if p.is_file()}, str(directory), role, name)


def _remote_glue_folder(task, root: str) -> RemoteFolder:
    """The task's folder under a GLUE_DIR that is a URI (`SST-2` or `sst2`)."""
    listed = list_folder(root, "GLUE_DIR")
    name = next((n for n in glue_folder_names(task) if n in listed.folders), None)
    if name is None:
        raise InputError("data.dataset", f"GLUE_DIR has no folder {' or '.join(glue_folder_names(task))} for "
                        f"glue/{task.name}", got=root, allowed="the prefix that holds the GLUE task folders")
    return list_folder(listed.child(name))


def _remote_source(folder: RemoteFolder, data: DataConfig, glue: GlueTsv | None) -> Source:
    """The splits of a remote folder, each fetched once per node (by URI, size and mtime) and read as a local file."""
    files = []
    for role in ROLES:
        name = _find_name(set(folder.files), folder.uri, role, getattr(data.splits, role))
        local = fetched(folder, name, cache_root())
        files.append(replace(_split_file(local.parent, role, local.name, data.reader, glue), origin=folder.child(name)))
    stats = [(f.path.name, *folder.files[f.path.name]) for f in files]
    return Source(key=json.dumps([folder.uri, stats]), files=tuple(files))


def _split_file(directory: Path, role: str, name: str, reader: Reader | None, glue: GlueTsv | None) -> SplitFile:
    """A split's file with the reader options: the file type's defaults < the GLUE layout < the spec's `reader`."""
    path = _find_file(directory, role, name)
    tsv = path.suffix == ".tsv"
    options = {"delimiter": "\t" if tsv else ",", "quoting": "none" if tsv else "minimal"}
    if glue is not None and tsv:
        options.update(header=glue.header, column_names=glue.column_names, rename=glue.rename)
    options.update({k: v for k, v in vars(reader or Reader()).items() if v is not None})
    out = SplitFile(role, path, **options)
    if out.kind == "csv" and not out.header and not out.column_names:
        raise InputError("data.reader.column_names", f"{path} is read without a header line: name its columns",
                        allowed="e.g. reader: {header: false, column_names: [source, label, mark, sentence]}")
    return out


@contextlib.contextmanager
def quiet_datasets() -> Iterator[None]:
    """No progress bars or log lines from `datasets` (bad input must stay one line on stderr)."""
    import datasets

    datasets.disable_progress_bars()
    logger = logging.getLogger("datasets")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _csv_records(sf: SplitFile):
    """The file's non-blank records with the reader's line numbers (the way pandas counts them)."""
    quoting = csv.QUOTE_NONE if sf.quoting == "none" else csv.QUOTE_MINIMAL
    with open(sf.path, encoding=sf.encoding, newline="") as fh:
        reader = csv.reader(fh, delimiter=sf.delimiter, quoting=quoting)
        for record in reader:
            if record:
                yield reader.line_num, record


def _data_records(sf: SplitFile):
    """The data records of a CSV/TSV file (after its header line, if it has one) with their line numbers."""
    records = _csv_records(sf)
    if sf.header:
        next(records, None)
    return records


def _line_of(sf: SplitFile, row: int) -> int | None:
    """The line of data row `row` (only computed for an error message); None for Parquet."""
    if sf.kind == "parquet":
        return None
    if sf.kind == "json":
        with open(sf.path, encoding="utf-8") as fh:
            lines = (n for n, line in enumerate(fh, start=1) if line.strip())
            return next((n for i, n in enumerate(lines) if i == row), None)
    return next((n for i, (n, _) in enumerate(_data_records(sf)) if i == row), None)


def _file_columns(sf: SplitFile) -> list[str]:
    """The columns a split file has, under the task's names (after `rename`), read from its header or schema."""
    if sf.kind == "parquet":
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(sf.path).names
        except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ... for a damaged file
            raise InputError("data.dataset", f"{sf.shown}: not a readable Parquet file "
                            f"({str(err).splitlines()[0][:80]})") from None
    elif sf.kind == "json":
        with open(sf.path, encoding="utf-8") as fh:
            first = next(((n, line) for n, line in enumerate(fh, start=1) if line.strip()), None)
        if first is None:
            raise InputError("data.dataset", f"{sf.shown}: has no rows", allowed="a split with at least one row")
        try:
            obj = json.loads(first[1])
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            raise InputError("data.dataset", f"{sf.shown}:{first[0]}: not a JSON object",
                             allowed="JSON Lines: one object per line, e.g. {\"text\": \"...\", \"label\": \"pos\"}")
        names = list(obj)
    elif sf.column_names:
        names = list(sf.column_names)
    else:
        try:
            names = next(_csv_records(sf), (0, None))[1]
        except (UnicodeDecodeError, csv.Error) as err:
            raise InputError("data.dataset", f"{sf.shown}:1: cannot read the header ({err})") from None
        if names is None:
            raise InputError("data.dataset", f"{sf.shown}: is empty", allowed="a header line and at least one row")
    rename = dict(sf.rename)
    return [rename.get(n, n) for n in names]


def _check_columns(columns: list[str], data: DataConfig, where: str) -> None:
    """Each named text and label column exists (with a did-you-mean for a typo)."""
    for field, column in [("data.text", c) for c in data.text] + [("data.label", data.label)]:
        if column not in columns:
            close = difflib.get_close_matches(column, columns, n=1)
            raise InputError(field, f"no column {column!r} in {where}", got=column,
                            allowed=(f"did you mean {close[0]!r}? " if close else "")
                            + "columns: " + ", ".join(columns))


def _check_first_row(sf: SplitFile, n_columns: int) -> None:
    """A split with rows, whose first row has no field more than its columns (pandas would silently make the extra
    leading field an index, not an error as for any later row)."""
    if sf.kind == "parquet":
        import pyarrow.parquet as pq

        rows = pq.read_metadata(sf.path).num_rows
    elif sf.kind == "csv":
        first = next(_data_records(sf), None)
        rows = 0 if first is None else 1
        if first is not None and len(first[1]) > n_columns:
            raise InputError("data.dataset", f"{sf.shown}:{first[0]}: malformed row (expected {n_columns} fields, "
                            f"saw {len(first[1])})", allowed="one row per line; check the delimiter and "
                            "data.reader.quoting")
    else:
        return  # JSON Lines: _file_columns found its first object
    if rows == 0:
        raise InputError("data.dataset", f"{sf.shown}: has no rows", allowed="a split with at least one row")


def _read_error(sf: SplitFile, err: Exception) -> InputError:
    """One line for what the reader raised: `file:line` for a row with the wrong number of fields."""
    cause = err
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__
    text = str(cause).strip().splitlines()[0][:160] if str(cause).strip() else type(cause).__name__
    found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if found:
        want, line, saw = found.groups()
        return InputError("data.dataset", f"{sf.shown}:{line}: malformed row (expected {want} fields, saw {saw})",
                         allowed="one row per line; check the delimiter and data.reader.quoting")
    return InputError("data.dataset", f"{sf.shown}: cannot read it as {sf.kind} ({text})")


def read_file(sf: SplitFile, data: DataConfig):
    """The split as a `datasets.Dataset` of the named columns (task names), read by the `datasets` builders."""
    import datasets

    columns = _file_columns(sf)
    _check_columns(columns, data, sf.shown)
    _check_first_row(sf, len(columns))
    needed = [*data.text, data.label]
    original = {task: file for file, task in sf.rename}
    columns = [original.get(c, c) for c in needed]
    options: dict = {}
    if sf.kind == "csv":  # every column as text (labels are parsed below), exactly as the file has it
        options = dict(sep=sf.delimiter, header=0 if sf.header else None, quoting=csv.QUOTE_NONE if sf.quoting ==
                       "none" else csv.QUOTE_MINIMAL, encoding=sf.encoding, keep_default_na=False,
                       features=datasets.Features({c: datasets.Value("string") for c in dict.fromkeys(columns)}))
        if sf.column_names:
            options["names"] = list(sf.column_names)
    try:
        with quiet_datasets():
            ds = datasets.load_dataset(sf.kind, data_files={sf.role: str(sf.path)}, split=sf.role, **options)
    except Exception as err:  # datasets wraps the reader's error (pandas ParserError, ArrowInvalid, ...)
        raise _read_error(sf, err) from None
    ds = ds.select_columns(list(dict.fromkeys(columns)))
    return ds.rename_columns({f: t for f, t in zip(columns, needed) if f != t})


def read_hub(source: Source, data: DataConfig) -> dict:
    """The train and eval splits of a hub dataset; one line when it cannot load (offline, unknown id)."""
    import datasets

    path, config = source.hub
    try:
        with quiet_datasets():
            ds = datasets.load_dataset(path, config)
    except Exception as err:  # datasets raises many types (ConnectionError, DatasetNotFoundError, ...)
        offline = os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("0", "")
        reason = "offline: HF_DATASETS_OFFLINE is set" if offline else type(err).__name__
        hint = (("export GLUE_DIR=<folder with the GLUE task folders> to read local files, or load it with network "
                 "access") if preset(data.dataset)
                else "a local directory of split files, or a hub id with network access")
        raise InputError("data.dataset", f"cannot load from the hub ({reason})", got=data.dataset,
                         allowed=hint) from None
    out = {}
    for role in ROLES:
        name = getattr(data.splits, role)
        if name not in ds:
            raise InputError(f"data.splits.{role}", f"no split {name!r} in {data.dataset}", got=name,
                            allowed="splits: " + ", ".join(ds))
        _check_columns(ds[name].column_names, data, f"{data.dataset} split {name}")
        out[role] = ds[name]
    return out
