"""Data from a bucket (`data.dataset: s3://...`, `GLUE_DIR=s3://...`) against a local S3 endpoint on loopback
(moto's server, in its own process with request signing enforced after the set-up): plan, trial and a sweep read
it exactly as local files; a changed object is fetched and tokenized again; each bad case is one line. The base
model from the bucket (`model: s3://...`) likewise: plan reads its config.json alone, a trial trains from it, each
node fetches it once."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, SST2_DIR, tiny_spec

sys.path.insert(0, str(REPO / "bench"))
import local_s3  # noqa: E402  (bench/local_s3.py: moto's server in its own process)

BUCKET = "data"
# 7 S3 and 5 IAM calls below; requests the server serves unsigned (buckets, objects, the IAM user); then it checks
# them all
SETUP_ACTIONS = 12


def _small_sst2(folder: Path) -> Path:
    """A real SST-2 folder, shortened (first 400 train rows, the whole dev split), in GLUE's layout."""
    folder.mkdir(parents=True)
    lines = (SST2_DIR / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "train.tsv").write_text("".join(lines[:401]), encoding="utf-8")
    shutil.copy(SST2_DIR / "dev.tsv", folder / "dev.tsv")
    return folder


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 + IAM server: bucket `data` with sst2/ and glue/SST-2/, a bucket `empty`, and a user `reader` with
    no permission (for access denied). Yields the environment a client needs (endpoint, region, test keys)."""
    import boto3

    server, endpoint = local_s3.serve(dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(SETUP_ACTIONS),
                                           AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing"))
    local = _small_sst2(tmp_path_factory.mktemp("s3src") / "sst2")
    client = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                  aws_secret_access_key="testing")
    s3c, iam = boto3.client("s3", **client), boto3.client("iam", **client)
    s3c.create_bucket(Bucket=BUCKET)
    s3c.create_bucket(Bucket="empty")
    for name in ("train.tsv", "dev.tsv"):
        body = (local / name).read_bytes()
        s3c.put_object(Bucket=BUCKET, Key=f"sst2/{name}", Body=body)
        s3c.put_object(Bucket=BUCKET, Key=f"glue/SST-2/{name}", Body=body)
    s3c.put_object(Bucket=BUCKET, Key="notes/README.txt", Body=b"no split files here")
    keys = {}
    for user in ("admin", "reader"):  # admin may do anything with S3; reader nothing
        iam.create_user(UserName=user)
        if user == "admin":
            iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument='{"Version": "2012-10-17", '
                                '"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}')
        keys[user] = iam.create_access_key(UserName=user)["AccessKey"]
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    yield {"env": env,
           "keys": {u: {"AWS_ACCESS_KEY_ID": k["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": k["SecretAccessKey"]}
                    for u, k in keys.items()}, "admin_client": client, "local": local}
    server.terminate()
    server.wait(timeout=30)


def client_env(s3, user: str | None = "admin", **extra) -> dict:
    """The environment of a client process: the endpoint, `user`'s keys (None: no credentials at all)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(s3["env"], **(s3["keys"][user] if user else {}), **extra)
    return env


