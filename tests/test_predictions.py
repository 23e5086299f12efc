"""Per-example predictions: the trial writes them (consistent with what it reports), `analyze` gathers them into
predictions.parquet (local and s3://), the multi-bootstrap covers at its level, and the report shows both intervals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.stats import norm

from analysis import bootstrap
from analysis.schema import PREDICTIONS_SCHEMA
from record.predictions import EPOCH_KEY, PREDICTIONS_FILE, SCHEMA, epoch_of
from tests.conftest import tiny_spec
from tune_jobs.cli import main

SCEN = "scenarios:\n  - {name: vup, layers: all, components: v+up}\n  - {name: head, baseline: classifier_only}\n"


# ---------------------------------------------------------------- the trial writes them


def _accuracy(table: pa.Table) -> float:
    return float(np.mean(table.column("label").to_numpy() == table.column("prediction").to_numpy()))


def test_trial_writes_predictions_matching_its_metrics(tmp_path, tiny_bert_dir):
    from sklearn.metrics import f1_score, matthews_corrcoef

    from tune_jobs.study.grid import select_trial
    from tune_jobs.study.spec import load_study
    from tune_jobs.train.loop import run_trial

    config = select_trial(load_study(tiny_spec(tmp_path, tiny_bert_dir, SCEN)), "vup").to_dict()
    seen = []

    def keep(metrics, checkpoint_dir):
        seen.append((metrics, pq.read_table(Path(checkpoint_dir) / PREDICTIONS_FILE)))

    history = run_trial(config, on_epoch=keep)
    assert [m["epoch"] for m, _ in seen] == [1, 2] and len(history) == 2
    for metrics, table in seen:
        assert table.schema.equals(SCHEMA, check_metadata=False) and epoch_of(table) == metrics["epoch"]
        assert table.column("example").to_pylist() == list(range(872))  # the dev split's rows, in order
        labels, pred = table.column("label").to_numpy(), table.column("prediction").to_numpy()
        assert _accuracy(table) == metrics["val_accuracy"]  # exactly: the same logits, the same argmax
        assert f1_score(labels, pred) == metrics["val_f1"] and matthews_corrcoef(labels, pred) == metrics["val_mcc"]
        score = table.column("score").to_numpy()
        assert ((score >= 0) & (score <= 1)).all() and ((score > 0.5) == (pred == 1)).mean() > 0.99
        assert bootstrap.observed("accuracy", labels, pred[None])[0] == metrics["val_accuracy"]
    first, last = seen[0][1], seen[-1][1]
    assert not first.column("score").equals(last.column("score"))  # each epoch its own evaluation
    assert "checkpoint_mb" in history[0] and set(history[0]) == set(seen[0][0])  # no new metric keys


def test_trial_command_writes_predictions_file(tmp_path, tiny_bert_dir, capsys):
    spec = tiny_spec(tmp_path, tiny_bert_dir, SCEN)
    out = tmp_path / "out" / "head.parquet"
    assert main(["trial", str(spec), "--scenario", "head", "--epochs", "1", "--predictions", str(out),
                 "--checkpoint-dir", str(tmp_path / "ckpt")]) == 0
    captured = capsys.readouterr()
    reported = json.loads(captured.out.strip().splitlines()[-1])
    table = pq.read_table(out)
    assert table.num_rows == 872 and _accuracy(table) == reported["val_accuracy"] and epoch_of(table) == 1
    assert pq.read_table(tmp_path / "ckpt" / PREDICTIONS_FILE).equals(table)
    assert f"dev-split predictions of epoch 1: {out}" in captured.err


def test_predictions_table_per_task():
    from tune_jobs.train.prediction_file import predictions_table

    logits = np.array([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0], [0.0, 0.0, 5.0]], np.float32)
    table = predictions_table("classification", logits, np.array([1, 2, 2]), np.array([2, 0, 1]), epoch=3)
    assert table.column("example").to_pylist() == [0, 1, 2]  # sorted by example, rows kept together
    assert table.column("prediction").to_pylist() == [0, 2, 1] and table.column("label").to_pylist() == [2, 2, 1]
    assert table.column("score")[0].as_py() == pytest.approx(np.exp(3) / (np.exp(3) + 2))  # the predicted class's
    reg = predictions_table("regression", np.array([[2.5], [0.25]], np.float32), np.array([3.0, 0.0]),
                            np.array([0, 1]), epoch=1)
    assert reg.column("prediction").to_pylist() == [2.5, 0.25] == reg.column("score").to_pylist()
    assert reg.schema.metadata[EPOCH_KEY] == b"1"


# ---------------------------------------------------------------- analyze gathers them

EXAMPLES = 120


def _trial(exp: Path, name: str, scenario: str, repeat: int, correct: np.ndarray, labels: np.ndarray,
           epochs: int = 2, diverged: bool = False, predictions: bool = True, epoch_of_file: int | None = None) -> dict:
    """A trial folder as Ray Tune leaves it, with the trial's predictions in its newest checkpoint."""
    config = {"study": "synthetic", "trial_name": name, "scenario": scenario, "baseline": None, "layers": [0, 1],
              "components": [scenario], "r": 8, "repeat": repeat, "seed": 42 + repeat,
              "model": "tiny", "dataset": "glue/sst2", "task": "classification", "num_labels": 2,
              "learning_rate": 1e-3, "epochs": epochs, "primary_metric": "val_accuracy"}
    tdir = exp / name
    tdir.mkdir(parents=True)
    (tdir / "params.json").write_text(json.dumps(config))
    prediction = np.where(correct, labels, 1 - labels).astype(np.float32)
    accuracy = float(np.mean(prediction == labels))
    lines = []
    for e in range(1, epochs + 1):
        row = {"epoch": e, "training_iteration": e, "trial_id": f"id_{name}", "val_accuracy": accuracy if e == epochs
               else 0.5, "val_examples": EXAMPLES, "train_loss": 0.5, "val_loss": 0.5, "time_total_s": 10.0 * e}
        lines.append(json.dumps(row))
    if diverged:
        lines.append(json.dumps({"epoch": epochs + 1, "diverged": True, "diverged_reason": "train loss nan",
                                 "val_accuracy": None, "trial_id": f"id_{name}"}))
    (tdir / "result.json").write_text("\n".join(lines) + "\n")
    ckpt = tdir / f"checkpoint_{epochs - 1:06d}"
    ckpt.mkdir()
    if predictions:
        table = pa.table({"example": np.arange(len(labels), dtype=np.int32), "label": labels.astype(np.float32),
                          "prediction": prediction, "score": np.where(prediction == 1, 0.9, 0.1).astype(np.float32)},
                         schema=SCHEMA.with_metadata({EPOCH_KEY: str(epoch_of_file or epochs).encode()}))
        pq.write_table(table, ckpt / PREDICTIONS_FILE)
    return {"trial_id": f"id_{name}", "status": "TERMINATED", "relative_logdir": name, "config": config}


