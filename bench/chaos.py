"""A sweep that loses worker nodes again and again (issue 22): nothing lost, nothing run twice.

A loopback Ray cluster (`ray.cluster_utils.Cluster`: a head without CPUs for trials and 3 one-CPU workers) runs a
study of a tiny random BERT that reads its data from a local S3 endpoint (moto's server on loopback) and writes its
results there too. Every `--interval` seconds a worker node is removed (its trials die with it) and a fresh one is
added, `--kills` times. Then, from the experiment on S3: every trial must end TERMINATED, each epoch must appear
exactly once in each result.json (a trial continues from its last epoch's checkpoint, never from an earlier one,
and a finished trial never runs again), so the epochs recomputed are at most the epoch in flight of each killed
trial. The same study runs once undisturbed for the wall-time ratio.

    python bench/chaos.py                        # 24 trials, 6 kills every 8 s
    python bench/chaos.py --trials 8 --kills 3   # shorter
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
SST2 = Path(os.environ.get("GLUE_DIR", REPO.parent / "shared" / "data")) / "sst2"

import local_s3  # noqa: E402


def write_spec(workdir: Path, model_dir: Path, trials: int, epochs: int) -> Path:
    import yaml

    ranks = [1, 2, 4, 8, 16, 32][: max(1, trials // 4)]
    repeats = max(1, trials // (2 * len(ranks)))
    spec = {"name": "chaos", "model": str(model_dir), "model_init": "random",
            "data": {"dataset": "s3://data/sst2", "train_limit": 400, "max_length": 32},
            "train": {"epochs": epochs, "learning_rate": 3e-3, "batch_size": 16, "eval_batch_size": 256},
            "lora": {"ranks": ranks, "dropout": 0.1}, "repeats": repeats, "base_seed": 1, "resources": {"cpu": 1},
            "max_failures": 20,
            "scenarios": [{"name": "all", "layers": "all", "components": "all"},
                          {"name": "vup", "layers": "all", "components": "v+up"}]}
    path = workdir / "chaos.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def tiny_model(workdir: Path) -> Path:
    from transformers import BertConfig

    from lora_ext.model_configs import random_model_dir

    return Path(random_model_dir(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                            num_attention_heads=2, intermediate_size=64,
                                            max_position_embeddings=128), workdir / "tiny"))


def run_study(spec: Path, storage: str, name: str, kills: int, interval: float, log: Path, workers: int = 3) -> dict:
    """The study (`python -m tune_jobs.sweep --address`, as `ray job submit` runs it) on a fresh loopback cluster;
    with kills > 0 this process removes a worker and adds a fresh one every `interval` seconds meanwhile (Ray starts
    nodes from the main thread only)."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(workers)]
    cluster.wait_for_nodes()
    killed = 0
    started = last = time.time()
    cmd = [sys.executable, "-m", "tune_jobs.sweep", str(spec), "--storage", storage, "--name", name,
           "--address", cluster.address]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    try:
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
            while proc.poll() is None:
                if killed < kills and time.time() - last >= interval:
                    cluster.remove_node(nodes.pop(killed % len(nodes)))  # its running trials die with it
                    nodes.append(cluster.add_node(num_cpus=1))
                    killed, last = killed + 1, time.time()
                time.sleep(0.2)
        wall = time.time() - started
    finally:
        ray.shutdown()
        cluster.shutdown()
    return {"wall_s": wall, "kills": killed, "errors": proc.returncode != 0}


def check(storage: str, name: str, epochs: int) -> dict:
    """Statuses, restarts and each trial's reported epochs, read back from the experiment on S3."""
    import pyarrow.fs as pafs

    from analysis.aggregate import aggregate

    with tempfile.TemporaryDirectory() as out:
        trials, _, _ = aggregate([f"{storage}/{name}"], out)
    trials = trials.to_pandas()
    fs, root = pafs.FileSystem.from_uri(f"{storage}/{name}")
    repeated = missing = 0
    for tdir in trials["trial_dir"]:
        with fs.open_input_stream(f"{tdir}/result.json") as fh:
            seen = [json.loads(line)["epoch"] for line in fh.read().decode().splitlines() if line.strip()]
        repeated += len(seen) - len(set(seen))
        missing += len(set(range(1, epochs + 1)) - set(seen))
    hit = trials[trials["num_restarts"] > 0]
    return {"trials": len(trials), "terminated": int((trials["status"] == "TERMINATED").sum()),
            "trials_hit": len(hit), "restarts": int(trials["num_restarts"].sum()), "epochs_repeated": repeated,
            "epochs_missing": missing}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=24)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--kills", type=int, default=6)
    p.add_argument("--interval", type=float, default=8.0, help="seconds between node removals")
    p.add_argument("--no-baseline", action="store_true", help="skip the undisturbed run")
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="lora-sweep-chaos-"))
    os.environ.update(local_s3.KEYS, LORA_SWEEP_CACHE=str(workdir / "cache"), RAY_USAGE_STATS_ENABLED="0")
    train = (SST2 / "train.tsv").read_bytes().splitlines(keepends=True)
    server, endpoint = local_s3.start({"data/sst2/train.tsv": b"".join(train[:801]),
                                       "data/sst2/dev.tsv": (SST2 / "dev.tsv").read_bytes()}, buckets=("results",))
    os.environ["AWS_ENDPOINT_URL"] = endpoint  # before the cluster starts: its nodes inherit it
    try:
        spec = write_spec(workdir, tiny_model(workdir), args.trials, args.epochs)
        storage = "s3://results/sweeps"
        base = None if args.no_baseline else run_study(spec, storage, "calm", 0, args.interval, workdir / "calm.log")
        shaken = run_study(spec, storage, "chaos", args.kills, args.interval, workdir / "chaos.log")
        figures = check(storage, "chaos", args.epochs)
    finally:
        server.terminate()
    ok = (figures["terminated"] == figures["trials"] and figures["epochs_repeated"] == 0
          and figures["epochs_missing"] == 0 and shaken["errors"] == 0)
    print(f"chaos: {shaken['kills']} node removals every {args.interval:g} s; {figures['trials']} trials, "
          f"{figures['terminated']} TERMINATED; {figures['trials_hit']} trials hit ({figures['restarts']} restarts); "
          f"epochs repeated in result.json {figures['epochs_repeated']}, missing {figures['epochs_missing']}; "
          f"epochs recomputed <= {figures['restarts']} (the epoch in flight of each restart)")
    if base is not None:
        print(f"wall: {shaken['wall_s']:.0f} s with removals against {base['wall_s']:.0f} s undisturbed "
              f"({shaken['wall_s'] / base['wall_s']:.2f}x)")
    print("result: " + ("nothing lost, nothing run twice" if ok else f"FAILED (sweep log: {workdir / 'chaos.log'})"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
