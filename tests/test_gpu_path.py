"""The GPU path of a trial and of a sweep."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, tiny_spec

# ---------------------------------------------------------------------------------------------------------------------
# Under Ray (issue 29, item 1): a trial whose node has no usable GPU errors once with its one line and is never retried
# (other errors are, as max_failures says); trials that no node could hold make the progress line say so.
# ---------------------------------------------------------------------------------------------------------------------

HEAD = "scenarios:\n  - {name: head, baseline: classifier_only}\n"


def _no_cuda() -> bool:
    import torch

    return not torch.cuda.is_available()


@pytest.fixture()
def fake_gpu_cluster():
    """A local Ray that offers GPU 1 on a machine whose torch sees no CUDA: Ray schedules a `gpu: 1` trial, and the
    trial finds no usable device."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 1})
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _failures(exp: Path) -> dict[str, tuple[str, int]]:
    """Trial folder -> (status, num_failures) from Ray's newest experiment state."""
    import pyarrow.fs as pafs

    from record.ray_files import open_experiment, trial_states

    fs, path = open_experiment(str(exp))
    return {name: (s["status"], s["num_failures"])
            for name, s in trial_states(fs, path, fs.get_file_info(pafs.FileSelector(path))).items()}


@pytest.mark.slow
@pytest.mark.skipif(not _no_cuda(), reason="needs a machine where torch sees no CUDA device")
def test_tune_retries_other_errors_but_not_a_missing_gpu(tmp_path, fake_gpu_cluster):
    """Tune's own decision, with the sweep's rule installed: max_failures 2 retries a ValueError twice (3 failures),
    a DeviceUnavailable not at all (1 failure)."""
    import ray
    from ray import tune

    from tune_jobs.sweep.runner import never_retry_what_a_retry_cannot_fix

    ray.init(address=fake_gpu_cluster.address)
    never_retry_what_a_retry_cannot_fix()

    def trainable(config):
        from tune_jobs.train.device import DeviceUnavailable

        raise DeviceUnavailable("no CUDA here") if config["kind"] == "device" else ValueError("something else")

    results = tune.Tuner(trainable, param_space={"kind": tune.grid_search(["device", "other"])},
                         run_config=tune.RunConfig(name="rule", storage_path=str(tmp_path), verbose=0,
                                                   failure_config=tune.FailureConfig(max_failures=2))).fit()
    assert results.num_errors == 2
    failures = {r.config["kind"]: _failures(tmp_path / "rule")[Path(r.path).name] for r in results}
    assert failures == {"device": ("ERROR", 1), "other": ("ERROR", 3)}


@pytest.mark.slow
@pytest.mark.skipif(not _no_cuda(), reason="needs a machine where torch sees no CUDA device")
def test_sweep_trial_on_a_node_without_cuda_errors_once_with_its_line(tmp_path, tiny_bert_dir, fake_gpu_cluster,
                                                                      capsys):
    from tune_jobs.study.spec import load_study
    from tune_jobs.sweep.runner import run_sweep

    study = load_study(tiny_spec(tmp_path, tiny_bert_dir, HEAD, resources={"cpu": 1, "gpu": 1}, max_failures=2))
    results = run_sweep(study, storage=str(tmp_path / "store"), name="nogpu", address=fake_gpu_cluster.address)
    out = capsys.readouterr().out
    assert results.num_errors == 1
    exp = tmp_path / "store" / "nogpu"
    assert _failures(exp) == {"head-rep0": ("ERROR", 1)}  # max_failures 2 would have run it three times
    error_txt = (exp / "head-rep0" / "error.txt").read_text()
    assert error_txt.count("Failure #") == 1 and "DeviceUnavailable" in error_txt
    line = "DeviceUnavailable: resources.gpu: the trial asks for a GPU but node "
    assert f"ERROR in head-rep0 (not retried): {line}" in out, out  # the progress line
    assert "is not a CUDA build" in out and "retrying" not in out
    assert "1 trials (1 ERROR)" in out and f"  errored: head-rep0: {line}" in out  # the summary
    assert not (exp / "head-rep0" / "result.json").read_text().strip()  # nothing trained, nothing reported


def test_pending_hint_names_what_no_node_offers():
    """The hint's wording per case, on nodes' total resources as `ray.nodes()` gives them (no Ray needed)."""
    from ray import tune
    from ray.tune.experiment import Trial

    from tune_jobs.sweep.progress import pending_hint

    def pending(resources: dict) -> Trial:
        trial = Trial("t", stub=True, placement_group_factory=tune.PlacementGroupFactory([resources]))
        trial.create_placement_group_factory()  # as Tune does once the trial's config is resolved
        return trial

    cpu_only = [{"CPU": 2.0, "memory": 1e9}]
    two_gpu_nodes = [{"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 1.0}]
    assert pending_hint([pending({"CPU": 1, "GPU": 1})] * 2, cpu_only) == \
        "2 pending: no node offers gpu 1 (cluster has GPU 0); add GPU workers or lower resources.gpu"
    assert pending_hint([pending({"CPU": 1, "GPU": 2})], two_gpu_nodes) == \
        "1 pending: no node offers gpu 2 (largest node has GPU 1); add GPU workers or lower resources.gpu"
    assert pending_hint([pending({"CPU": 8})], two_gpu_nodes) == \
        "1 pending: no node offers cpu 8 (largest node has CPU 4); add larger workers or lower resources.cpu"
    assert pending_hint([pending({"CPU": 1, "GPU": 0.5})], two_gpu_nodes) is None  # a fraction one node offers
    assert pending_hint([pending({"CPU": 1, "GPU": 1})], cpu_only + two_gpu_nodes) is None


def _sweep_until(spec: Path, args: list, wanted: str, timeout_s: float = 240) -> tuple[str, bool]:
    """Run `python -m tune_jobs.sweep` until a stdout line contains `wanted`, then Ctrl-C it (Tune stops cleanly)."""
    import signal

    env = dict(os.environ, RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "token"))
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-m", "tune_jobs.sweep", str(spec), *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    deadline, seen = time.time() + timeout_s, False
    while time.time() < deadline and proc.poll() is None and not (seen := any(wanted in x for x in list(lines))):
        time.sleep(0.5)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    return "".join(lines), seen


@pytest.mark.slow
def test_sweep_whose_trials_no_node_can_hold_says_so(tmp_path, tiny_bert_dir):
    """A local Ray without GPUs and a spec asking for `gpu: 1`: the trial stays pending, and the progress line says
    why (then the test stops the sweep)."""
    if not _no_cuda():
        pytest.skip("a local Ray on this machine offers a GPU")
    spec = tiny_spec(tmp_path, tiny_bert_dir, HEAD, resources={"cpu": 1, "gpu": 1})
    out, seen = _sweep_until(spec, ["--storage", tmp_path / "store", "--name", "pending"], "no node offers")
    assert seen, out[-3000:]
    line = next(x for x in out.splitlines() if "no node offers" in x)
    assert "running 0 | pending 1 |" in line, line
    assert line.endswith("1 pending: no node offers gpu 1 (cluster has GPU 0); add GPU workers or lower resources.gpu")
    assert not any(r.read_text().strip() for r in (tmp_path / "store" / "pending").glob("*/result.json"))
