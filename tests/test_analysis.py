"""analysis/: real Ray Tune experiments (incl. an ERROR trial and a restored trial) -> Parquet -> report."""

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from analysis.schema import SCHEMA_VERSION
from analysis.stats import pareto_front
from tune_jobs.cli import main

EPOCHS = 4
COMPONENTS_OF = {"good": ["v", "up"], "plain": ["q"], "flaky": ["k"], "broken": ["o"]}  # one configuration each


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
        noise = 0.004 * (((config["repeat"] + 1) * len(config["scenario"])) % 3 - 1)  # differs by scenario and seed
        acc = 0.6 + 0.05 * epoch + 0.01 * config["repeat"] + (0.1 if config["scenario"] == "good" else 0) + noise
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
        "repeat": tune.grid_search([0, 1, 2]), "r": 8, "layers": [0, 1], "baseline": None,
        "components": tune.sample_from(lambda config: COMPONENTS_OF[config["scenario"]]),
        "seed": tune.sample_from(lambda config: 42 + config["repeat"]), "model": "tiny", "learning_rate": 1e-3,
        "gradient_checkpointing": False,
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
    assert good["final_val_accuracy"].round(4).tolist() == [0.9, 0.914, 0.916]
    assert list(good["layers"].iloc[0]) == [0, 1] and list(good["components"].iloc[0]) == ["v", "up"]
    assert good["last_checkpoint"].str.contains("checkpoint_").all()
    assert good["hostname"].notna().all() and good["mean_train_samples_per_s"].notna().all()
    assert json.loads(good["config_extra"].iloc[0]) == {"marker_dir": str(experiment.parent / "markers")}
    meta = pq.read_schema(tmp_path / "trials.parquet").metadata
    assert meta[b"lora_sweep.schema_version"] == SCHEMA_VERSION.encode()
    assert b"ray" in meta[b"lora_sweep.analysis_versions"] and b"lora_sweep.versions" not in meta  # analysing machine's
    # reports without provenance (as before lora-sweep recorded it) and without val_mcc still analyse: null columns
    assert trials["torch_version"].isna().all() and trials["git_commit"].isna().all()
    assert (trials["final_val_mcc"].isna().all()
            and good["best_val_loss"].round(4).tolist() == [round(1.1 / EPOCHS, 4)] * 3)


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
    assert (trials.loc["good-rep0", "problem"].startswith(str(result))
            and trials.loc["good-rep0", "epochs_completed"] == 2)
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
    import numpy as np
    import pandas as pd
    from scipy import stats as sps

    analyze(experiment, "--out", tmp_path / "pq")
    assert main(["report", str(tmp_path / "pq"), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    for png in ("accuracy_by_scenario", "accuracy_vs_params", "loss_curves", "forest"):
        assert (tmp_path / "rep" / f"{png}.png").stat().st_size > 5000
        assert f"![{png}]({png}.png)" in md
    assert not (tmp_path / "rep" / "memory_by_layer.png").exists()  # no single-layer trials in this study
    assert "good r=8 vs plain r=8: Δ = +0.1000: good r=8 is better" in md
    assert "broken-rep0" in md and "ERROR" in md  # errored trials listed, not averaged in
    summary = pd.read_csv(tmp_path / "rep" / "summary.csv").set_index("group")
    assert set(summary.index) == {"good r=8", "plain r=8", "flaky r=8"} and (summary["n"] == 3).all()
    trials = pq.read_table(tmp_path / "pq" / "trials.parquet").to_pandas()
    good = trials[trials["scenario"] == "good"]["final_val_accuracy"].to_numpy()
    ci = sps.ttest_1samp(good, 0).confidence_interval(0.95)
    assert summary.loc["good r=8", "mean"] == pytest.approx(good.mean())
    assert ((summary.loc["good r=8", "ci95_low"], summary.loc["good r=8", "ci95_high"])
            == pytest.approx((ci.low, ci.high)))
    pairs = pd.read_csv(tmp_path / "rep" / "comparisons.csv")
    assert len(pairs) == 3 and set(pairs["test"]) == {"paired-t"} and (pairs["n_seeds"] == 3).all()
    same = pairs.set_index(["a", "b"]).loc[("flaky r=8", "plain r=8")]  # the fixture gives both the same values
    assert same["verdict"] == "undetermined" and np.isnan(same["df"])  # no step known: ties are not certainty
    assert (pairs["ci_level"] == 1 - 0.05 / 3).all()  # one family: simultaneous intervals
    assert main(["report", str(tmp_path / "pq"), "--out", str(tmp_path / "blocked"), "--test", "blocked"]) == 0
    pairs = pd.read_csv(tmp_path / "blocked" / "comparisons.csv")
    assert set(pairs["test"]) == {"blocked"} and (pairs["df"] == 4).all()  # (3 groups - 1) x (3 seeds - 1)
    assert main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "r2")]) == 2