def synthetic_experiment(root: Path, seeds: int = 4, name: str = "synth") -> Path:
    """Two groups (q, v) x `seeds` seeds whose predictions share each example's difficulty (correlated), and a group
    k of a trial without predictions, a diverged one and one whose file is of another epoch: those give no rows."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, EXAMPLES)
    difficulty = rng.normal(0, 3.0, EXAMPLES)  # most examples always right or always wrong, as real models
    exp = root / name
    states = []
    for scenario, effect in (("q", 0.8), ("v", 1.0)):
        for k in range(seeds):
            correct = rng.random(EXAMPLES) < norm.cdf(effect + difficulty + rng.normal(0, 0.1))
            states.append(_trial(exp, f"{scenario}-rep{k}", scenario, k, correct, labels))
    odd = rng.random(EXAMPLES) < 0.7
    states.append(_trial(exp, "k-rep0", "k", 0, odd, labels, predictions=False))
    states.append(_trial(exp, "k-rep1", "k", 1, odd, labels, diverged=True))
    states.append(_trial(exp, "k-rep2", "k", 2, odd, labels, epoch_of_file=1))
    trial_data = [[json.dumps({k: v for k, v in s.items()}), json.dumps({"num_failures": 0})] for s in states]
    (exp / "experiment_state-2026-12-01_00-00-00.json").write_text(json.dumps({"trial_data": trial_data}))
    return exp


def test_analyze_gathers_predictions(tmp_path, capsys):
    exp = synthetic_experiment(tmp_path)
    assert main(["analyze", str(exp), "--out", str(tmp_path / "a")]) == 0
    assert f"{8 * EXAMPLES} prediction rows" in capsys.readouterr().out
    table = pq.read_table(tmp_path / "a" / PREDICTIONS_FILE)
    assert table.schema.equals(PREDICTIONS_SCHEMA, check_metadata=False)
    df = table.to_pandas()
    assert sorted(df["trial_id"].unique()) == sorted(f"id_{s}-rep{k}" for s in "qv" for k in range(4))
    assert set(df["experiment"]) == {"synth"} and (df.groupby("trial_id", observed=True).size() == EXAMPLES).all()
    trials = pq.read_table(tmp_path / "a" / "trials.parquet").to_pandas().set_index("trial_id")
    for trial_id, rows in df.groupby("trial_id", observed=True):  # rows of one trial together, examples in order
        assert rows["example"].tolist() == list(range(EXAMPLES))
        assert np.mean(rows["label"] == rows["prediction"]) == trials.at[trial_id, "final_val_accuracy"]
    assert main(["analyze", str(exp), "--out", str(tmp_path / "b")]) == 0  # same input, same bytes
    assert (tmp_path / "a" / PREDICTIONS_FILE).read_bytes() == (tmp_path / "b" / PREDICTIONS_FILE).read_bytes()


def test_unreadable_predictions_file_is_a_warning_not_an_error(tmp_path, capsys):
    exp = synthetic_experiment(tmp_path)
    (next(exp.glob("v-rep0/checkpoint_*")) / PREDICTIONS_FILE).write_bytes(b"PAR1 truncated")
    assert main(["analyze", str(exp), "--out", str(tmp_path / "a")]) == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and "unreadable" in captured.err and "v-rep0" in captured.err
    assert f"{7 * EXAMPLES} prediction rows" in captured.out


def test_analyze_gathers_predictions_on_s3(tmp_path, monkeypatch, capsys):
    from tests.conftest import on_local_s3

    exp = synthetic_experiment(tmp_path)
    with on_local_s3(exp, "sweeps/synth", monkeypatch) as uri:
        assert main(["analyze", uri, "--out", str(tmp_path / "s3")]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err  # a trial without a predictions file is not a problem on s3 either
    assert main(["analyze", str(exp), "--out", str(tmp_path / "local")]) == 0
    assert pq.read_table(tmp_path / "s3" / PREDICTIONS_FILE).equals(
        pq.read_table(tmp_path / "local" / PREDICTIONS_FILE))


# ---------------------------------------------------------------- the report shows both intervals


def test_report_shows_seed_only_and_data_plus_seeds_intervals(tmp_path):
    import pandas as pd

    exp = synthetic_experiment(tmp_path, seeds=5)
    assert main(["analyze", str(exp), "--out", str(tmp_path / "a")]) == 0
    assert main(["report", str(tmp_path / "a"), "--out", str(tmp_path / "r")]) == 0
    pairs = pd.read_csv(tmp_path / "r" / "comparisons.csv").set_index(["a", "b"])
    assert pairs.loc[[p for p in pairs.index if "k r=8" in p], "data_se"].isna().all()  # k: runs without predictions
    row = pairs.loc[next(p for p in pairs.index if set(p) == {"q r=8", "v r=8"})]
    assert row["data_delta"] == pytest.approx(row["delta"])  # the same seeds, the same accuracy
    assert row["data_ci_low"] < row["data_delta"] < row["data_ci_high"] and row["data_se"] > 0
    half = (row["data_ci_high"] - row["data_ci_low"]) / 2  # at the row's own level: t (>= z) times its SE
    assert half / row["data_se"] >= norm.ppf(0.5 + row["ci_level"] / 2) - 1e-9 and row["ci_level"] > 0.9
    summary = pd.read_csv(tmp_path / "r" / "summary.csv")
    summary = summary[summary["group"] != "k r=8"]
    assert summary["data_se"].notna().all() and summary["seed_se"].notna().all()
    assert (summary["data_se"] > summary["seed_se"]).all()  # new data adds the dev set's own error
    assert (summary["noise_floor_se"] > 2 * row["data_se"]).all()  # correlated predictions: a paired difference
    text = (tmp_path / "r" / "report.md").read_text()
    assert "data + seeds low" in text and "SE over data + seeds" in text
    assert "on this dev set, over new seeds" in text and "on new data from the same distribution and new seeds" in text
    html = (tmp_path / "r" / "report.html").read_text()
    assert "data + seeds high" in html


def test_report_without_predictions_file_is_unchanged(tmp_path):
    exp = synthetic_experiment(tmp_path)
    assert main(["analyze", str(exp), "--out", str(tmp_path / "a")]) == 0
    (tmp_path / "a" / PREDICTIONS_FILE).unlink()  # an output of an older lora-sweep
    assert main(["report", str(tmp_path / "a"), "--out", str(tmp_path / "r")]) == 0
    text = (tmp_path / "r" / "report.md").read_text()
    assert "| data + seeds low" not in text and "no predictions.parquet" in text and "over new seeds" in text


# ---------------------------------------------------------------- the multi-bootstrap itself


def test_metrics_from_weighted_confusion_counts_match_scikit_learn():
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    rng = np.random.default_rng(0)
    labels, preds = rng.integers(0, 2, 60), rng.integers(0, 2, (3, 60))
    preds[2] = 0  # no positive predicted: F1 and MCC 0, as scikit-learn's
    counts = bootstrap.example_counts(60, 4, seed=1)
    for name, ref in (("accuracy", accuracy_score), ("f1", lambda y, p: f1_score(y, p, zero_division=0)),
                      ("mcc", matthews_corrcoef)):
        got = bootstrap.metric_by_seed(name, labels, preds, counts)
        for r in range(4):
            rows = np.repeat(np.arange(60), counts[r].astype(int))  # the replicate's resampled data set
            assert got[r] == pytest.approx([ref(labels[rows], p[rows]) for p in preds], abs=1e-12)


def test_bootstrap_is_deterministic_and_says_what_it_cannot_do():
    rng = np.random.default_rng(1)
    labels, a, b = rng.integers(0, 2, 50), rng.integers(0, 2, (3, 50)), rng.integers(0, 2, (3, 50))
    assert bootstrap.difference("f1", labels, a, b, seed=7) == bootstrap.difference("f1", labels, a, b, seed=7)
    assert bootstrap.difference("f1", labels, a, b, seed=7) != bootstrap.difference("f1", labels, a, b, seed=8)
    unsupported = bootstrap.difference("pearson", labels, a, b)
    assert np.isnan(unsupported.estimate) and np.isnan(unsupported.interval(0.95)).all()
    assert not bootstrap.supports("f1", 3) and bootstrap.supports("accuracy", 3) and not bootstrap.supports("mse", 1)
    one_seed = bootstrap.group_mean("accuracy", labels, a[:1])
    assert np.isnan(one_seed.se) and np.isnan(one_seed.interval(0.95)).all()  # nothing over new seeds from one


def _simulate(rng, seeds: int, examples: int, effects: tuple[float, float], seed_sd: float = 0.3,
              group_seed_sd: float = 0.15, example_sd: float = 1.0):
    """Per-example correctness of two groups under a probit model: a seed effect shared by both groups (the same
    seed), one of each group's own, an example effect shared by all (difficulty) and Bernoulli noise."""
    u, w = rng.normal(0, example_sd, examples), rng.normal(0, seed_sd, seeds)
    return [(rng.random((seeds, examples)) < norm.cdf(m + w[:, None] + rng.normal(0, group_seed_sd, seeds)[:, None]
                                                       + u[None])).astype(int) for m in effects]


