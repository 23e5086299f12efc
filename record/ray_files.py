"""Readers of the files Ray Tune writes for an experiment, shared by the sweep (resume checks) and the analysis.

Imports neither side: training code reads an experiment's state without depending on analysis/, and analysis/
works without the training code installed. Local paths or URIs (s3://...) through pyarrow filesystems.
"""

from __future__ import annotations

import json
import os

import pyarrow.fs as pafs

from .errors import InputError

RESULT_FILE, PARAMS_FILE, ERROR_FILE = "result.json", "params.json", "error.txt"  # per trial folder
CHECKPOINT_PREFIX = "checkpoint_"  # checkpoint_000003: the checkpoint reported with the third result


BUCKET_SCHEMES = ("s3", "s3a", "gs", "gcs")  # URIs whose first part is a bucket name


def check_bucket(uri: str, field: str) -> None:
    """Refuse `s3:///prefix` (an empty bucket name) with one line saying so, before a filesystem is asked and the
    failure is blamed on credentials or a missing object."""
    scheme, sep, rest = str(uri).partition("://")
    if sep and scheme.lower() in BUCKET_SCHEMES and not rest.partition("?")[0].partition("/")[0]:
        raise InputError(field, "the bucket name is missing (nothing between '://' and the next '/')", got=str(uri),
                         allowed=f"{scheme}://BUCKET/prefix, e.g. {scheme}://my-bucket/data/sst2")


def open_experiment(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a local directory or a URI such as s3://bucket/prefix/experiment."""
    check_bucket(uri, str(uri))
    try:
        fs, path = pafs.FileSystem.from_uri(uri if "://" in uri else _abs(uri))
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise InputError(str(uri), f"cannot open ({err})") from None
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.Directory:
        raise InputError(str(uri), "not a directory; pass a Ray Tune experiment directory "
                                   "(STORAGE/NAME, the folder that holds experiment_state-*.json)")
    return fs, path


def _abs(path: str) -> str:
    return os.path.abspath(path)


def read_text(fs: pafs.FileSystem, path: str) -> str:
    with fs.open_input_stream(path) as fh:
        return fh.read().decode("utf-8", errors="replace")


def trial_states(fs: pafs.FileSystem, exp: str, entries: list[pafs.FileInfo]) -> dict[str, dict]:
    """relative_logdir -> {trial_id, status, num_failures, config, last_result} from the newest experiment_state."""
    states = sorted(e.path for e in entries
                    if e.base_name.startswith("experiment_state") and e.base_name.endswith(".json"))
    if not states:
        raise InputError(str(exp), "not a Ray Tune experiment (no experiment_state-*.json); pass STORAGE/NAME "
                                   "as printed by `lora-sweep run`")
    try:
        data = json.loads(read_text(fs, states[-1]))
    except json.JSONDecodeError as err:
        raise InputError(f"{states[-1]}", f"corrupt experiment state ({err})") from None
    out = {}
    for item in data.get("trial_data", []):
        trial = json.loads(item[0]) if isinstance(item[0], str) else item[0]
        runtime = json.loads(item[1]) if isinstance(item[1], str) else item[1]
        config, last = trial.get("config"), runtime.get("last_result")
        out[trial["relative_logdir"]] = {"trial_id": trial["trial_id"], "status": trial["status"],
                                         "num_failures": int(runtime.get("num_failures", 0) or 0),
                                         "config": config if isinstance(config, dict) else {},
                                         "last_result": last if isinstance(last, dict) else {}}
    return out


def read_results(fs: pafs.FileSystem, path: str) -> tuple[list[dict], str | None]:
    """The reports in result.json, deduplicated by epoch (the last report of an epoch wins), and a problem note."""
    try:
        text = read_text(fs, path)
    except FileNotFoundError:
        return [], None
    rows, problem = [], None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not an object")
        except ValueError:
            problem = f"{path}:{lineno}: corrupt or truncated line; this and later reports ignored"
            break
        row.pop("config", None)
        rows.append(row)
    by_epoch: dict = {}
    for row in rows:  # a trial restored from a checkpoint may report an epoch twice
        by_epoch[row.get("epoch", row.get("training_iteration"))] = row
    return [by_epoch[k] for k in sorted(by_epoch, key=lambda e: (e is None, e))], problem


def latest_checkpoint(entries: list[pafs.FileInfo]) -> str | None:
    """The newest `checkpoint_*` folder among a trial folder's entries (Ray numbers them in order), or None."""
    ckpts = sorted(e.path for e in entries
                   if e.type == pafs.FileType.Directory and e.base_name.startswith(CHECKPOINT_PREFIX))
    return ckpts[-1] if ckpts else None
