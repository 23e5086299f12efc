"""Experiment trackers users already have, through Ray Tune's own logger callbacks: W&B and MLflow.

TensorBoard is always on (Ray writes its event files); these are opt-in (`--wandb PROJECT`, `--mlflow URI`) and
need their extras (`pip install 'lora-sweep[wandb]'`, `'lora-sweep[mlflow]'`). Ray 2.60 keeps these callbacks in
`ray.air.integrations`, their documented home; nothing else of `ray.air` is used.
"""

from __future__ import annotations

import contextlib

from record.errors import InputError

from .reach import TIMEOUT_ENV, check_http_server, connect_timeout


def _require(module: str, extra: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise InputError(f"--{extra}", f"needs the {module} package", allowed=f"pip install 'lora-sweep[{extra}]'")


def wandb_callback(project: str, group: str):
    """One W&B run per trial, named like its trial folder, with the config columns and every epoch's metrics."""
    _require("wandb", "wandb")
    from ray.air.integrations.wandb import WandbLoggerCallback

    class TrialNamedWandb(WandbLoggerCallback):
        """Ray names W&B runs after its internal trial ids; use lora-sweep's trial names (upper-r8-rep1)."""

        def _start_logging_actor(self, trial, exclude_results, **wandb_init_kwargs):
            wandb_init_kwargs["name"] = trial.config.get("trial_name", wandb_init_kwargs.get("name"))
            super()._start_logging_actor(trial, exclude_results, **wandb_init_kwargs)

    if not _wandb_credentials():  # checked before Ray starts; Tune would fail inside fit()
        raise InputError("--wandb", "no W&B API key", allowed="`wandb login`, WANDB_API_KEY, or WANDB_MODE=offline")
    return TrialNamedWandb(project=project, group=group)


def _wandb_credentials() -> bool:
    """Offline/disabled mode, WANDB_API_KEY, or a `wandb login` entry in ~/.netrc (where wandb keeps it)."""
    import netrc
    import os
    from urllib.parse import urlparse

    if os.environ.get("WANDB_MODE") in ("offline", "disabled") or os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def mlflow_callback(tracking_uri: str, experiment_name: str):
    """One MLflow run per trial (params = config columns, metrics per epoch) under one MLflow experiment."""
    import os

    _require("mlflow", "mlflow")
    from mlflow.tracking import MlflowClient
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    if tracking_uri.startswith("file:") or "://" not in tracking_uri and ":" not in tracking_uri:
        # MLflow 3 refuses its file store unless opted in; a user who names a file: URI has opted in.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    allowed = "file:./mlruns, or http(s)://host:port of an MLflow server"
    check_http_server(tracking_uri, "--mlflow", allowed)  # nothing listening: one line within the connect timeout
    try:  # reach the store before Ray starts: a wrong URI is one line, not a failure inside fit()
        with _one_quick_try():  # a server that accepts but never answers: not MLflow's minutes of retries
            MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
    except Exception as err:  # MlflowException, connection errors, unsupported schemes
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "timed out" in str(err).lower() or "timeout" in type(err).__name__.lower():
            text = f"it accepted the connection but gave no answer within {connect_timeout():g} s ({TIMEOUT_ENV} " \
                   "to wait longer)"
        raise InputError("--mlflow", f"cannot reach the tracking store ({text[:160]})", got=tracking_uri,
                         allowed=allowed) from None
    return MLflowLoggerCallback(tracking_uri=tracking_uri, experiment_name=experiment_name, save_artifact=False,
                                tags={"lora_sweep.experiment": experiment_name})


@contextlib.contextmanager
def _one_quick_try():
    """MLflow's HTTP client for one probe: no retries, each request within the connect timeout (MLflow reads these
    settings per request; the trials' own logging keeps MLflow's defaults)."""
    import math
    import os

    wanted = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(connect_timeout())))}
    before = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def tracker_callbacks(wandb_project: str | None, mlflow_uri: str | None, experiment: str) -> list:
    """The callbacks the flags ask for (none by default)."""
    out = []
    if wandb_project:
        out.append(wandb_callback(wandb_project, experiment))
    if mlflow_uri:
        out.append(mlflow_callback(mlflow_uri, experiment))
    return out