def test_multibootstrap_covers_at_its_level():
    """New seeds and new examples each replication; the truth is the population accuracy (closed form)."""
    effects, level, reps = (0.9, 0.75), 0.9, 300
    tau = np.sqrt(1 + 0.3 ** 2 + 0.15 ** 2 + 1.0)
    true_a = norm.cdf(effects[0] / tau)
    true_delta = true_a - norm.cdf(effects[1] / tau)
    rng = np.random.default_rng(2024)
    covered_mean = covered_diff = 0
    for i in range(reps):
        a, b = _simulate(rng, seeds=4, examples=200, effects=effects)
        labels = np.ones(200, int)  # correctness as the prediction of class 1
        lo, hi = bootstrap.group_mean("accuracy", labels, a, replicates=200, seed=i).interval(level)
        covered_mean += lo <= true_a <= hi
        lo, hi = bootstrap.difference("accuracy", labels, a, b, replicates=200, seed=i).interval(level)
        covered_diff += lo <= true_delta <= hi
    # MC error of a coverage over 300 replications: about 0.017. Measured (1,000 replications): 0.916 for the mean;
    # 0.968 for the paired difference, conservative: its seed x example noise is in both draws (Sellam et al.'s
    # multi-bootstrap), and the seed part is read at t with n - 1 df. At 0.99 and 2-5 seeds: 0.986-1.0.
    assert level - 0.05 <= covered_mean / reps <= level + 0.05
    assert level - 0.04 <= covered_diff / reps <= 0.995


