"""Readers of the files Ray Tune writes for an experiment, shared by the sweep (resume checks) and the analysis.

Imports neither side: training code reads an experiment's state without depending on analysis/, and analysis/
works without the training code installed. Local paths or URIs (s3://...) through pyarrow filesystems.
"""

from __future__ import annotations

import json
import os

import pyarrow.fs as pafs


class ExperimentFileError(ValueError):
    """An experiment directory that cannot be read; the message names the path and the problem in one line."""


def open_experiment(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a local directory or a URI such as s3://bucket/prefix/experiment."""
    try:
        fs, path = pafs.FileSystem.from_uri(uri if "://" in uri else _abs(uri))
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise ExperimentFileError(f"{uri}: cannot open ({err})") from None
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.Directory:
        raise ExperimentFileError(f"{uri}: not a directory; pass a Ray Tune experiment directory "
                                   "(STORAGE/NAME, the folder that holds experiment_state-*.json)")
    return fs, path


def _abs(path: str) -> str:
    return os.path.abspath(path)


def read_text(fs: pafs.FileSystem, path: str) -> str:
    with fs.open_input_stream(path) as fh:
        return fh.read().decode("utf-8", errors="replace")


def trial_states(fs: pafs.FileSystem, exp: str, entries: list[pafs.FileInfo]) -> dict[str, dict]:
    """relative_logdir -> {trial_id, status, num_failures, config, last_result} from the newest experiment_state."""
    states = sorted(e.path for e in entries if e.base_name.startswith("experiment_state") and e.base_name.endswith(".json"))
    if not states:
        raise ExperimentFileError(f"{exp}: not a Ray Tune experiment (no experiment_state-*.json); pass STORAGE/NAME "
                                   "as printed by `lora-sweep run`")
    try:
        data = json.loads(read_text(fs, states[-1]))
    except json.JSONDecodeError as err:
        raise ExperimentFileError(f"{states[-1]}: corrupt experiment state ({err})") from None
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
