"""What a process started by `ray job submit` sees: the job's uploaded working directory and its runtime env.

`ray job submit --working-dir .` packs the directory, and Ray unpacks it on the node that runs the driver as
`<session>/runtime_resources/working_dir_files/_ray_pkg_<hash>/`, the driver's current directory. Only what was
uploaded is there: a relative path that pointed beside the checkout on the laptop (`../shared/data/sst2`) resolves
to a directory that does not exist. These helpers name that situation so errors can say so; no Ray import needed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# Set by Ray's job supervisor for the driver only (ray._private.runtime_env.constants.RAY_JOB_CONFIG_JSON_ENV_VAR).
JOB_CONFIG_ENV_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"
_UNPACKED = ("runtime_resources", "working_dir_files")  # where Ray unpacks a --working-dir on every node


def uploaded_working_dir() -> Path | None:
    """The unpacked `--working-dir` the current directory lies in, or None outside a job."""
    parts = Path.cwd().resolve().parts
    for i in range(len(parts) - 2):
        if parts[i:i + 2] == _UNPACKED:
            return Path(*parts[:i + 3])
    return None


def resolved_inside_upload(path: str) -> Path | None:
    """Where a local `path` ends up when this process runs inside an uploaded working directory and the path
    lands in Ray's unpacked files there (the relative `../data` of a laptop does); None otherwise."""
    upload = uploaded_working_dir()
    if upload is None:
        return None
    resolved = Path(path).expanduser()
    resolved = (resolved if resolved.is_absolute() else Path.cwd() / resolved).resolve()
    return resolved if resolved.is_relative_to(upload.parent) else None


def job_env_vars() -> dict[str, str]:
    """The `env_vars` of the job's runtime env (`ray job submit --runtime-env-json`), {} outside a job driver.

    Ray gives them to the driver and to every task and actor of the job, on every node. A driver's
    `ray.init(runtime_env=...)` that names one of them again fails ("Failed to merge the Job's runtime env").
    """
    try:
        config = json.loads(os.environ.get(JOB_CONFIG_ENV_VAR) or "{}")
    except ValueError:
        return {}
    env_vars = (config.get("runtime_env") or {}).get("env_vars") or {}
    return dict(env_vars) if isinstance(env_vars, dict) else {}


UPLOAD_FIX = ("use data the cluster can read: glue/<task> with GLUE_DIR in the job's environment "
              "(ray job submit --runtime-env-json '{\"env_vars\": {\"GLUE_DIR\": \"/abs/path/on/the/nodes\"}}'), "
              "an absolute path on storage every node mounts (NFS), or a hub id")