def test_identical_correlated_groups_have_a_far_smaller_difference_se_than_one_accuracy():
    rng = np.random.default_rng(5)
    examples = 872
    a, b = _simulate(rng, seeds=5, examples=examples, effects=(1.2, 1.2), seed_sd=0.05, group_seed_sd=0.02,
                     example_sd=6.0)
    assert (a == b).mean() > 0.9  # two seeds agree on most examples, as two fine-tuned models do
    labels = np.ones(examples, int)
    diff = bootstrap.difference("accuracy", labels, a, b, seed=0)
    accuracy = a.mean()
    binomial = np.sqrt(accuracy * (1 - accuracy) / examples)
    assert diff.se < binomial / 2  # the dev set's difficulty cancels in a paired difference
    one = bootstrap.group_mean("accuracy", labels, a, seed=0)
    assert one.se > binomial * 0.9  # one group's mean over new data carries the binomial error and more


def test_interval_over_new_data_is_never_narrower_than_the_seed_only_one():
    """The wider question never gets the narrower answer, even at 2 seeds (t with 1 df for the seed part)."""
    from analysis import stats

    rng = np.random.default_rng(9)
    for seeds in (2, 3, 6):
        a, b = _simulate(rng, seeds=seeds, examples=300, effects=(1.0, 0.9), group_seed_sd=0.3)
        d = bootstrap.difference("accuracy", np.ones(300, int), a, b, replicates=300)
        seed_only = stats.paired(a.mean(axis=1), b.mean(axis=1))
        assert d.estimate == pytest.approx(seed_only.delta)
        for level in (0.95, 1 - 0.05 / 28):
            (low, high), (s_low, s_high) = d.interval(level), seed_only.interval(level)
            assert low <= s_low + 1e-12 and s_high - 1e-12 <= high
    b = a.copy()
    b[:, 0] = 1 - b[:, 0]  # every seed differs by exactly one row: tied differences, not certainty
    tied = bootstrap.difference("accuracy", np.ones(300, int), a, b, replicates=300)
    seed_only = stats.paired(a.mean(axis=1), b.mean(axis=1), resolution=1 / 300)
    (low, high), (s_low, s_high) = tied.interval(0.99), seed_only.interval(0.99)
    assert low <= s_low + 1e-12 and s_high - 1e-12 <= high
    labels = np.ones(300, int)
    assert np.isnan(bootstrap.difference("f1", labels, a, a).se)  # F1 tied over seeds: step unknown, undetermined
    assert bootstrap.difference("accuracy", labels, a, a).se > 0  # accuracy: floored at its step's rounding error


