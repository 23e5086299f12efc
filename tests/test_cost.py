"""The bill before a study (`plan --calibrate`) and after it (the report's cost table)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from analysis.cost import cost_sentence, group_costs, resource_of, study_cost
from tests.conftest import tiny_spec
from tune_jobs.calibrate import Timing, project, setups, speed_key
from tune_jobs.cli import main
from tune_jobs.grid import cells
from tune_jobs.spec import load_study

SCEN = ("scenarios:\n  - {name: vup, layers: all, components: v+up}\n"
        "  - {name: head, baseline: classifier_only}\n")


def test_a_trial_is_billed_in_what_ray_reserved_for_it():
    assert resource_of('{"cpu": 4, "gpu": 1}') == ("GPU", 1.0)
    assert resource_of({"cpu": 2}) == ("CPU", 2.0)
    assert resource_of(None) == ("trial", 1.0)  # made before trials recorded their resources


def test_measured_costs_per_group_and_for_the_study():
    trials = pd.DataFrame({
        "group": ["a", "a", "b", "b", None], "total_time_s": [1800.0, 3600.0, 900.0, 900.0, 3600.0],
        "resources": [json.dumps({"cpu": 4, "gpu": 0.5})] * 5,
    })
    good = trials.iloc[:4]
    summary = pd.DataFrame({"group": ["b", "a"], "mean": [0.9, 0.8]})
    costs = group_costs(good, summary, price=2.0)
    assert list(costs["group"]) == ["b", "a"]  # the summary's order
    a = costs.set_index("group").loc["a"]
    assert (a["trials"], a["trial_hours"], a["resource"], a["resource_hours"], a["cost"]) == (2, 1.5, "GPU", 0.75, 1.5)
    assert a["metric_per_resource_hour"] == pytest.approx(0.8 / 0.375)
    bill = study_cost(trials, good, price=2.0)
    assert bill["trial_hours"] == 3.0 and bill["resource_hours"] == 1.5 and bill["cost"] == 3.0
    assert bill["left_out_resource_hours"] == 0.5  # the fifth trial ran for an hour and was left out
    sentence = cost_sentence(bill)
    assert sentence.startswith("This answer cost 1.5 GPU-hours over 5 trials (3 trial-hours), 3.00 at 2 per GPU-hour")
    assert "0.5 of those hours went to runs left out" in sentence


def test_the_projection_multiplies_timed_setups_by_the_grid_and_ranges_adaptive_repeats(tmp_path, tiny_bert_dir):
    study = load_study(tiny_spec(tmp_path, tiny_bert_dir, SCEN, repeats={"min": 2, "max": 5, "until_halfwidth": 0.01},
                                 train={"epochs": 3, "learning_rate": [1e-3, 2e-3]}, resources={"gpu": 0.5}))
    found = setups(study)
    assert len(found) == 2  # the learning-rate axis does not change a step's time: one setup per placement
    timings = {key: Timing(startup_s=10, train_s_per_sample=0.01, eval_s=20, checkpoint_s=2, train_rows=96)
               for key in found}
    assert timings[speed_key(cells(study)[0].trials[0])].trial_seconds(3) == 10 + 3 * (0.96 + 20 + 2)
    costs = {c.scenario: c for c in project(study, timings)}
    per_trial_h = (10 + 3 * 22.96) / 3600
    assert costs["vup"].trials == (4, 10)  # 2 learning rates x min 2 .. max 5 seeds
    assert costs["vup"].trial_hours == pytest.approx((4 * per_trial_h, 10 * per_trial_h))
    assert costs["vup"].resource_hours == pytest.approx((2 * per_trial_h, 5 * per_trial_h))  # at {gpu: 0.5}


def test_plan_calibrate_times_each_setup_and_says_what_it_needs_without(tmp_path, tiny_bert_dir, capsys):
    spec = tiny_spec(tmp_path, tiny_bert_dir, SCEN)
    assert main(["plan", str(spec)]) == 0
    assert "`--calibrate` times a few steps of each of the 2 distinct setup(s)" in capsys.readouterr().out
    assert main(["plan", str(spec), "--calibrate", "--steps", "2", "--price-per-hour", "3"]) == 0
    out = capsys.readouterr().out
    assert "calibration on this machine: 2 distinct setup(s), each trial at {cpu: 1}" in out
    study_line = next(line for line in out.splitlines() if line.startswith("study  "))  # the totals row
    trials, trial_hours, cpu_hours, money = study_line.split()[1:]
    assert trials == "2" and float(trial_hours) == float(cpu_hours) > 0
    assert float(money.replace(",", "")) == pytest.approx(3 * float(cpu_hours), rel=0.01)


@pytest.mark.parametrize("argv,needle", [
    (["--calibrate", "--price-per-hour", "0"], "--price-per-hour: must be a number > 0"),
    (["--calibrate", "--steps", "0"], "--steps"),
    (["--price-per-hour", "2"], "--price-per-hour: only with --calibrate"),
    (["--address", "auto"], "--address: only with --calibrate"),
    (["--calibrate", "--json"], "--json: cannot be combined with --calibrate"),
])
def test_bad_cost_flags_are_one_line(tmp_path, tiny_bert_dir, capsys, argv, needle):
    assert main(["plan", str(tiny_spec(tmp_path, tiny_bert_dir, SCEN)), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


@pytest.mark.slow
def test_calibration_on_a_cluster_node_times_in_a_task_with_the_trials_resources(tmp_path, tiny_bert_dir):
    """`plan --calibrate --address`: each setup is timed in a Ray task that reserves what a trial reserves."""
    from ray.cluster_utils import Cluster

    from tune_jobs.calibrate import calibrate

    study = load_study(tiny_spec(tmp_path, tiny_bert_dir, SCEN, resources={"cpu": 2}))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    try:
        timings = calibrate(study, steps=2, address=cluster.address)
    finally:
        cluster.shutdown()
    assert set(timings) == set(setups(study))
    for timing in timings.values():
        assert timing.train_rows == 96 and timing.train_s_per_sample > 0 and timing.eval_s > 0
        assert timing.trial_seconds(2) > timing.startup_s
