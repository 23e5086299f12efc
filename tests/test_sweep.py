"""The sweep end to end through real Ray Tune: config columns, seeds, metrics, files, interruption + resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, tiny_spec

pytestmark = pytest.mark.slow

SCENARIOS = ("scenarios:\n  - {name: upper, layers: upper, components: all}\n"
             "  - {name: vup, layers: all, components: v+up, ranks: [2, 4]}\n"
             "  - {name: head, baseline: classifier_only}\n")


def sweep(*args, timeout=600, **popen):
    env = dict(os.environ, RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "token"))
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "tune_jobs.sweep", *map(str, args)]
    if popen:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def results_of(path: Path):
    from ray import tune

    return tune.ExperimentAnalysis(str(path)).dataframe(metric="val_accuracy", mode="max")


def tensorboard_view(trial_dir: Path) -> dict:
    """What TensorBoard reads from a trial's event file: scalar tags and the HParams of the trial."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    ea = EventAccumulator(str(next(trial_dir.glob("events.out.tfevents*"))))
    ea.Reload()
    start = plugin_data_pb2.HParamsPluginData.FromString(
        ea.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    values = {k: (v.string_value or v.number_value) for k, v in start.hparams.items()}
    return {"scalars": set(ea.Tags()["scalars"]), "hparams": values}


def test_sweep_end_to_end(tmp_path, tiny_bert_dir):
    spec = tiny_spec(tmp_path, tiny_bert_dir, SCENARIOS, repeats=2)
    out = sweep(spec, "--storage", tmp_path / "store", "--name", "e2e")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "tensorboard --logdir" in out.stdout and "8 trials (8 TERMINATED)" in out.stdout
    exp = tmp_path / "store" / "e2e"
    dirs = sorted(p.name for p in exp.iterdir() if p.is_dir())
    assert dirs == sorted(f"{s}-rep{k}" for s in ("upper-r4", "vup-r2", "vup-r4", "head") for k in (0, 1))
    for d in dirs:
        files = os.listdir(exp / d)
        assert {"result.json", "progress.csv", "params.json"} <= set(files)
        assert any(f.startswith("events.out.tfevents") for f in files)
        lines = (exp / d / "result.json").read_text().strip().splitlines()
        assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    tb = tensorboard_view(exp / "vup-r2-rep1")
    assert {"ray/tune/val_accuracy", "ray/tune/train_loss"} <= tb["scalars"]
    assert tb["hparams"]["scenario"] == "vup" and tb["hparams"]["r"] == 2 and tb["hparams"]["layers"] == "0,1"
    df = results_of(exp)
    assert len(df) == 8
    for col in ("scenario", "baseline", "layers", "components", "r", "repeat", "seed"):
        assert f"config/{col}" in df.columns
    assert (df["config/seed"] == 7 + df["config/repeat"]).all()
    head = df[df["config/scenario"] == "head"]
    assert head["config/r"].isna().all() and head["config/baseline"].eq("classifier_only").all()
    assert sorted(df[df["config/scenario"] == "vup"]["config/r"].tolist()) == [2, 2, 4, 4]
    assert all(list(v) == [1] for v in df.loc[df["config/scenario"] == "upper", "config/layers"])  # top of 2
    for metric in ("val_accuracy", "val_loss", "train_loss", "trainable_params", "peak_memory_mb",
                   "train_samples_per_s"):
        assert df[metric].notna().all(), metric
    assert df["val_accuracy"].between(0, 1).all()

    spec.write_text(spec.read_text().replace("learning_rate: 0.003", "learning_rate: 0.01"))
    edited = sweep(spec, "--storage", tmp_path / "store", "--name", "e2e")  # same name: would resume
    assert (edited.returncode == 2 and "differs from the experiment" in edited.stderr
            and "learning_rate" in edited.stderr)


def _finished_trials(exp: Path, epochs: int) -> dict[str, tuple]:
    done = {}
    for d in exp.iterdir() if exp.exists() else []:
        result = d / "result.json"
        if d.is_dir() and result.is_file():
            lines = result.read_text().strip().splitlines()
            if len(lines) >= epochs:
                first = json.loads(lines[0])
                done[d.name] = (first["trial_id"], first["timestamp"])
    return done


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "driver-killed"])
def test_interrupted_sweep_resumes_without_rerunning(tmp_path, tiny_bert_dir, stop):
    spec = tiny_spec(tmp_path, tiny_bert_dir, SCENARIOS, repeats=1,
                     data={"train_limit": 600}, train={"epochs": 3})
    exp = tmp_path / "store" / "resume"
    proc = sweep(spec, "--storage", tmp_path / "store", "--name", "resume", "--max-concurrent", "1", popen=True)
    deadline = time.time() + 300
    while time.time() < deadline and not _finished_trials(exp, 3):
        time.sleep(0.5)
    finished_before = _finished_trials(exp, 3)
    assert finished_before, "no trial finished in time"
    proc.send_signal(stop)  # Ctrl-C: Tune saves its state and stops; SIGKILL: the driver dies with no warning
    proc.communicate(timeout=120)
    assert len(finished_before) < 4

    out = sweep(spec, "--storage", tmp_path / "store", "--name", "resume", "--resume")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "resuming" in out.stdout and "4 trials (4 TERMINATED)" in out.stdout
    after = _finished_trials(exp, 3)
    assert set(after) == {"upper-r4-rep0", "vup-r2-rep0", "vup-r4-rep0", "head-rep0"}
    for name, (trial_id, first_ts) in finished_before.items():
        assert after[name] == (trial_id, first_ts)  # same trial id and first report time: not rerun
        assert len((exp / name / "result.json").read_text().strip().splitlines()) == 3