def admin_client(s3):
    """A boto3 S3 client with the admin's keys (signed requests, after the set-up)."""
    import boto3

    keys = s3["keys"]["admin"]
    return boto3.client("s3", endpoint_url=s3["env"]["AWS_ENDPOINT_URL"], region_name="us-east-1",
                        aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"])


@pytest.fixture
def as_admin(s3, monkeypatch, tmp_path):
    """This process as the admin client, with a cache of its own."""
    for k, v in client_env(s3).items():
        if k.startswith("AWS_"):
            monkeypatch.setenv(k, v)
    for k in [k for k in os.environ if k.startswith("AWS_") and k not in client_env(s3)]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("LORA_SWEEP_CACHE", str(tmp_path / "cache"))
    return s3


SCENARIOS = "scenarios:\n  - {name: vup, layers: all, components: v+up}\n"


def spec_at(tmp_path, model_dir, dataset: str, **data):
    return tiny_spec(tmp_path, model_dir, SCENARIOS, data={"dataset": dataset, **data})


def rows(data) -> tuple:
    from tune_jobs.data.splits import load_splits

    s = load_splits(data)
    return s.train["sentence"], s.train["labels"], s.eval["sentence"], s.eval["labels"], s.label_names


def test_a_bucket_reads_exactly_as_the_same_files_on_disk(as_admin, tmp_path, tiny_bert_dir, monkeypatch, capsys):
    from tune_jobs.cli import main
    from tune_jobs.study.spec import load_study

    remote = load_study(spec_at(tmp_path, tiny_bert_dir, "s3://data/sst2")).data
    local = load_study(spec_at(tmp_path, tiny_bert_dir, str(as_admin["local"]))).data
    assert rows(remote) == rows(local)
    monkeypatch.setenv("GLUE_DIR", "s3://data/glue")  # the GLUE preset's folder under a bucket
    assert rows(load_study(spec_at(tmp_path, tiny_bert_dir, "glue/sst2")).data)[:4] == rows(local)[:4]
    assert main(["plan", str(spec_at(tmp_path, tiny_bert_dir, "s3://data/sst2"))]) == 0
    assert "data s3://data/sst2" in capsys.readouterr().out


def test_a_trial_on_bucket_data_gives_the_local_trials_metrics(as_admin, tmp_path, tiny_bert_dir):
    from tune_jobs.data.splits import checked_study
    from tune_jobs.study.grid import expand
    from tune_jobs.study.spec import load_study
    from tune_jobs.train.loop import run_trial

    def final(dataset):
        study = checked_study(load_study(spec_at(tmp_path, tiny_bert_dir, dataset, train_limit=64)))
        return run_trial(expand(study)[0].to_dict())[-1]

    remote, local = final("s3://data/sst2"), final(str(as_admin["local"]))
    assert remote["val_accuracy"] == local["val_accuracy"] and remote["train_loss"] == local["train_loss"]


def test_a_changed_object_is_fetched_and_tokenized_again(as_admin, tmp_path, tiny_bert_dir):
    from transformers import AutoTokenizer

    from tune_jobs.data.splits import tokenized_splits
    from tune_jobs.study.spec import load_study

    client = admin_client(as_admin)
    dev = (as_admin["local"] / "dev.tsv").read_bytes()
    client.put_object(Bucket=BUCKET, Key="changing/train.tsv", Body=(as_admin["local"] / "train.tsv").read_bytes())
    client.put_object(Bucket=BUCKET, Key="changing/dev.tsv", Body=dev)
    data = load_study(spec_at(tmp_path, tiny_bert_dir, "s3://data/changing")).data
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert_dir))
    assert len(tokenized_splits(data, tokenizer)[0]["eval"]) == 872
    assert len(tokenized_splits(data, tokenizer)[0]["eval"]) == 872  # served from the cache
    time.sleep(1.1)  # a new modification time as well as a new size
    client.put_object(Bucket=BUCKET, Key="changing/dev.tsv", Body=b"".join(dev.splitlines(keepends=True)[:101]))
    assert len(tokenized_splits(data, tokenizer)[0]["eval"]) == 100  # never the stale copy
    cached = list((tmp_path / "cache" / "tokenized").glob("*/dataset_dict.json"))
    assert len(cached) == 2


