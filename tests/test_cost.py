"""The bill before a study (`plan --calibrate`) and after it (the report's cost table)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from analysis.cost import cost_sentence, group_costs, resource_of, study_cost
from tests.conftest import tiny_spec
from tune_jobs.calibrate import Timing, format_costs, packed, project, setups, slowest, speed_key
from tune_jobs.cli import main
from tune_jobs.study.grid import cells
from tune_jobs.study.spec import load_study

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
    assert "metric_per_resource_hour" not in costs  # a mean accuracy over hours is a rate of nothing
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
    (["--calibrate", "--price-per-hour", "0"], "--price-per-hour: must be a finite number > 0"),
    (["--calibrate", "--steps", "0"], "--steps"),
    (["--price-per-hour", "2"], "--price-per-hour: only with --calibrate"),
    (["--address", "auto"], "--address: only with --calibrate"),
    (["--calibrate", "--json"], "--json: cannot be combined with --calibrate"),
    (["--device", "cpu"], "--device: only with --calibrate"),
    (["--calibrate-alone"], "--calibrate-alone: only with --calibrate"),
    (["--calibrate", "--device", "gpu0"], "--device: not a torch device"),
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


ONE = "scenarios:\n  - {name: vup, layers: all, components: v+up}\n"


def test_ray_packs_floor_one_over_the_gpu_share_trials_on_a_gpu():
    assert [packed({"gpu": g}) for g in (0.25, 0.5, 1 / 3, 0.4, 0.35, 0.6, 1, 2)] == [4, 2, 3, 2, 2, 1, 1, 1]
    assert packed({"cpu": 4}) == packed({"cpu": 4, "gpu": 0}) == 1


def test_copies_timed_at_once_count_as_the_slowest():
    a = Timing(startup_s=5, train_s_per_sample=0.02, eval_s=3, checkpoint_s=1, train_rows=96, device="cuda:0")
    b = Timing(startup_s=4, train_s_per_sample=0.025, eval_s=4, checkpoint_s=0.5, train_rows=96, device="cuda:0")
    both = slowest([a, b])
    assert (both.startup_s, both.train_s_per_sample, both.eval_s, both.checkpoint_s) == (5, 0.025, 4, 1)
    assert both.copies == 2 and both.train_spread == pytest.approx(0.2) and both.device == "cuda:0"


@pytest.mark.parametrize("copies,needles", [
    (4, ["timed 4 copies of each setup at once on cuda:0, 2 CPU thread(s) each: at {gpu: 0.25} Ray runs 4 trials "
         "on one GPU; a trial's time is the slowest copy's (the fastest trained up to 10% faster)"]),
    (1, ["timed ONE trial alone on cuda:0: at {gpu: 0.25} Ray runs 4 trials on one GPU at once, so a real trial can "
         "take up to 4x longer than projected here"]),
])
def test_the_table_says_how_many_trials_shared_the_gpu_when_timed(tmp_path, tiny_bert_dir, copies, needles):
    study = load_study(tiny_spec(tmp_path, tiny_bert_dir, ONE, resources={"cpu": 2, "gpu": 0.25}))
    timing = Timing(10, 0.01, 20, 2, 96, copies=copies, train_spread=0.1 if copies > 1 else 0.0, device="cuda:0")
    timings = {key: timing for key in setups(study)}
    text = format_costs(study, timings, project(study, timings), None, "on this machine")
    for needle in needles:
        assert needle in text
    whole = load_study(tiny_spec(tmp_path, tiny_bert_dir, ONE, resources={"cpu": 2, "gpu": 1}))
    text = format_costs(whole, timings, project(whole, timings), None, "on this machine")
    assert "at once" not in text and "alone" not in text  # a whole GPU each: one trial per GPU, as timed


@pytest.mark.slow
def test_a_fractional_gpu_is_timed_as_that_many_trials_at_once_or_said_to_be_alone(tmp_path, tiny_bert_dir, capsys):
    """{gpu: 0.5}: 2 copies in 2 processes at once (here the CPU stands in for the GPU, 1 thread each), or one alone
    with the warning that a real trial can take up to twice as long."""
    spec = tiny_spec(tmp_path, tiny_bert_dir, ONE, resources={"cpu": 1, "gpu": 0.5})
    assert main(["plan", str(spec), "--calibrate", "--steps", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "calibration on this machine: 1 distinct setup(s), each trial at {gpu: 0.5}" in out
    assert "timed 2 copies of each setup at once on cpu (the CPU standing in for the GPU the trials ask for), 1 CPU " \
           "thread(s) each: at {gpu: 0.5} Ray runs 2 trials on one GPU; a trial's time is the slowest copy's" in out
    together = float(next(line for line in out.splitlines() if line.startswith("study  ")).split()[2])
    assert together > 0
    assert main(["plan", str(spec), "--calibrate", "--steps", "2", "--device", "cpu", "--calibrate-alone"]) == 0
    out = capsys.readouterr().out
    assert "timed ONE trial alone on cpu (the CPU standing in for the GPU the trials ask for): at {gpu: 0.5} Ray " \
           "runs 2 trials on one GPU at once, so a real trial can take up to 2x longer than projected here" in out
    assert "copies of each setup at once" not in out


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_a_gpu_spec_calibrated_without_a_gpu_is_one_line_not_a_cpu_timing(tmp_path, tiny_bert_dir, capsys):
    spec = tiny_spec(tmp_path, tiny_bert_dir, ONE, resources={"cpu": 1, "gpu": 0.5})
    assert main(["plan", str(spec), "--calibrate", "--steps", "2"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "resources.gpu: the trial asks for a GPU but node" in err[0]
    assert "calibration" not in captured.out  # nothing was timed on the CPU in its place


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_copies_that_fail_raise_their_error_instead_of_waiting(tmp_path, tiny_bert_dir):
    from tune_jobs.calibrate import measure_together
    from tune_jobs.train.device import DeviceUnavailable

    trial = next(iter(setups(load_study(tiny_spec(tmp_path, tiny_bert_dir, ONE))).values()))
    with pytest.raises(DeviceUnavailable):  # raised in each spawned copy, pickled back, raised here
        measure_together(trial.to_dict(), 2, steps=1, device="cuda")


@pytest.mark.slow
def test_on_a_cluster_copies_at_a_gpu_share_run_as_tasks_packed_on_one_gpu(tmp_path, tiny_bert_dir):
    """`plan --calibrate --address` at {gpu: 0.5}: 2 tasks in one bundle of the node's one GPU, timed together (the
    node declares a GPU; `device` cpu times on its CPU)."""
    from ray.cluster_utils import Cluster

    from tune_jobs.calibrate import calibrate

    study = load_study(tiny_spec(tmp_path, tiny_bert_dir, ONE, resources={"cpu": 1, "gpu": 0.5}))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 1})
    try:
        timings = calibrate(study, device="cpu", steps=2, address=cluster.address)
    finally:
        cluster.shutdown()
    (timing,) = timings.values()
    assert timing.copies == 2 and timing.device == "cpu" and timing.train_rows == 96 and timing.train_s_per_sample > 0

