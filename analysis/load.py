"""Read Ray Tune experiment directories (local or s3://, via pyarrow filesystems) into typed rows.

Reads the files Ray Tune defines: `experiment_state-*.json` (trial ids, statuses, restarts), and per trial folder
`params.json` (config), `result.json` (one JSON object per report) and `error.txt`. `tune.ExperimentAnalysis` reads
the same files but unpickles and builds a DataFrame per trial, which is far too slow for 10,000 trials.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field

import pyarrow.fs as pafs

from record.errors import InputError
from record.fields import filled
from record.ray_files import (
    ERROR_FILE,
    PARAMS_FILE,
    RESULT_FILE,
    latest_checkpoint,
    open_experiment,
    read_results,
    read_text,
    trial_states,
)

from .schema import CONFIG_NAMES


@dataclass
class TrialRecord:
    """Everything read about one trial: its config, per-epoch results and what went wrong."""

    experiment: str
    trial_id: str
    trial_dir: str
    status: str
    config: dict
    results: list[dict]
    error: str | None = None
    problem: str | None = None
    num_restarts: int = 0
    last_checkpoint: str | None = None
    extra: dict = field(default_factory=dict)


def read_experiment(uri: str) -> list[TrialRecord]:
    """All trials of one experiment; InputError for input that cannot be analysed at all."""
    fs, exp = open_experiment(uri)
    entries = fs.get_file_info(pafs.FileSelector(exp))
    states = trial_states(fs, exp, entries)
    name = posixpath.basename(exp.rstrip("/"))
    dirs = {e.base_name: e.path for e in entries if e.type == pafs.FileType.Directory}
    trial_dirs = sorted(set(states) | {d for d in dirs if fs.get_file_info(posixpath.join(dirs[d], RESULT_FILE)).type
                                       == pafs.FileType.File})
    if not trial_dirs:
        raise InputError(str(uri), "empty experiment (no trials recorded yet)")
    records = []
    for rel in trial_dirs:
        tdir = posixpath.join(exp, rel)
        tentries = fs.get_file_info(pafs.FileSelector(tdir, allow_not_found=True))
        files = {e.base_name for e in tentries}
        state = states.get(rel, {})
        if PARAMS_FILE in files:
            try:
                config = json.loads(read_text(fs, posixpath.join(tdir, PARAMS_FILE)))
            except json.JSONDecodeError as err:
                raise InputError(f"{tdir}/params.json", f"corrupt ({err})") from None
        elif state.get("status") in ("ERROR", "PENDING") and RESULT_FILE not in files:
            # Failed (or not started) before Ray wrote params.json: the experiment state still has its config.
            if not tentries and state.get("status") == "PENDING":
                continue
            config = state.get("config", {})
        else:
            raise InputError(str(tdir), "trial folder without params.json (incomplete copy of the experiment?)")
        results, problem = read_results(fs, posixpath.join(tdir, RESULT_FILE))
        error = None
        if ERROR_FILE in files:
            error_text = read_text(fs, posixpath.join(tdir, ERROR_FILE)).strip().splitlines()
            error = next((line for line in reversed(error_text) if line.strip()), "error")[:500]
        status = state.get("status") or ("ERROR" if error else "TERMINATED" if results else "UNKNOWN")
        trial_id = state.get("trial_id") or (results[0].get("trial_id") if results else rel)
        records.append(TrialRecord(
            experiment=name, trial_id=trial_id, trial_dir=tdir, status=status, config=config, results=results,
            error=error if status == "ERROR" else None, problem=problem, num_restarts=state.get("num_failures", 0),
            last_checkpoint=latest_checkpoint(tentries),
        ))
    return records


def split_config(config: dict) -> tuple[dict, dict]:
    """(known config columns, unknown extra keys) of a trial's params.json."""
    full = filled(config)
    known = {k: full.get(k) for k in CONFIG_NAMES}
    extra = {k: v for k, v in config.items() if k not in CONFIG_NAMES and k != "grid_index"}
    return known, extra

