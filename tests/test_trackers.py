"""`lora-sweep run --wandb PROJECT --mlflow URI`: one tracked run per trial with the config columns and every
epoch's metrics, through Ray Tune's own logger callbacks; W&B in offline mode and MLflow's local file store."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, tiny_spec

SCEN = "scenarios:\n  - {name: vup, layers: all, components: v+up}\n  - {name: head, baseline: classifier_only}\n"


def wandb_records(path: Path):
    """The records of an offline .wandb file. W&B's Python reader is gone (the reader is in its Go core), so this
    reads the format itself: a 7-byte header, then LevelDB's log format (32 KiB blocks, 7-byte record headers)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, parts = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the rest of a block too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        parts = chunk if kind in (1, 2) else parts + chunk  # FULL, FIRST | MIDDLE, LAST
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(parts)
            yield record


def wandb_run(path: Path) -> tuple[str, dict, list[dict]]:
    """(display name, config, history rows) of one offline run."""
    name, config, history = None, {}, []
    for rec in wandb_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            name = rec.run.display_name
            config.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.run.config.update})
        elif kind == "config":
            config.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.config.update})
        elif kind == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
    return name, config, history


@pytest.mark.slow
def test_wandb_offline_and_mlflow_get_one_run_per_trial(tmp_path, tiny_bert_dir):
    spec = tiny_spec(tmp_path, tiny_bert_dir, SCEN, repeats=2)
    env = dict(os.environ, WANDB_MODE="offline", WANDB_DIR=str(tmp_path / "wb"), WANDB_SILENT="true")
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-m", "tune_jobs.sweep", str(spec), "--storage", str(tmp_path / "store"),
                          "--name", "tracked", "--wandb", "lora-sweep-test", "--mlflow", f"file:{tmp_path / 'mlruns'}"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    names = {"vup-r4-rep0", "vup-r4-rep1", "head-rep0", "head-rep1"}
    runs = [wandb_run(p) for p in (tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb")]
    assert {name for name, _, _ in runs} == names  # one W&B run per trial, named like its folder
    for name, config, history in runs:
        assert config["trial_name"] == name and {"scenario", "r", "seed", "learning_rate", "layers"} <= set(config)
        epochs = [h for h in history if "epoch" in h]  # W&B adds rows of its own (system metrics)
        assert [h["epoch"] for h in epochs] == [1, 2] and all("val_accuracy" in h for h in epochs)

    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=f"file:{tmp_path / 'mlruns'}")
    experiment = client.get_experiment_by_name("tracked")
    mlruns = client.search_runs([experiment.experiment_id])
    assert {r.data.params["trial_name"] for r in mlruns} == names
    for r in mlruns:
        assert len(client.get_metric_history(r.info.run_id, "val_accuracy")) == 2


def test_tracker_problems_are_one_line_before_ray(tmp_path, tiny_bert_dir):
    spec = tiny_spec(tmp_path, tiny_bert_dir, SCEN)
    env = dict(os.environ, WANDB_MODE="online", WANDB_API_KEY="", HOME=str(tmp_path))
    env.pop("RAY_ADDRESS", None)
    for flags, needle in ((["--mlflow", "ftp://nowhere/x"], "--mlflow"), (["--wandb", "p"], "--wandb")):
        out = subprocess.run([sys.executable, "-m", "tune_jobs.sweep", str(spec), "--storage", str(tmp_path / "s"),
                              *flags], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and needle in lines[0], out.stderr[-2000:]
        assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("server", ["refused", "accepts, never answers"])
def test_mlflow_server_nobody_answers_is_one_line_within_the_connect_timeout(tmp_path, tiny_bert_dir, server):
    """MLflow's own HTTP client retries for minutes; the probe has its own timeout (LORA_SWEEP_CONNECT_TIMEOUT)."""
    import socket
    import time

    spec = tiny_spec(tmp_path, tiny_bert_dir, SCEN)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    if server == "refused":
        listener.close()
    else:
        listener.listen(8)  # the kernel completes the handshake; nothing ever reads or replies
    env = dict(os.environ, LORA_SWEEP_CONNECT_TIMEOUT="1")
    env.pop("RAY_ADDRESS", None)
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "tune_jobs.sweep", str(spec), "--storage", str(tmp_path / "s"),
                          "--mlflow", f"http://127.0.0.1:{port}/"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert time.monotonic() - started < 30
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and out.stdout == "" and len(lines) == 1, out.stderr[-2000:]
    assert lines[0].startswith("error: --mlflow: ")
    assert ("nothing answers at" if server == "refused" else "gave no answer within 1 s") in lines[0]
    assert not (tmp_path / "s").exists()
    listener.close()


def test_mlflow_file_store_still_passes_the_probe(tmp_path, monkeypatch):
    from tune_jobs.sweep.trackers import mlflow_callback

    monkeypatch.setenv("LORA_SWEEP_CONNECT_TIMEOUT", "1")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    assert type(mlflow_callback(f"file:{tmp_path / 'mlruns'}", "x")).__name__ == "MLflowLoggerCallback"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the probe's settings do not outlive it