def test_report_takes_the_experiment_itself_and_prints_the_answer(experiment, tmp_path, capsys, monkeypatch):
    """`report EXPERIMENT`: analysed into lora_sweep_reports/NAME under the working directory (never into Ray's
    folder), the report beside the Parquet files, and the headline in the terminal; an analysis folder still works,
    its report by default beside its Parquet files."""
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in Path(experiment).iterdir())
    assert main(["report", str(experiment)]) == 0
    said = capsys.readouterr().out
    folder = tmp_path / "lora_sweep_reports" / Path(experiment).name
    assert {"trials.parquet", "epochs.parquet", "predictions.parquet", "report.html", "summary.csv"} <= \
        {p.name for p in folder.iterdir()}
    assert sorted(p.name for p in Path(experiment).iterdir()) == before  # nothing written into Ray's folder
    assert said.startswith("analyze: 12 trials") and "Best mean: good r=8, val_accuracy" in said
    assert "Better than good r=8" not in said and "Worse than good r=8: " in said
    assert f"open {Path('lora_sweep_reports') / Path(experiment).name / 'report.html'}" in said
    assert "`" not in said  # no markdown in a terminal
    assert main(["report", str(folder)]) == 0 and "Best mean: good r=8" in capsys.readouterr().out
    for argv, needle in (([str(folder), str(experiment)], "DIR"),
                         ([str(experiment), "--out", str(Path(experiment) / "mine")], "--out"),
                         ([str(experiment), "--out", "s3://bucket/rep"], "--out: must be a local folder"),
                         ([str(experiment), "--out", "fresh", "--metric", "val_acuracy"], "did you mean"),
                         ([str(experiment), "--out", "fresh", "--reference", "nope"], "--reference")):
        assert main(["report", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0]
    assert not (Path(experiment) / "mine").exists() and not (tmp_path / "fresh").exists()  # options checked first
    assert not (tmp_path / "s3:").exists()


def test_report_html_embeds_every_figure_and_one_row_per_group(experiment, tmp_path):
    from html.parser import HTMLParser

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.images, self.table, self.summary_rows = [], None, 0

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "img":
                self.images.append(attrs.get("src", ""))
            elif tag == "table":
                self.table = attrs.get("id")
            elif tag == "tr" and self.table == "summary":
                self.summary_rows += 1

        def handle_endtag(self, tag):
            if tag == "table":
                self.table = None

    analyze(experiment, "--out", tmp_path / "pq")
    assert main(["report", str(tmp_path / "pq"), "--out", str(tmp_path / "rep")]) == 0
    page = Page()
    page.feed((tmp_path / "rep" / "report.html").read_text())
    pngs = sorted(p.stem for p in (tmp_path / "rep").glob("*.png"))
    assert len(page.images) == len(pngs) >= 4
    assert all(src.startswith("data:image/png;base64,iVBOR") for src in page.images)  # inline PNG, no file links
    assert page.summary_rows == 1 + 3  # header + one row per group


def test_duplicate_runs_across_experiments_counted_once(experiment, tmp_path):
    import pandas as pd

    copy = tmp_path / "copy_of_fixture"
    shutil.copytree(experiment, copy)
    analyze(experiment, copy, "--out", tmp_path / "pq")
    assert main(["report", str(tmp_path / "pq"), "--out", str(tmp_path / "rep")]) == 0
    summary = pd.read_csv(tmp_path / "rep" / "summary.csv")
    assert len(summary) == 3 and (summary["n"] == 3).all()  # not 6: the copy's runs are the same runs
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "24 trials in 2 experiment(s)" in md and "9 duplicate run(s) dropped" in md


def test_report_bad_options_are_one_line(experiment, tmp_path, capsys):
    analyze(experiment, "--out", tmp_path / "pq")
    capsys.readouterr()
    for flags, needle in ((["--metric", "best_val_accuracy"], "optimistic"), (["--metric", "val_bleu"], "not a metric"),
                          (["--metric", "peak_memory_mb"], "not a metric column"),
                          (["--metric", "train_samples_per_s"], "not a metric column"),
                          (["--metric", "val_f1"], "no trial reports val_f1: experiment(s) fixture lack it"),
                          (["--reference", "nope"], "--reference"), (["--margin", "0"], "--margin")):
        assert main(["report", str(tmp_path / "pq"), "--out", str(tmp_path / "rep"), *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], (flags, err)
    assert not (tmp_path / "rep").exists()


def test_analyze_and_report_never_import_training_libraries(experiment, tmp_path):
    import subprocess
    import sys

    code = ("import sys\nfrom tune_jobs.cli import main\n"
            f"assert main(['analyze', {str(experiment)!r}, '--out', {str(tmp_path)!r}]) == 0\n"
            f"assert main(['report', {str(tmp_path)!r}, '--out', {str(tmp_path / 'rep')!r}]) == 0\n"
            "print(sorted(m for m in ('torch', 'ray', 'transformers', 'peft', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "rep" / "report.html").is_file()


def test_pareto():
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
    # on a CPU the exact figures are drawn, not the RSS (which mostly measures the allocator)
    cpu = [{**r, "memory_kind": "cpu_rss", "saved_activations_mb": 10.0 - r["layers"][0], "trainable_state_mb": 1.0}
           for r in rows]
    fig = memory_by_layer(pd.DataFrame(cpu))
    assert list(fig.axes[0].get_lines()[0].get_ydata()) == [11.0, 10.0, 9.0, 8.0]
    assert "exact" in fig.axes[0].get_ylabel()
    # the report's one rule: on a GPU allocated (solid) and reserved (dashed); never CPU process RSS growth, which
    # depends on the order trials ran in reused workers
    gpu = pd.DataFrame(rows).assign(peak_reserved_mb=lambda f: f["peak_memory_mb"] + 20.0)
    lines = memory_by_layer(gpu).axes[0].get_lines()
    assert [ln.get_linestyle() for ln in lines] == ["-", "-", "--", "--"]
    assert list(lines[3].get_ydata()) == [70.0, 71.0, 72.0, 73.0] and "reserved" in lines[3].get_label()
    assert memory_by_layer(pd.DataFrame(rows).assign(memory_kind="cpu_rss")) is None


def test_analyze_reads_an_experiment_on_s3(experiment, tmp_path, monkeypatch, capsys):
    """s3:// through pyarrow's S3 filesystem, against a local S3 endpoint (moto) on loopback."""
    from tests.conftest import on_local_s3

    with on_local_s3(experiment, "sweeps/fixture", monkeypatch) as uri:
        assert analyze(uri, "--out", tmp_path) == 0
    trials = pq.read_table(tmp_path / "trials.parquet").to_pandas()
    local = pq.read_table(_local_reference(experiment, tmp_path)).to_pandas()
    assert len(trials) == 12 and set(trials["experiment"]) == {"fixture"}
    cols = ["trial_name", "status", "final_val_accuracy", "epochs_completed"]
    assert trials.sort_values("trial_name")[cols].reset_index(drop=True).equals(
        local.sort_values("trial_name")[cols].reset_index(drop=True))


def _local_reference(experiment, tmp_path):
    analyze(experiment, "--out", tmp_path / "local")
    return tmp_path / "local" / "trials.parquet"


def test_every_view_of_the_trial_record_derives_from_its_one_declaration():
    from dataclasses import fields

    from analysis.groups import CONFIGURATION, LABEL_AXES
    from analysis.schema import EPOCHS_SCHEMA, TRIALS_SCHEMA
    from record import fields as record
    from record.metrics import EPOCH_COLUMNS, SUMMARY_METRICS
    from tune_jobs.study.spec import TRAIN_SCHEMA, TrainConfig, TrialConfig
    from tune_jobs.sweep.hparams_logger import HPARAM_KEYS, METRIC_KEYS

    assert [f.name for f in fields(TrialConfig)] == list(record.NAMES)  # Ray's config dict
    assert [(n, TRIALS_SCHEMA.field(n).type) for n in record.NAMES] == record.ARROW  # trials.parquet
    assert [(n, EPOCHS_SCHEMA.field(n).type) for n, _ in EPOCH_COLUMNS] == EPOCH_COLUMNS  # epochs.parquet
    training = [f.name for f in record.FIELDS if f.role == record.TRAINING]
    assert [f.name for f in fields(TrainConfig)] == training == list(TRAIN_SCHEMA)  # each setting has its check
    assert all(f.default is not record.NO_DEFAULT for f in record.FIELDS if f.role == record.TRAINING)
    assert HPARAM_KEYS == record.HPARAMS and METRIC_KEYS == SUMMARY_METRICS  # TensorBoard
    assert set(record.CONFIGURATION) <= set(CONFIGURATION) and not {"seed", "repeat", "scenario"} & set(CONFIGURATION)
    assert set(LABEL_AXES) <= set(CONFIGURATION)
    shorts = [record.short(n) for n in record.NAMES]
    assert len(shorts) == len(set(shorts))  # trial names and group labels stay unambiguous


def test_summary_shows_reserved_gpu_memory_only_where_trials_report_it(experiment, tmp_path):
    """GPU trials report allocated and reserved peaks (the report names both); a CPU-only study has no reserved
    column rather than an empty one."""
    import numpy as np

    from analysis.report import prepare, summarize, usable

    analyze(experiment, "--out", tmp_path / "pq")
    trials = pq.read_table(tmp_path / "pq" / "trials.parquet").to_pandas()
    epochs = pq.read_table(tmp_path / "pq" / "epochs.parquet").to_pandas()
    assert trials["peak_reserved_mb"].isna().all()  # this fixture's trials report CPU memory
    good = usable(prepare(trials, epochs, "val_accuracy")[0])
    assert "peak_reserved_mb" not in summarize(good, "val_accuracy")
    on_gpu = good.assign(peak_reserved_mb=np.where(good["scenario"] == "good", 900.0, 700.0))
    summary = summarize(on_gpu, "val_accuracy").set_index("group")
    assert summary.loc["good r=8", "peak_reserved_mb"] == 900.0 and summary.loc["plain r=8", "peak_reserved_mb"] == 700


ACTIVATIONS = {"upper": 222.0, "lower": 342.0, "all": 453.0}  # the quickstart's exact figures (MiniLM, r=8)
RSS = {"upper": 1451.0, "lower": 743.0, "all": 886.0}  # its process RSS growth: whoever ran first in a worker


def _memory_study(root: Path, device: str) -> Path:
    """A synthetic upper / lower / all study with the quickstart's memory figures, run on a CPU or a GPU."""
    import pyarrow as pa
    from synthetic import write_study

    from analysis.schema import TRIALS_SCHEMA

    out = write_study(root / device, [{"scenario": s, "mean": 0.83} for s in ACTIVATIONS], seeds=3, examples=872)
    trials = pq.read_table(out / "trials.parquet").to_pandas()
    trials["saved_activations_mb"] = trials["scenario"].map(ACTIVATIONS)
    trials["trainable_state_mb"] = trials["scenario"].map({"upper": 4.8, "lower": 4.8, "all": 7.3})
    if device == "gpu":
        trials["memory_kind"] = "cuda_allocated"
        trials["peak_memory_mb"] = trials["scenario"].map(ACTIVATIONS) + 600.0
        trials["peak_reserved_mb"] = trials["peak_memory_mb"] + 250.0
    else:
        trials["peak_memory_mb"] = trials["scenario"].map(RSS)
    pq.write_table(pa.Table.from_pandas(trials, schema=TRIALS_SCHEMA, preserve_index=False), out / "trials.parquet")
    return out


def _summary_headers(html: str) -> list[str]:
    import re

    table = re.search(r'<table id="summary"><thead><tr>(.*?)</tr></thead>', html).group(1)
    return [h for h in re.findall(r"<th>(.*?)</th>", table)]


def test_memory_columns_lead_with_what_ranks_placements_on_the_device(tmp_path):
    """On a CPU the exact figures lead (saved activations, trainable state) and RSS comes last, labelled as process
    RSS growth with why it is order-dependent; on a GPU allocated and reserved lead. The quickstart's unlabelled
    'peak memory MB' put upper (1,451) above all (886) above lower (743): the wrong way round."""
    import pandas as pd

    from analysis.headline import headline

    for device in ("cpu", "gpu"):
        assert main(["report", str(_memory_study(tmp_path, device)), "--out", str(tmp_path / f"rep-{device}")]) == 0
    cpu_html = (tmp_path / "rep-cpu" / "report.html").read_text()
    memory = [h for h in _summary_headers(cpu_html) if "MB" in h]
    assert memory == ["saved activations MB (exact)", "trainable state MB (exact)",
                      "process RSS growth MB (order-dependent)"]
    assert "Ray reuses worker processes" in cpu_html and "never rank by it" in cpu_html
    summary = pd.read_csv(tmp_path / "rep-cpu" / "summary.csv").set_index("scenario")
    assert summary["saved_activations_mb"].rank().to_dict() == {"upper": 1.0, "lower": 2.0, "all": 3.0}
    assert summary.loc["upper", "rss_growth_mb"] == 1451.0  # kept, under its own name
    assert not {"peak_memory_mb", "gpu_allocated_mb", "peak_reserved_mb"} & set(summary.columns)

    gpu_html = (tmp_path / "rep-gpu" / "report.html").read_text()
    memory = [h for h in _summary_headers(gpu_html) if "MB" in h]
    assert memory == ["GPU peak allocated MB", "GPU peak reserved MB", "saved activations MB (exact)",
                      "trainable state MB (exact)"]
    assert "process RSS" not in gpu_html
    summary = pd.read_csv(tmp_path / "rep-gpu" / "summary.csv").set_index("scenario")
    assert summary.loc["upper", "gpu_allocated_mb"] == 822.0 and summary.loc["upper", "peak_reserved_mb"] == 1072.0

    # the headline prices memory by the same rule: the exact figure on a CPU, never the RSS
    cpu = pd.read_csv(tmp_path / "rep-cpu" / "summary.csv").assign(data_key="k")
    verdicts = pd.DataFrame([{"a": "all r=8", "b": "upper r=8", "delta": 0.0, "verdict": "equivalent"}])
    price = next(line for line in headline(cpu, verdicts, "val_accuracy", 0.01, "all r=8")
                 if line.startswith("What they cost"))
    assert "upper r=8 ×1.00 trainable parameters, ×1.00 samples/s, ×0.49 saved activations" in price
    gpu = pd.read_csv(tmp_path / "rep-gpu" / "summary.csv").assign(data_key="k")
    price = next(line for line in headline(gpu, verdicts, "val_accuracy", 0.01, "all r=8")
                 if line.startswith("What they cost"))
    assert price.endswith("×0.78 GPU peak memory.")
