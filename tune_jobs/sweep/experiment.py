"""An experiment folder before Ray starts: where it lives (`--storage`, `--name`), how trial folders are
named, and what a previous run recorded (refusing an edited spec, so two studies never mix in one experiment).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from record.errors import InputError
from tune_jobs.data.job_upload import resolved_inside_upload
from tune_jobs.study.grid import with_overrides
from tune_jobs.study.spec import TrialConfig

if TYPE_CHECKING:
    from .searcher import RecordedTrial


DEFAULT_STORAGE = "lora_sweep_results"


def absolute_paths(trial: TrialConfig) -> TrialConfig:
    """Relative local dataset/model paths resolved from here: Ray runs each trial in its own directory."""
    changes = {}
    for key in ("dataset", "model"):
        value = getattr(trial, key)
        if value.startswith(".") or Path(value).expanduser().is_dir():
            changes[key] = str(Path(value).expanduser().resolve())
    return with_overrides(trial, **changes)


def trial_dirname(trial) -> str:
    """A trial's folder is its grid point's name (`upper-r8-rep3`), not Ray's `key=value,...` string."""
    return trial.config["trial_name"]


def storage_uri(storage: str | None) -> str:
    """Absolute local path (Ray needs one) or a URI such as s3://bucket/prefix, unchanged."""
    from record.errors import check_output_dir
    from record.ray_files import check_bucket

    storage = storage or DEFAULT_STORAGE
    check_bucket(storage, "--storage")
    check_output_dir(storage, "--storage", remote=True)  # a file there: one line now, not Ray's NotADirectoryError
    if "://" not in storage and (inside := resolved_inside_upload(storage)) is not None:
        raise InputError("--storage", f"resolved from the job's uploaded working directory to {inside}, in Ray's "
                        "cache of --working-dir uploads (not kept)", got=storage,
                        allowed="an absolute path (on a cluster: "
                        "NFS every node mounts) or s3://bucket/prefix; for a cluster on this machine, submit with "
                        "--storage \"$PWD/lora_sweep_results\"")
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


def experiment_path(storage: str, name: str) -> str:
    return f"{storage.rstrip('/')}/{name}"


RETRY = "resume with the spec and profile it was started with, or use a new --name"


def check_same_grid(path: str, states: dict[str, dict], grid: list[dict]) -> None:
    """Refuse to resume an experiment whose trials were made from a different spec (or profile).

    Compares each trial recorded in the experiment state with the grid point of the same name, so an edited
    spec cannot silently mix two studies in one experiment; new grid points (growth) are fine.
    """
    by_name = {g["trial_name"]: g for g in grid}
    for state in states.values():
        stored = state["config"]
        name = stored.get("trial_name")
        if not isinstance(name, str):
            continue  # not resolved yet when the driver stopped
        if name not in by_name:
            raise InputError("spec", f"differs from the experiment at {path}: it has trial {name} the spec no longer "
                            "makes", allowed=RETRY)
        wanted = by_name[name]
        changed = sorted(k for k in wanted if k in stored and stored[k] != wanted[k])
        if changed:
            raise InputError("spec", f"differs from the experiment at {path} in {', '.join(changed)} of trial {name}",
                            allowed=RETRY)


def recorded_trials(path: str, grid: list[dict], metric: str, selection_metric: str | None = None,
                    ) -> list[RecordedTrial] | None:
    """The trials Ray will keep or resume (None: Tune saved nothing yet), read before Ray starts.

    Refuses a changed spec (`check_same_grid`) and an experiment this version cannot continue.
    """
    import pyarrow.fs as pafs

    from record.metrics import DEV
    from record.outcome import COMPLETED, STOPPED, outcome
    from record.ray_files import open_experiment, trial_states

    from .searcher import RecordedTrial, final_value

    fs, exp = open_experiment(path)
    entries = fs.get_file_info(pafs.FileSelector(exp))
    if not any(e.base_name.startswith("experiment_state") for e in entries):
        return None  # stopped before Tune saved anything: start it afresh
    states = trial_states(fs, exp, entries)
    check_same_grid(path, states, grid)
    if states and not any(e.base_name.startswith("search_gen_state") for e in entries):
        raise InputError("--name", f"the experiment at {path} has no lora-sweep searcher state (started by a version "
                        "before adaptive repeats)", allowed="resume it with that version, or use a new --name")
    points = {g["trial_name"]: g for g in grid}  # the same as each recorded trial's config (check_same_grid)
    out = []
    for st in states.values():
        name = st["config"].get("trial_name")
        if not isinstance(name, str):
            continue
        last, ended = st["last_result"], outcome(st["status"], st["last_result"], points[name])
        out.append(RecordedTrial(st["trial_id"], name, ended in COMPLETED, final_value(last, metric),
                                 final_value(last, selection_metric) if selection_metric else None, ended == STOPPED,
                                 (last or {}).get(f"{DEV}examples")))
    return out
