"""Cluster configs (validated like `ray up` does, offline), real job submission, multi-node, node and driver loss."""

import copy
import json
import os
import signal
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import REPO, tiny_spec

SCENARIOS = ("scenarios:\n  - {name: upper, layers: upper, components: all}\n"
             "  - {name: vup, layers: all, components: v+up}\n")


def validate(cfg: dict) -> None:
    """What `ray up` runs before it contacts a cloud (private API; ray is pinned in pyproject.toml)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cfg)))


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-onprem.yaml"])
def test_cluster_configs_pass_ray_validation(name):
    validate(yaml.safe_load((REPO / name).read_text()))


def test_aws_config_shape():
    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    types = cfg["available_node_types"]
    assert types["head"]["resources"]["GPU"] == 0
    assert any(t["node_config"]["InstanceType"] == "g5.xlarge" for t in types.values())
    assert any(t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot" for t in types.values())
    for t in types.values():
        assert all(isinstance(v, int) for v in t["resources"].values())
    assert "--dashboard-host=127.0.0.1" in " ".join(cfg["head_start_ray_commands"])


def test_aws_nodes_boot_an_image_that_fits_the_pins_and_workers_get_only_s3():
    import json
    import subprocess

    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    for name, t in cfg["available_node_types"].items():
        image = t["node_config"]["ImageId"]
        assert image != "latest_dlami", name  # Ray 2.60 maps it to an Ubuntu 18.04 / CUDA 11.2 image
        assert image.startswith("resolve:ssm:/aws/service/deeplearning/ami/x86_64/") and "ubuntu-22.04" in image
        if t["resources"].get("GPU"):
            assert t["node_config"]["IamInstanceProfile"] == {"Name": "lora-sweep-worker"}
    assert any("sys.version_info >= (3, 10)" in c for c in cfg["setup_commands"])
    policy = json.loads((REPO / "cluster" / "worker-s3-policy.json").read_text())
    actions = {a for st in policy["Statement"] for a in st["Action"]}
    assert actions and all(a.startswith("s3:") for a in actions)
    script = REPO / "cluster" / "create-worker-profile.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0 and "lora-sweep-worker" in script.read_text()


@pytest.mark.parametrize("damage,match", [
    (lambda c: c.__setitem__("availble_node_types", c.pop("available_node_types")), "availble_node_types"),
    (lambda c: c["available_node_types"]["gpu_a10g_spot"]["resources"].__setitem__("GPU", 0.25), "integer"),
    (lambda c: c["available_node_types"]["head"].pop("node_config"), "node_config"),
])
def test_broken_aws_config_fails_validation(damage, match):
    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    damage(cfg)
    with pytest.raises(Exception, match=match):
        validate(cfg)


def test_onprem_config_must_not_declare_node_types():
    cfg = yaml.safe_load((REPO / "cluster-onprem.yaml").read_text())
    cfg["available_node_types"] = {"w": {"resources": {"CPU": 1}, "node_config": {}}}
    with pytest.raises(Exception):
        validate(cfg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ray_job_submit_runs_a_sweep_then_analyze(tmp_path, tiny_bert_dir):
    spec = tiny_spec(tmp_path, tiny_bert_dir, SCENARIOS)
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    gcs, dash = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must stay under 107 bytes
    head = subprocess.Popen(
        ["ray", "start", "--head", "--block", f"--port={gcs}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dash}", "--num-cpus=2", "--disable-usage-stats", f"--temp-dir={temp_dir}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        address = f"http://127.0.0.1:{dash}"
        deadline = time.time() + 120
        while time.time() < deadline:
            ok = subprocess.run(["ray", "job", "list", "--address", address], env=env, capture_output=True)
            if ok.returncode == 0:
                break
            time.sleep(2)
        out = subprocess.run(
            ["ray", "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
             "python", "-m", "tune_jobs.sweep", str(spec), "--storage", str(tmp_path / "store"), "--name", "job"],
            env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0 and "succeeded" in out.stdout.lower(), out.stdout[-3000:] + out.stderr[-2000:]
        assert "2 trials (2 TERMINATED)" in out.stdout
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # stops only the cluster this test started
        head.wait(timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)
    res = subprocess.run([sys.executable, "-m", "analysis.aggregate", str(tmp_path / "store" / "job"), "--out",
                          str(tmp_path / "pq")], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    trials = pq.read_table(tmp_path / "pq" / "trials.parquet").to_pandas()
    assert sorted(trials["trial_name"]) == ["upper-r4-rep0", "vup-r4-rep0"] and (trials["status"] == "TERMINATED").all()


@pytest.fixture()
def two_node_cluster():
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster, worker
    ray.shutdown()
    cluster.shutdown()


def _analyze(exp: Path, out: Path):
    from analysis.aggregate import aggregate

    trials, epochs, _ = aggregate([str(exp)], out)
    return trials.to_pandas(), epochs.to_pandas()


@pytest.mark.slow
def test_multi_node_sweep_uses_both_nodes(tmp_path, tiny_bert_dir, two_node_cluster):
    from tune_jobs.spec import load_study
    from tune_jobs.sweep import run_sweep

    cluster, worker = two_node_cluster
    study = load_study(tiny_spec(tmp_path, tiny_bert_dir, SCENARIOS, repeats=2, data={"train_limit": 300}))
    results = run_sweep(study, storage=str(tmp_path / "store"), name="multi", address=cluster.address)
    assert results.num_errors == 0
    trials, _ = _analyze(tmp_path / "store" / "multi", tmp_path / "pq")
    assert len(trials) == 4 and trials["node_id"].nunique() == 2
    assert worker.node_id in set(trials["node_id"])


@pytest.mark.slow
def test_node_loss_resumes_trial_from_its_checkpoint(tmp_path, tiny_bert_dir, two_node_cluster):
    from tune_jobs.spec import load_study
    from tune_jobs.sweep import run_sweep

    cluster, worker = two_node_cluster
    epochs = 5
    study = load_study(tiny_spec(tmp_path, tiny_bert_dir, SCENARIOS, data={"train_limit": 400},
                                 train={"epochs": epochs}, max_failures=2))
    exp = tmp_path / "store" / "loss"
    removed = {}

    def remove_worker_mid_trial():
        deadline = time.time() + 300
        while time.time() < deadline and not removed:
            for result in exp.glob("*/result.json"):
                rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
                if rows and rows[-1].get("node_id") == worker.node_id and 2 <= rows[-1]["epoch"] < epochs:
                    removed["trial"], removed["epoch"] = result.parent.name, rows[-1]["epoch"]
                    cluster.remove_node(worker)
                    return
            time.sleep(0.2)

    killer = threading.Thread(target=remove_worker_mid_trial, daemon=True)
    killer.start()
    results = run_sweep(study, storage=str(tmp_path / "store"), name="loss", address=cluster.address)
    killer.join(timeout=5)
    assert removed, "no trial ran on the worker node long enough to remove it"
    assert results.num_errors == 0
    raw = [json.loads(line)["epoch"] for line in (exp / removed["trial"] / "result.json").read_text().splitlines()]
    assert raw == list(range(1, epochs + 1))  # continued after its checkpoint: no epoch repeated, none missing
    trials, epoch_rows = _analyze(exp, tmp_path / "pq")
    assert sorted(trials["trial_name"]) == ["upper-r4-rep0", "vup-r4-rep0"] and (trials["status"] == "TERMINATED").all()
    moved = trials.set_index("trial_name").loc[removed["trial"]]
    assert moved["num_restarts"] >= 1 and moved["node_id"] != worker.node_id
    for trial_id, g in epoch_rows.groupby("trial_id"):
        assert g["epoch"].tolist() == list(range(1, epochs + 1))
