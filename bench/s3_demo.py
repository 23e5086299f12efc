"""The demo study read from a bucket, against the same study read from $GLUE_DIR (issue 22).

Uploads the real SST-2 folder to a local S3 endpoint (moto's server on loopback) as s3://glue/SST-2, runs
`lora-sweep run SPEC --profile demo` once with GLUE_DIR=s3://glue and once with the local GLUE_DIR, and compares
every trial's final metrics (they must be equal: the same rows, the same seeds) and the wall times.

    python bench/s3_demo.py                                         # the quickstart (layers.yaml), 8 trials
    python bench/s3_demo.py --spec tune_jobs/experiments/rank.yaml
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

import local_s3  # noqa: E402

METRICS = ("val_accuracy", "val_loss", "train_loss")


def run(spec: str, glue_dir: str, storage: Path, name: str, env: dict) -> tuple[dict, float]:
    """Final metrics per trial and the wall time of one sweep."""
    started = time.time()
    subprocess.run([sys.executable, "-m", "tune_jobs.sweep", spec, "--profile", "demo", "--storage", str(storage),
                    "--name", name], cwd=REPO, env=dict(env, GLUE_DIR=glue_dir), check=True)
    wall = time.time() - started
    finals = {}
    for result in (storage / name).glob("*/result.json"):
        last = json.loads(result.read_text().splitlines()[-1])
        finals[result.parent.name] = {m: last.get(m) for m in METRICS}
    return finals, wall


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", default="tune_jobs/experiments/layers.yaml")
    p.add_argument("--glue-dir", default=os.environ.get("GLUE_DIR", str(REPO.parent / "shared" / "data")))
    args = p.parse_args()
    sst2 = Path(args.glue_dir) / "sst2"
    work = Path(tempfile.mkdtemp(prefix="lora-sweep-s3-demo-"))
    server, endpoint = local_s3.start({f"glue/SST-2/{f}": (sst2 / f).read_bytes() for f in ("train.tsv", "dev.tsv")})
    env = dict(os.environ, **local_s3.KEYS, AWS_ENDPOINT_URL=endpoint, RAY_USAGE_STATS_ENABLED="0")
    try:
        bucket, t_bucket = run(args.spec, "s3://glue", work / "store", "bucket",
                               dict(env, LORA_SWEEP_CACHE=str(work / "cache-bucket")))
        local, t_local = run(args.spec, args.glue_dir, work / "store", "local",
                             dict(env, LORA_SWEEP_CACHE=str(work / "cache-local")))
    finally:
        server.terminate()
    same = [t for t in local if bucket.get(t) == local[t]]
    print(f"{len(local)} trials from $GLUE_DIR, {len(bucket)} from s3://glue: {len(same)} with identical final "
          f"{', '.join(METRICS)}")
    for t in sorted(local):
        there = bucket.get(t, {}).get("val_accuracy", float("nan"))
        print(f"  {t}: val_accuracy local {local[t]['val_accuracy']:.4f}, bucket {there:.4f}")
    print(f"wall: bucket {t_bucket / 60:.1f} min, local {t_local / 60:.1f} min ({t_bucket / t_local:.2f}x)")
    return 0 if len(same) == len(local) == len(bucket) else 1


if __name__ == "__main__":
    sys.exit(main())