def test_resume_without_experiment_is_a_usage_error(tmp_path, tiny_bert_dir):
    spec = tiny_spec(tmp_path, tiny_bert_dir, SCENARIOS)
    out = sweep(spec, "--storage", tmp_path / "none", "--resume")
    assert out.returncode == 2 and "--resume: no experiment to resume" in out.stderr


def test_bad_spec_starts_nothing(tmp_path, tiny_bert_dir):
    spec = tiny_spec(tmp_path, tiny_bert_dir, SCENARIOS.replace("layers: upper", "layers: [0, 9]"))
    out = sweep(spec, "--storage", tmp_path / "store")
    assert out.returncode == 2 and "out of range" in out.stderr
    assert not (tmp_path / "store").exists()


def test_diverged_trial_ends_once_is_not_retried_nor_resumed(tmp_path, tiny_bert_dir):
    """An absurd learning rate on one axis point: that trial ends once, TERMINATED and diverged; the other finishes."""
    import pandas as pd
    import pyarrow.parquet as pq

    from tune_jobs.cli import main

    scen = "scenarios:\n  - {name: vup, layers: all, components: v+up, train: {learning_rate: [3.0e-3, 1.0e+12]}}\n"
    spec = tiny_spec(tmp_path, tiny_bert_dir, scen, data={"selection": {"rows": 64}}, max_failures=2)
    args = (spec, "--storage", tmp_path / "store", "--name", "div")
    out = sweep(*args)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "2 trials (1 DIVERGED, 1 TERMINATED)" in out.stdout and "| diverged 1 |" in out.stdout
    assert "diverged (not retried, never averaged in): vup-r4-lr1e12-rep0: train loss" in out.stdout
    exp = tmp_path / "store" / "div"
    boom, good = exp / "vup-r4-lr1e12-rep0", exp / "vup-r4-lr3e-3-rep0"
    reports = [json.loads(line) for line in (boom / "result.json").read_text().splitlines()]
    assert len(reports) == 1 and reports[0]["diverged"] is True and not (boom / "error.txt").exists()
    for line in (good / "result.json").read_text().splitlines():  # the selection split, every epoch
        assert {"sel_accuracy", "sel_loss", "val_accuracy"} <= set(json.loads(line))
    before = {d: (d / "result.json").read_bytes() for d in (boom, good)}

    again = sweep(*args)  # same command: resumes, and neither trial runs again
    assert again.returncode == 0 and "resuming" in again.stdout and "(1 DIVERGED, 1 TERMINATED)" in again.stdout
    assert {d: (d / "result.json").read_bytes() for d in (boom, good)} == before

    assert main(["analyze", str(exp), "--out", str(tmp_path / "pq")]) == 0
    trials = pq.read_table(tmp_path / "pq" / "trials.parquet").to_pandas().set_index("trial_name")
    row = trials.loc["vup-r4-lr1e12-rep0"]
    assert row["status"] == "TERMINATED" and row["diverged"] and row["num_restarts"] == 0
    assert row["diverged_reason"].startswith("train loss") and pd.isna(row["final_val_accuracy"])
    ok = trials.loc["vup-r4-lr3e-3-rep0"]
    assert not ok["diverged"] and 0 <= ok["final_sel_accuracy"] <= 1 and ok["selection_rows"] == 64
    import platform
    import subprocess

    import torch

    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    commit = head.stdout.strip() if head.returncode == 0 and (REPO / ".git").exists() else None
    for name in trials.index:  # the training node's provenance, from each trial's first report
        made = trials.loc[name]
        assert made["torch_version"] == torch.__version__ and made["python_version"] == platform.python_version()
        assert made["device_name"].startswith("cpu") and made["lora_sweep_version"]
        assert made["git_commit"] == commit, (made["git_commit"], commit)  # a clone: CI's own commit


