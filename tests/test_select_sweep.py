"""Tune, then confirm through real Ray Tune: ASHA within each placement on the selection split, the confirm stage
of the chosen candidate only, statuses in Parquet, a resume that reruns nothing, and the report's selection table."""

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.conftest import tiny_spec
from tests.test_sweep import sweep
from tune_jobs.cli import main
from tune_jobs.sweep.searcher import choose

pytestmark = pytest.mark.slow

SCENARIOS = ("scenarios:\n  - {name: a, layers: all, components: all, ranks: [2, 4]}\n"
             "  - {name: head, baseline: classifier_only, train: {learning_rate: 4.0e-3}}\n")
CANDIDATES = ("lr5e-3", "lr1e-6")  # grid order: with one trial at a time, the first reaches each rung first


def reports(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]


def test_tune_then_confirm_stops_early_within_a_placement_and_confirms_its_choice(tmp_path, tiny_bert_dir):
    spec = tiny_spec(tmp_path, tiny_bert_dir, SCENARIOS, repeats=2,
                     data={"train_limit": 192, "selection": {"rows": 64}},
                     train={"epochs": 3, "learning_rate": [5e-3, 1e-6]},
                     select={"axes": ["learning_rate"], "tune_repeats": 1,
                             "early_stop": {"grace_epochs": 1, "reduction": 2}})
    args = (spec, "--storage", tmp_path / "store", "--name", "tc", "--max-concurrent", "1")
    out = sweep(*args)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "tune, then confirm: each placement's learning_rate chosen on sel_accuracy (ASHA" in out.stdout
    exp = tmp_path / "store" / "tc"
    stopped_any = False
    for placement in ("a-r2", "a-r4"):
        first, second = (reports(exp / f"{placement}-{c}-rep0") for c in CANDIDATES)
        assert [r["epoch"] for r in first] == [1, 2, 3]  # the first at the rung always goes on
        stops = second[0]["sel_accuracy"] < first[0]["sel_accuracy"]  # ASHA's rule at reduction 2: the better half
        assert [r["epoch"] for r in second] == ([1] if stops else [1, 2, 3])
        stopped_any |= stops
        tuned = [(c, [(rs[-1]["sel_accuracy"], len(rs) < 3)]) for c, rs in zip(CANDIDATES, (first, second))]
        chosen = choose(tuned)
        confirmed = sorted(d.name for d in exp.iterdir() if d.name.startswith(placement) and "rep0" not in d.name)
        assert confirmed == [f"{placement}-{chosen}-rep1", f"{placement}-{chosen}-rep2"]
        for name in confirmed:
            assert [r["epoch"] for r in reports(exp / name)] == [1, 2, 3]
            assert json.loads((exp / name / "params.json").read_text())["stage"] == "confirm"
    assert sorted(d.name for d in exp.iterdir() if d.name.startswith("head")) == ["head-rep1", "head-rep2"]

    before = {d.name: (d / "result.json").read_bytes() for d in exp.iterdir() if d.is_dir()}
    again = sweep(*args)  # the same command: resumes; a stopped trial stays stopped, nothing reruns
    assert again.returncode == 0 and "resuming" in again.stdout, again.stdout[-2000:]
    assert {d.name: (d / "result.json").read_bytes() for d in exp.iterdir() if d.is_dir()} == before

    assert main(["analyze", str(exp), "--out", str(tmp_path / "pq")]) == 0
    trials = pq.read_table(tmp_path / "pq" / "trials.parquet").to_pandas().set_index("trial_name")
    tune = trials[trials["stage"] == "tune"]
    assert len(tune) == 4 and set(trials["stage"]) == {"tune", "confirm"}
    for name, row in tune.iterrows():
        if row["epochs_completed"] < 3:
            assert row["status"] == "STOPPED" and row["stopped_at_epoch"] == 1 and not row["diverged"]
        else:
            assert row["status"] == "TERMINATED" and pd.isna(row["stopped_at_epoch"])
    assert (trials["status"] == "STOPPED").any() == stopped_any

    assert main(["report", str(tmp_path / "pq"), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Tune, then confirm: learning_rate chosen on the selection split" in md
    summary = pd.read_csv(tmp_path / "rep" / "summary.csv")
    assert len(summary) == 3 and (summary["n"] == 2).all()  # two placements' choices and the head, confirm seeds only
    assert "tuning stage (4 trials)" in md
    if stopped_any:
        assert "stopped early: at epoch 1 of the tuning stage" in md
