"""analysis/: real Ray Tune experiments (incl. an ERROR trial and a restored trial) -> Parquet -> report."""

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from analysis.stats import holm, pareto_front
from tune_jobs.cli import main

EPOCHS = 4


def tiny_trainable(config):
    """Reports lora-sweep's metric names; `flaky` fails once after epoch 2, `broken` always fails at epoch 2."""
    import tempfile

    from ray import tune

    start = 0
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            start = json.loads((Path(d) / "state.json").read_text())["epoch"]
    for epoch in range(start + 1, EPOCHS + 1):
        if config["scenario"] == "broken" and epoch == 2:
            raise ValueError("loss became nan (test)")
        marker = Path(config["marker_dir"]) / f"{config['scenario']}-{config['repeat']}"
        if config["scenario"] == "flaky" and epoch == 3 and not marker.exists():
            marker.write_text("failed once")
            raise RuntimeError("node lost (test)")
        acc = 0.6 + 0.05 * epoch + 0.01 * config["repeat"] + (0.1 if config["scenario"] == "good" else 0)
        metrics = {"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 1.1 / epoch, "val_accuracy": acc,
                   "train_samples_per_s": 100.0 + config["repeat"], "epoch_time_s": 0.1, "peak_memory_mb": 50.0 + epoch,
                   "memory_kind": "cpu_rss", "trainable_params": 1000 * config["r"], "total_params": 10 ** 6,
                   "params_relative_pct": 0.1 * config["r"], "padding_efficiency": 0.95, "checkpoint_mb": 0.01}
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "state.json").write_text(json.dumps({"epoch": epoch}))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    import ray
    from ray import tune

    root = tmp_path_factory.mktemp("exp")
    (root / "markers").mkdir()
    space = {
        "study": "fixture", "scenario": tune.grid_search(["good", "plain", "flaky", "broken"]),
        "repeat": tune.grid_search([0, 1, 2]), "r": 8, "layers": [0, 1], "components": ["v", "up"], "baseline": None,
        "seed": 42, "model": "tiny", "learning_rate": 1e-3, "gradient_checkpointing": False,
        "marker_dir": str(root / "markers"),
        "trial_name": tune.sample_from(lambda config: f"{config['scenario']}-rep{config['repeat']}"),
    }
    space_names = lambda t: f"{t.config['scenario']}-rep{t.config['repeat']}"  # noqa: E731
    here = Path(__file__).resolve().parent  # workers must import this module (as pytest named it)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": f"{here.parent}:{here}"}})
    try:
        tune.Tuner(
            tune.with_resources(tiny_trainable, {"cpu": 1}), param_space=space,
            tune_config=tune.TuneConfig(trial_dirname_creator=space_names),
            run_config=tune.RunConfig(name="fixture", storage_path=str(root), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=1),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
        ).fit()
    finally:
        ray.shutdown()
    return root / "fixture"


def analyze(*args) -> int:
    return main(["analyze", *map(str, args)])


def test_trials_and_epochs_parquet(experiment, tmp_path, capsys):
    assert analyze(experiment, "--out", tmp_path) == 0
    assert "12 trials (3 ERROR, 9 TERMINATED)" in capsys.readouterr().out
    trials = pq.read_table(tmp_path / "trials.parquet").to_pandas()
    epochs = pq.read_table(tmp_path / "epochs.parquet").to_pandas()
    assert len(trials) == 12
    broken = trials[trials["scenario"] == "broken"]
    assert (broken["status"] == "ERROR").all() and broken["error"].str.contains("nan").all()
    assert (broken["epochs_completed"] == 1).all()
    flaky = trials[trials["scenario"] == "flaky"]
    assert (flaky["status"] == "TERMINATED").all() and (flaky["num_restarts"] == 1).all()
    for _, t in flaky.iterrows():  # restored from the epoch-2 checkpoint: each epoch once, in order
        assert epochs[epochs["trial_id"] == t["trial_id"]]["epoch"].tolist() == [1, 2, 3, 4]
    assert len(epochs) == 9 * EPOCHS + 3
    good = trials[trials["scenario"] == "good"].sort_values("repeat")
    assert good["final_val_accuracy"].round(4).tolist() == [0.9, 0.91, 0.92]
    assert list(good["layers"].iloc[0]) == [0, 1] and list(good["components"].iloc[0]) == ["v", "up"]
    assert good["last_checkpoint"].str.contains("checkpoint_").all()
    assert good["hostname"].notna().all() and good["mean_train_samples_per_s"].notna().all()
    assert json.loads(good["config_extra"].iloc[0]) == {"marker_dir": str(experiment.parent / "markers")}
    meta = pq.read_schema(tmp_path / "trials.parquet").metadata
    assert meta[b"lora_sweep.schema_version"] == b"2" and b"ray" in meta[b"lora_sweep.versions"]