def _truncated_parquet(tmp_path) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "whole.parquet"
    pq.write_table(pa.table({"sentence": ["good", "bad"] * 50, "label": [1, 0] * 50}), path)
    body = path.read_bytes()
    return body[: len(body) // 2]


@pytest.mark.parametrize("case, dataset, user, needle", [
    ("no bucket", "s3://nobucket/sst2", "admin", "data.dataset: the bucket does not exist"),
    ("empty prefix", "s3://data/nothing/here", "admin", "data.dataset: nothing under this prefix"),
    ("no split files", "s3://data/notes", "admin", "data.splits.train: no file for split 'train' in s3://data/notes"),
    ("access denied", "s3://data/sst2", "reader", "data.dataset: access denied"),
    ("bad keys", "s3://data/sst2", "bogus", "data.dataset: no usable credentials"),
    ("no credentials", "s3://data/sst2", None, "no credentials are configured here"),
    ("truncated object", "s3://data/truncated", "admin", "s3://data/truncated/train.parquet: not a readable Parquet"),
])
def test_bad_bucket_data_is_one_line_before_anything_starts(s3, tmp_path, tiny_bert_dir, case, dataset, user, needle):
    if case == "truncated object":
        client = admin_client(s3)
        for name in ("train.parquet", "dev.parquet"):
            client.put_object(Bucket=BUCKET, Key=f"truncated/{name}", Body=_truncated_parquet(tmp_path))
    if user == "bogus":
        env = client_env(s3, None, AWS_ACCESS_KEY_ID="AKIANOTAKEY", AWS_SECRET_ACCESS_KEY="nope")
    else:
        env = client_env(s3, user)
    env.update(LORA_SWEEP_CACHE=str(tmp_path / "cache"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_CONFIG_FILE=str(tmp_path / "none"))
    spec = spec_at(tmp_path, tiny_bert_dir, dataset)
    out = subprocess.run([sys.executable, "-m", "tune_jobs", "plan", str(spec)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and needle in lines[0], (case, out.stderr[-2000:])


@pytest.mark.slow
def test_a_sweep_reads_its_data_from_the_bucket_on_every_trial(s3, tmp_path, tiny_bert_dir):
    import json

    spec = tiny_spec(tmp_path, tiny_bert_dir, SCENARIOS + "  - {name: head, baseline: classifier_only}\n",
                     data={"dataset": "s3://data/sst2", "train_limit": 96})
    env = dict(client_env(s3), LORA_SWEEP_CACHE=str(tmp_path / "cache"), RAY_AUTH_MODE="token")
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-m", "tune_jobs.sweep", str(spec), "--storage", str(tmp_path / "store"),
                          "--name", "s3data"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "2 trials (2 TERMINATED)" in out.stdout
    for name in ("vup-r4-rep0", "head-rep0"):
        reports = [json.loads(line) for line in (tmp_path / "store" / "s3data" / name / "result.json").read_text()
                   .splitlines()]
        assert [r["epoch"] for r in reports] == [1, 2] and reports[-1]["val_examples"] == 872


# ---------------------------------------------------------------- the base model from the bucket (model: s3://...)

MODEL_URI = f"s3://{BUCKET}/models/tiny-bert"


@pytest.fixture(scope="module")
def bucket_model(s3, tmp_path_factory, tiny_bert_dir) -> Path:
    """A tiny BERT with random weights (save_pretrained: config, safetensors, MiniLM's tokenizer) on disk and under
    models/tiny-bert/ in the bucket, beside files a trial never reads (other frameworks' weights, a .bin beside
    safetensors), as a hub snapshot holds them. Returns the local folder."""
    import torch
    from transformers import AutoConfig, AutoModel

    local = tmp_path_factory.mktemp("bucket_model") / "tiny-bert"
    shutil.copytree(tiny_bert_dir, local)
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.from_pretrained(local)).save_pretrained(local)
    client = admin_client(s3)
    for path in sorted(local.iterdir()):
        client.put_object(Bucket=BUCKET, Key=f"models/tiny-bert/{path.name}", Body=path.read_bytes())
    for name in ("tf_model.h5", "pytorch_model.bin"):
        client.put_object(Bucket=BUCKET, Key=f"models/tiny-bert/{name}", Body=b"never fetched")
    client.put_object(Bucket=BUCKET, Key="models/no-config/vocab.txt", Body=b"[PAD]\n")
    return local


def model_spec(tmp_path, model: str, **extra) -> Path:
    return tiny_spec(tmp_path, model, SCENARIOS, model_init="pretrained", **extra)


def test_plan_counts_a_bucket_model_from_its_config_alone(as_admin, bucket_model, tmp_path, capsys):
    from tune_jobs.cli import main
    from tune_jobs.data.splits import checked_study
    from tune_jobs.plan import plan
    from tune_jobs.study.spec import load_study

    def counts(model):
        return [p.params.trainable for p in plan(checked_study(load_study(model_spec(tmp_path, model))))]

    assert counts(MODEL_URI) == counts(str(bucket_model)) and counts(MODEL_URI)[0] > 0
    assert main(["plan", str(model_spec(tmp_path, MODEL_URI))]) == 0
    assert MODEL_URI in capsys.readouterr().out
    fetched = [p.name for p in (tmp_path / "cache" / "remote").glob("*/*")]
    assert fetched == ["config.json"]  # the weights stay in the bucket until a trial runs


def test_a_trial_trains_from_a_bucket_model_as_from_the_same_folder_on_disk(as_admin, bucket_model, tmp_path):
    from tune_jobs.data.splits import checked_study
    from tune_jobs.study.grid import expand
    from tune_jobs.study.spec import load_study
    from tune_jobs.train.loop import run_trial

    def final(model):
        spec = model_spec(tmp_path, model, data={"train_limit": 64}, train={"epochs": 1})
        return run_trial(expand(checked_study(load_study(spec)))[0].to_dict())

    remote, local = final(MODEL_URI), final(str(bucket_model))
    assert len(remote) == 1 and remote[-1]["epoch"] == 1
    assert remote[-1]["val_accuracy"] == local[-1]["val_accuracy"]  # the bucket's weights, not a random init
    assert remote[-1]["train_loss"] == local[-1]["train_loss"]


def test_a_bucket_model_is_fetched_once_per_node_and_again_when_it_changes(as_admin, bucket_model, tmp_path,
                                                                           monkeypatch):
    import json

    from tune_jobs.remote import model as remote_model
    from tune_jobs.remote.model import staged_model

    first = staged_model(MODEL_URI)
    assert sorted(p.name for p in first.iterdir()) == sorted(p.name for p in bucket_model.iterdir())
    assert (first / "model.safetensors").read_bytes() == (bucket_model / "model.safetensors").read_bytes()
    copies = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache" / "remote").glob("*/*")}

    def no_copy(*args, **kwargs):
        raise AssertionError("fetched again")

    with monkeypatch.context() as m:
        m.setattr(remote_model, "fetched", no_copy)
        assert staged_model(MODEL_URI) == first  # the cache hit: listed, nothing copied
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cache" / "remote").glob("*/*")} == copies
    tokenizer_only = staged_model(MODEL_URI, weights=False)
    assert tokenizer_only != first and not list(tokenizer_only.glob("*.safetensors"))
    config = json.loads((bucket_model / "config.json").read_text())
    admin_client(as_admin).put_object(Bucket=BUCKET, Key="models/tiny-bert/config.json",
                                      Body=json.dumps({**config, "classifier_dropout": 0.2}).encode())
    try:
        changed = staged_model(MODEL_URI)
        assert changed != first and json.loads((changed / "config.json").read_text())["classifier_dropout"] == 0.2
        assert len(list((tmp_path / "cache" / "remote").glob("*/*"))) == len(copies) + 1  # only the changed object
    finally:
        admin_client(as_admin).put_object(Bucket=BUCKET, Key="models/tiny-bert/config.json",
                                          Body=(bucket_model / "config.json").read_bytes())


@pytest.mark.parametrize("model, needle", [
    ("s3://data/models/missing", "model: nothing under this prefix"),
    ("s3://data/models/no-config", "model: no config.json under this prefix"),
    ("s3://nobucket/models/tiny-bert", "model: the bucket does not exist"),
])
def test_a_bad_bucket_model_is_one_line_naming_model(s3, bucket_model, tmp_path, model, needle):
    env = dict(client_env(s3), LORA_SWEEP_CACHE=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-m", "tune_jobs", "plan", str(model_spec(tmp_path, model))], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and needle in lines[0], out.stderr[-2000:]