def _trial_runs(exp: Path) -> dict[str, tuple]:
    """Trial folder -> (trial id, first report's timestamp, result.json bytes): what a rerun would change."""
    out = {}
    for d in sorted(exp.iterdir()):
        if d.is_dir() and (d / "result.json").is_file():
            first = json.loads((d / "result.json").read_text().splitlines()[0])
            out[d.name] = (first["trial_id"], first["timestamp"], (d / "result.json").read_bytes())
    return out


def _recorded_names(exp: Path) -> list[str]:
    """Trial names in Ray's newest experiment state, one per trial (a grid point run twice would appear twice)."""
    import pyarrow.fs as pafs

    from record.ray_files import open_experiment, trial_states

    fs, path = open_experiment(str(exp))
    states = trial_states(fs, path, fs.get_file_info(pafs.FileSelector(path)))
    return sorted(s["config"]["trial_name"] for s in states.values())


def test_growing_a_study_runs_exactly_the_new_trials(tmp_path, tiny_bert_dir):
    """repeats 1 -> 2, then a rank and a scenario more: each rerun runs only the new grid points."""
    scen = ("scenarios:\n  - {name: upper, layers: upper, components: all}\n"
            "  - {name: head, baseline: classifier_only}\n")
    small = {"data": {"train_limit": 64}, "train": {"epochs": 1}}
    args = ("--storage", tmp_path / "store", "--name", "grow")
    exp = tmp_path / "store" / "grow"
    steps = [
        (scen, 1, {"upper-r4-rep0", "head-rep0"}),
        (scen, 2, {"upper-r4-rep1", "head-rep1"}),
        (scen.replace("components: all}", "components: all, ranks: [4, 8]}")
         + "  - {name: vup, layers: all, components: v+up}\n", 2,
         {"upper-r8-rep0", "upper-r8-rep1", "vup-r4-rep0", "vup-r4-rep1"}),
    ]
    before: dict = {}
    for i, (text, repeats, new) in enumerate(steps):
        out = sweep(tiny_spec(tmp_path, tiny_bert_dir, text, repeats=repeats, **small), *args)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        total = len(before) + len(new)
        assert f"{total} trials ({total} TERMINATED)" in out.stdout
        assert ("resuming" in out.stdout) == (i > 0)
        assert i == 0 or f"{len(before)} finished trials are kept, 0 unfinished or errored ones continue, " \
                         f"{len(new)} new grid points run" in out.stdout
        after = _trial_runs(exp)
        assert set(after) == set(before) | new
        assert {n: after[n] for n in before} == before  # same trial ids, results untouched: nothing rerun
        assert _recorded_names(exp) == sorted(after)  # each grid point once in Ray's experiment
        assert sum(line.count("started ") for line in out.stdout.splitlines()) == len(new)
        before = after

    out = sweep(tiny_spec(tmp_path, tiny_bert_dir, steps[-1][0], repeats=2, **small), *args)
    assert out.returncode == 0 and "started " not in out.stdout and _trial_runs(exp) == before  # nothing new: no-op
    edited = steps[-1][0].replace("components: v+up}", "components: v+up, train: {learning_rate: 0.01}}")
    out = sweep(tiny_spec(tmp_path, tiny_bert_dir, edited, repeats=3, **small), *args)
    assert out.returncode == 2 and "in learning_rate of trial vup-r4-rep" in out.stderr and out.stdout == ""


ADAPTIVE_SPEC = {"repeats": {"min": 2, "max": 4, "until_halfwidth": 0.005},
                 "data": {"train_limit": 512}, "train": {"epochs": 2}}
# full fine-tuning of the tiny random BERT: at 1e-3 every seed predicts the majority class (no spread at all);
# at 1e-2 the seeds land apart, so that cell needs more seeds
NOISY = "scenarios:\n  - {name: full, baseline: full, train: {learning_rate: [1.0e-3, 1.0e-2]}}\n"


def _design(exp: Path) -> dict[str, list]:
    """Cell -> final val_accuracy of repeat 0, 1, ... (None for a diverged trial)."""
    cells: dict[str, dict] = {}
    for d in exp.iterdir():
        if d.is_dir() and (d / "result.json").is_file():
            last = json.loads((d / "result.json").read_text().splitlines()[-1])
            label, rep = d.name.rsplit("-rep", 1)
            cells.setdefault(label, {})[int(rep)] = last.get("val_accuracy")
    return {label: [reps[k] for k in sorted(reps)] for label, reps in cells.items()}