def test_rerun_gives_identical_files_and_several_experiments_merge(experiment, tmp_path):
    analyze(experiment, "--out", tmp_path / "a")
    analyze(experiment, "--out", tmp_path / "b")
    for name in ("trials.parquet", "epochs.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    copy = tmp_path / "second"
    shutil.copytree(experiment, copy)
    assert analyze(experiment, copy, "--out", tmp_path / "c") == 0
    trials = pq.read_table(tmp_path / "c" / "trials.parquet").to_pandas()
    assert sorted(trials["experiment"].unique()) == ["fixture", "second"] and len(trials) == 24


def test_corrupt_result_line_flags_that_trial_only(experiment, tmp_path, capsys):
    copy = tmp_path / "exp"
    shutil.copytree(experiment, copy)
    result = copy / "good-rep0" / "result.json"
    lines = result.read_text().splitlines()
    result.write_text("\n".join(lines[:2] + [lines[2][:40]]) + "\n")  # truncated third report
    assert analyze(copy, "--out", tmp_path / "out") == 0
    err = capsys.readouterr().err
    assert "good-rep0/result.json:3: corrupt or truncated line" in err and "the rest is analysed" in err
    trials = pq.read_table(tmp_path / "out" / "trials.parquet").to_pandas().set_index("trial_name")
    assert trials.loc["good-rep0", "problem"].startswith(str(result)) and trials.loc["good-rep0", "epochs_completed"] == 2
    assert trials["problem"].notna().sum() == 1


@pytest.mark.parametrize("damage,needle", [
    ("not_experiment", "not a Ray Tune experiment"),
    ("empty", "empty experiment"),
    ("no_params", "trial folder without params.json"),
    ("missing", "not a directory"),
])
def test_bad_input_exit_2_and_no_partial_parquet(experiment, tmp_path, capsys, damage, needle):
    target = tmp_path / "exp"
    if damage == "not_experiment":
        target.mkdir()
        (target / "something.txt").write_text("hi")
    elif damage == "empty":
        target.mkdir()
        (target / "experiment_state-2026.json").write_text(json.dumps({"trial_data": []}))
    elif damage == "no_params":
        shutil.copytree(experiment, target)
        (target / "plain-rep1" / "params.json").unlink()
    out = tmp_path / "out"
    assert analyze(target, "--out", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and str(target) in err[0]
    assert not (out / "trials.parquet").exists() and not (out / "epochs.parquet").exists()


def test_report_tables_comparisons_and_plots(experiment, tmp_path, capsys):
    analyze(experiment, "--out", tmp_path / "pq")
    assert main(["report", str(tmp_path / "pq"), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    for png in ("accuracy_by_scenario", "accuracy_vs_params", "loss_curves"):
        assert (tmp_path / "rep" / f"{png}.png").stat().st_size > 5000
        assert f"![{png}]({png}.png)" in md
    assert not (tmp_path / "rep" / "memory_by_layer.png").exists()  # no single-layer trials in this study
    assert "good vs plain: Δ = +0.100" in md
    assert "broken-rep0" in md and "ERROR" in md  # errored trials listed, not averaged in
    import pandas as pd
    summary = pd.read_csv(tmp_path / "rep" / "summary.csv").set_index("group")
    assert set(summary.index) == {"good", "plain", "flaky"} and summary.loc["good", "n"] == 3
    assert summary.loc["good", "mean_val_accuracy"] == pytest.approx(0.91)
    assert summary.loc["good", "ci95_low"] <= 0.91 <= summary.loc["good", "ci95_high"]
    assert main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "r2")]) == 2


def test_holm_and_pareto():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([float("nan"), 0.02])[1] == pytest.approx(0.02)
    assert pareto_front([1, 2, 3, 2], [0.8, 0.9, 0.85, 0.7]).tolist() == [True, True, False, False]


def test_memory_by_layer_plot_for_single_layer_study():
    import pandas as pd

    from analysis.plots import memory_by_layer

    rows = [{"layers": [i], "baseline": None, "gradient_checkpointing": gc, "peak_memory_mb": 100.0 + i - 50 * gc,
             "memory_kind": "cuda_allocated"} for i in range(4) for gc in (False, True)]
    fig = memory_by_layer(pd.DataFrame(rows))
    lines = fig.axes[0].get_lines()
    assert len(lines) == 2 and list(lines[0].get_xdata()) == [0, 1, 2, 3]
    assert list(lines[1].get_ydata()) == [50.0, 51.0, 52.0, 53.0]


def test_analyze_reads_an_experiment_on_s3(experiment, tmp_path, monkeypatch, capsys):
    """s3:// through pyarrow's S3 filesystem, against a local S3 endpoint (moto) on loopback."""
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = pafs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http", region="us-east-1",
                               allow_bucket_creation=True)
        s3.create_dir("results")
        pafs.copy_files(str(experiment), "results/sweeps/fixture", destination_filesystem=s3)
        uri = f"s3://results/sweeps/fixture?endpoint_override={host}:{port}&scheme=http&region=us-east-1"
        assert analyze(uri, "--out", tmp_path) == 0
    finally:
        server.stop()
    trials = pq.read_table(tmp_path / "trials.parquet").to_pandas()
    local = pq.read_table(_local_reference(experiment, tmp_path)).to_pandas()
    assert len(trials) == 12 and set(trials["experiment"]) == {"fixture"}
    cols = ["trial_name", "status", "final_val_accuracy", "epochs_completed"]
    assert trials.sort_values("trial_name")[cols].reset_index(drop=True).equals(
        local.sort_values("trial_name")[cols].reset_index(drop=True))


def _local_reference(experiment, tmp_path):
    analyze(experiment, "--out", tmp_path / "local")
    return tmp_path / "local" / "trials.parquet"


def test_schema_knows_every_trial_config_field():
    from dataclasses import fields

    from analysis.schema import CONFIG_NAMES
    from tune_jobs.spec import TrialConfig

    assert sorted(CONFIG_NAMES) == sorted(f.name for f in fields(TrialConfig))
