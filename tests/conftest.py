"""Shared fixtures: offline settings, the real GLUE files beside the repo (GLUE_DIR), tiny random models."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("LORA_SWEEP_CACHE", tempfile.mkdtemp(prefix="lora-sweep-test-cache-"))

REPO = Path(__file__).resolve().parents[1]
# the GLUE folders: $GLUE_DIR where it is set (a fresh clone with the data elsewhere), else ../shared/data
GLUE_DIR = Path(os.environ["GLUE_DIR"]).expanduser().resolve() if os.environ.get("GLUE_DIR") else \
    REPO.parent / "shared" / "data"
SST2_DIR = GLUE_DIR / "sst2"
EXPERIMENTS = REPO / "tune_jobs" / "experiments"
os.environ.setdefault("GLUE_DIR", str(GLUE_DIR))  # glue/<task> from the real GLUE files beside the repository


@pytest.fixture(scope="session")
def sst2_dir() -> Path:
    assert (SST2_DIR / "train.tsv").is_file(), f"real SST-2 expected at {SST2_DIR}"
    return SST2_DIR


def tiny_roberta_config(num_layers: int = 4):
    from transformers import RobertaConfig

    return RobertaConfig(vocab_size=120, hidden_size=32, num_hidden_layers=num_layers, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=80, type_vocab_size=1, pad_token_id=1,
                         num_labels=2)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny random BERT (config only) that uses MiniLM's real tokenizer: fast models on real text."""
    from transformers import BertConfig

    from lora_ext.model_configs import random_model_dir

    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    return Path(random_model_dir(config, tmp_path_factory.mktemp("tiny_bert")))


def tiny_spec(tmp_path: Path, model_dir: Path, scenarios: str, **extra: object) -> Path:
    """Write a small spec that trains a tiny random BERT on a few hundred real SST-2 rows."""
    import yaml

    body = {
        "name": "tiny", "model": str(model_dir), "model_init": "random",
        "data": {"dataset": str(SST2_DIR), "train_limit": 96, "max_length": 32},
        "train": {"epochs": 2, "learning_rate": 3e-3, "batch_size": 16, "eval_batch_size": 128},
        "lora": {"ranks": [4], "dropout": 0.1}, "repeats": 1, "base_seed": 7, "resources": {"cpu": 1},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key].update(value)
        else:
            body[key] = value
    text = yaml.safe_dump(body) + scenarios
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    return path


@contextlib.contextmanager
def on_local_s3(folder: Path, key: str, monkeypatch):
    """`folder` copied to a local S3 endpoint (moto, on loopback) at results/<key>; yields its s3:// URI."""
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = pafs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http", region="us-east-1",
                               allow_bucket_creation=True)
        s3.create_dir("results")
        pafs.copy_files(str(folder), f"results/{key}", destination_filesystem=s3)
        yield f"s3://results/{key}?endpoint_override={host}:{port}&scheme=http&region=us-east-1"
    finally:
        server.stop()
