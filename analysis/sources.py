"""What `report` reads: an analysis folder (`analyze`'s Parquet files), or experiment folders that it analyses first
into a folder of the user's own: under the working directory, never inside Ray's experiment folder."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path

from record.errors import InputError, check_output_dir

DEFAULT_ROOT = Path("lora_sweep_reports")  # relative: under the working directory the command runs in
TRIALS_FILE = "trials.parquet"


@dataclass(frozen=True)
class Sources:
    """Where the Parquet files are (or will be written), which experiments to analyse first, where the report goes."""

    analysis: Path
    experiments: tuple[str, ...]
    out: Path


def is_analysis(path: str) -> bool:
    """A local folder holding `analyze`'s trials.parquet."""
    return "://" not in path and (Path(path) / TRIALS_FILE).is_file()


def _name(experiment: str) -> str:
    """The experiment folder's own name (`.` and `dir/` resolved, for a local one)."""
    if "://" not in experiment:
        return Path(experiment).resolve().name or "experiment"
    return posixpath.basename(experiment.rstrip("/")) or "experiment"


def default_folder(experiments: list[str]) -> Path:
    """lora_sweep_reports/NAME: the experiment's own name (several: joined by '+')."""
    names = list(dict.fromkeys(_name(e) for e in experiments))
    return DEFAULT_ROOT / "+".join(names)


def _inside(path: Path, folder: str) -> bool:
    if "://" in folder:
        return False
    return path.resolve().is_relative_to(Path(folder).resolve())


def resolve(paths: list[str], out: str | None) -> Sources:
    """One analysis folder (the report goes into `out`, by default the same folder), or experiment folders (local or
    s3://) analysed into `out`, by default lora_sweep_reports/NAME, where the report goes too. `out` is checked as
    typed (a file there, or a URI: `Path` would turn s3://b/x into a local s3:/b/x)."""
    if out:
        check_output_dir(out)
    analyses = [p for p in paths if is_analysis(p)]
    if analyses and len(paths) > 1:
        raise InputError("DIR", "one analysis folder, or one or more experiment folders, not both", got=paths,
                         allowed=f"`report {analyses[0]}`, or `report EXPERIMENT [EXPERIMENT ...]`")
    if analyses:
        return Sources(Path(analyses[0]), (), Path(out) if out else Path(analyses[0]))
    folder = Path(out) if out else default_folder(paths)
    check_output_dir(folder)
    for experiment in paths:
        if _inside(folder, experiment):
            raise InputError("--out" if out else "DIR", f"the report would go into {folder}, inside the experiment "
                             "folder Ray writes", got=str(folder), allowed="run it from outside the experiment "
                             "folder, or give --out a folder outside it")
    return Sources(folder, tuple(paths), folder)
