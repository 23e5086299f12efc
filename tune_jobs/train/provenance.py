"""What a trial records about the node that trains it (`record.fields.PROVENANCE`): package versions, CUDA and
driver, the device, lora-sweep's version and git commit. Reported in the first report of each run of a trial, so
`trials.parquet` and an export's model card name the training node's versions, not the analysing machine's.

Computed once per process (Ray reuses its workers) and per device: a trial pays for it once, not per epoch.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

import torch

from record.fields import PROVENANCE_NAMES
from record.versions import package_version

GIT_TIMEOUT_S = 5  # a hung git (a network file system) must not hold a trial
PACKAGES = {"lora_sweep_version": "lora-sweep", "torch_version": "torch", "transformers_version": "transformers",
            "peft_version": "peft", "ray_version": "ray"}


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):  # no git on this node, or it hung
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(root: Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the lora-sweep source the trial imported, when that source is a git checkout's root
    (an editable install or PYTHONPATH); (None, None) otherwise: an installed wheel, a node without git, a checkout
    git refuses (another user's: `safe.directory`), or code that Ray uploaded (`ray job submit --working-dir .`
    and `runtime_env: working_dir` ship the files without `.git`). The source must be the repository's top: a wheel
    installed into a virtual environment inside some other repository is not that repository's commit. Dirty:
    tracked files changed since the commit (untracked files, e.g. results written into the checkout, do not count,
    as in PEFT's method comparison)."""
    root = (root or Path(__file__).resolve().parents[2]).resolve()
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root:
        return None, None
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return commit, None if status is None else bool(status)


@functools.cache
def _node() -> dict:
    """What does not depend on the device: versions and the source's commit (once per process)."""
    commit, dirty = git_state()
    versions = {name: package_version(dist) for name, dist in PACKAGES.items()}
    return {**versions, "python_version": platform.python_version(), "git_commit": commit, "git_dirty": dirty,
            "cuda_version": torch.version.cuda}


def driver_version() -> str | None:
    """The NVIDIA driver's version from NVML (nvidia-ml-py); None where NVML is missing or cannot tell."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
    except (pynvml.NVMLError, AttributeError, RuntimeError):
        return None
    return version.decode() if isinstance(version, bytes) else str(version)


@functools.cache
def _device(kind: str, index: int | None) -> dict:
    if kind == "cuda":
        return {"device_name": torch.cuda.get_device_name(index), "driver_version": driver_version()}
    processor = platform.processor() or platform.machine()
    return {"device_name": f"{kind} ({processor})" if processor else kind, "driver_version": None}


def provenance(device: torch.device) -> dict:
    """Every `record.fields.PROVENANCE` field for a trial on `device` (None where not known)."""
    device = torch.device(device)
    index = (device.index if device.index is not None else torch.cuda.current_device()) \
        if device.type == "cuda" else None
    out = {**_node(), **_device(device.type, index)}
    return {name: out.get(name) for name in PROVENANCE_NAMES}