# ---------------------------------------------------------------- through a real Ray Tune sweep


@pytest.mark.slow
def test_real_sweep_predictions_reach_storage_and_the_report(tmp_path, tiny_bert_dir):
    import pandas as pd

    from tests.test_sweep import sweep

    spec = tiny_spec(tmp_path, tiny_bert_dir, SCEN, repeats=2)
    run = sweep(spec, "--storage", tmp_path / "store", "--name", "preds")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    exp = tmp_path / "store" / "preds"
    for trial in sorted(p for p in exp.iterdir() if p.is_dir()):
        assert len(list(trial.glob(f"checkpoint_*/{PREDICTIONS_FILE}"))) == 1  # num_to_keep=1: the last epoch's
    assert main(["analyze", str(exp), "--out", str(tmp_path / "a")]) == 0
    trials = pq.read_table(tmp_path / "a" / "trials.parquet").to_pandas().set_index("trial_id")
    preds = pq.read_table(tmp_path / "a" / PREDICTIONS_FILE).to_pandas()
    assert preds["trial_id"].nunique() == 4 and len(preds) == 4 * 872
    for trial_id, rows in preds.groupby("trial_id", observed=True):
        assert np.mean(rows["label"] == rows["prediction"]) == trials.at[trial_id, "final_val_accuracy"]
    assert main(["report", str(tmp_path / "a"), "--out", str(tmp_path / "r")]) == 0
    pairs = pd.read_csv(tmp_path / "r" / "comparisons.csv")
    assert pairs["data_se"].notna().all() and "data + seeds low" in (tmp_path / "r" / "report.md").read_text()
    shutil.rmtree(exp)