def assert_same_design(got: dict[str, list], want: dict[str, list], tol: float = 1e-9) -> None:
    """The same cells, the same number of seeds per cell, and each seed's value equal within `tol` (None: diverged).

    Spelled out because `pytest.approx` refuses nested containers from pytest 9 on (`{cell: [values]}`)."""
    assert sorted(got) == sorted(want), (sorted(got), sorted(want))
    for cell in want:
        assert len(got[cell]) == len(want[cell]), (cell, got[cell], want[cell])
        for rep, (g, w) in enumerate(zip(got[cell], want[cell])):
            same = g is None and w is None or g is not None and w is not None and abs(g - w) <= tol
            assert same, f"{cell} repeat {rep}: {g} != {w}"


def _repeats_by_rule(values: list, low: int, high: int, target: float) -> int:
    """Seeds a cell gets by the issue's rule, from its results (the 95 % t half-width computed here with scipy)."""
    from scipy import stats

    n = low
    while n < high:
        finite = [v for v in values[:n] if v is not None]
        if not finite:
            break  # every seed diverged: nothing to measure
        if len(finite) >= 2 and stats.t.ppf(0.975, len(finite) - 1) * stats.sem(finite) <= target:
            break
        n += 1
    return n


def test_adaptive_repeats_give_the_noisy_cell_more_seeds(tmp_path, tiny_bert_dir):
    spec = tiny_spec(tmp_path, tiny_bert_dir, NOISY, **ADAPTIVE_SPEC)
    out = sweep(spec, "--storage", tmp_path / "store", "--name", "ad", "--max-concurrent", "2")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "4 to 8 trials (adaptive repeats)" in out.stdout
    design = _design(tmp_path / "store" / "ad")
    assert len(design["full-lr1e-3"]) == 2 and len(design["full-lr0.01"]) > 2  # the noisy cell got more seeds
    for values in design.values():
        assert len(values) == _repeats_by_rule(values, 2, 4, 0.005)
    ran = sum(map(len, design.values()))
    assert f"ran {ran} trials of the fixed-max design's 8 (saved {8 - ran} trials, ≈ " in out.stdout
    assert "CPU-hours at {cpu: 1} per trial, from the mean trial time of" in out.stdout


def test_adaptive_run_killed_and_resumed_finishes_the_same_design(tmp_path, tiny_bert_dir):
    spec = tiny_spec(tmp_path, tiny_bert_dir, NOISY, **ADAPTIVE_SPEC)
    reference = sweep(spec, "--storage", tmp_path / "store", "--name", "ref", "--max-concurrent", "2")
    assert reference.returncode == 0, reference.stdout[-3000:] + reference.stderr[-3000:]
    exp = tmp_path / "store" / "killed"
    proc = sweep(spec, "--storage", tmp_path / "store", "--name", "killed", "--max-concurrent", "1", popen=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(_finished_trials(exp, 2)) < 3:
        time.sleep(0.2)
    finished_before = _finished_trials(exp, 2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=120)
    assert 3 <= len(finished_before) < 6, finished_before  # killed while the noisy cell was still deciding

    out = sweep(spec, "--storage", tmp_path / "store", "--name", "killed", "--resume")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert_same_design(_design(exp), _design(tmp_path / "store" / "ref"))
    after = _finished_trials(exp, 2)
    assert {n: after[n] for n in finished_before} == finished_before  # not rerun
    assert _recorded_names(exp) == sorted(after)


def test_until_decided_sweep_runs_the_rules_design_and_the_report_spends_alpha_over_its_looks(tmp_path,
                                                                                                tiny_bert_dir):
    from analysis.sequential import PENDING, Arm, rounds
    from tune_jobs.cli import main

    spec = tiny_spec(tmp_path, tiny_bert_dir, NOISY + "  - {name: head, baseline: classifier_only}\n",
                     repeats={"min": 2, "max": 4, "until": "decided"}, data={"train_limit": 512},
                     train={"epochs": 2})
    out = sweep(spec, "--storage", tmp_path / "store", "--name", "dec", "--max-concurrent", "2")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    exp = tmp_path / "store" / "dec"
    design = _design(exp)
    examples = {json.loads((d / "result.json").read_text().splitlines()[-1]).get("val_examples")
                for d in exp.iterdir() if (d / "result.json").is_file()}
    counts = rounds([Arm(label, tuple(range(4)), 2) for label in design],
                    lambda label, k: design[label][k] if k < len(design[label]) else PENDING, "val_accuracy", 0.05, 3,
                    resolution=1 / examples.pop())
    assert {label: len(v) for label, v in design.items()} == counts  # the searcher ran exactly the rule's design
    assert main(["analyze", str(exp), "--out", str(tmp_path / "pq")]) == 0
    assert main(["report", str(tmp_path / "pq"), "--out", str(tmp_path / "rep")]) == 0
    assert "over the 3 looks of the sequential design" in (tmp_path / "rep" / "report.md").read_text()
