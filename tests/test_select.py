"""Tune, then confirm (`select:`): the spec, the two stages of the grid, the searcher's choice and ASHA within a
placement; without training (the sweep end to end is in tests/test_select_sweep.py)."""

import itertools

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from tests.conftest import REPO
from tests.test_searcher import Driver
from tests.test_spec_cli import spec_file
from tune_jobs.cli import main
from tune_jobs.plan import format_table, plan
from tune_jobs.study.grid import cells, trial_counts
from tune_jobs.study.select_section import EarlyStop
from tune_jobs.study.spec import Repeats, load_study
from tune_jobs.sweep.early_stop import early_stopping
from tune_jobs.sweep.searcher import RecordedTrial, StudySearcher, choose

RANK_STUDY = """\
name: t
model: roberta-base
data: {dataset: glue/sst2, selection: {fraction: 0.05}}
train: {epochs: 3, learning_rate: [1.0e-3, 2.0e-3, 4.0e-3]}
repeats: 5
scenarios:
  - {name: a, layers: all, components: all, ranks: [4, 8]}
  - {name: head, baseline: classifier_only, train: {learning_rate: 4.0e-3}}
select: {axes: [learning_rate], tune_repeats: 1, early_stop: {grace_epochs: 1, reduction: 3}}
"""


def study(tmp_path, text=RANK_STUDY, profile=None):
    return load_study(spec_file(tmp_path, text), profile)


def test_two_stages_per_placement_with_fresh_seeds_for_the_confirm_stage(tmp_path):
    grid = cells(study(tmp_path))
    tune = [c for c in grid if c.stage == "tune"]
    assert [c.label for c in tune] == [f"a-r{r}-lr{lr}" for r in (4, 8) for lr in ("1e-3", "2e-3", "4e-3")]
    assert {c.choice for c in tune} == {"a-r4", "a-r8"} and all(c.repeats == Repeats(1, 1) for c in tune)
    assert all([t.seed for t in c.trials] == [42] for c in tune)
    confirm = [c for c in grid if c.stage == "confirm" and c.choice == "a-r8"]
    assert [c.label for c in confirm] == [f"a-r8-lr{lr}" for lr in ("1e-3", "2e-3", "4e-3")]
    assert [t.trial_name for t in confirm[0].trials] == [f"a-r8-lr1e-3-rep{k}" for k in range(1, 6)]
    assert [t.seed for t in confirm[0].trials] == [43, 44, 45, 46, 47] and confirm[0].repeats == Repeats(5, 5)
    assert all(t.stage == "confirm" and t.selected == ["learning_rate"] for t in confirm[0].trials)
    head = [c for c in grid if c.trials[0].scenario == "head"]  # nothing to choose: confirmed directly, same seeds
    assert len(head) == 1 and head[0].stage == "confirm" and head[0].choice is None
    assert [t.seed for t in head[0].trials] == [43, 44, 45, 46, 47] and head[0].trials[0].selected is None
    # every candidate's tune seed, one confirm stage per placement, the baseline: 6 + 2 x 5 + 5
    assert trial_counts(study(tmp_path)) == (21, 21)


def test_confirm_repeats_may_be_adaptive_and_override_the_study_repeats(tmp_path):
    text = RANK_STUDY.replace("tune_repeats: 1,", "tune_repeats: 2, confirm_repeats: {min: 3, max: 6, "
                                                  "until_halfwidth: 0.01},")
    grid = cells(study(tmp_path, text))
    assert [t.seed for t in grid[0].trials] == [42, 43]
    confirm = next(c for c in grid if c.stage == "confirm" and c.choice)
    assert confirm.repeats == Repeats(3, 6, 0.01) and [t.repeat for t in confirm.trials] == [2, 3, 4, 5, 6, 7]
    assert trial_counts(study(tmp_path, text)) == (6 * 2 + 3 * 3, 6 * 2 + 3 * 6)


def test_plan_shows_both_stages_and_leaves_the_choice_open(tmp_path):
    st = study(tmp_path)
    planned = plan(st)
    assert len(planned) == 21 and sum(p.trial.stage == "tune" for p in planned) == 6
    text = format_table(st, planned)
    assert "a-r8-lr?-rep1" in text and "chosen" in text and " tune " in text and " confirm " in text
    assert "6 tune trials (1 seed(s) per candidate) choose each placement's learning_rate" in text
    assert "15 confirm trials" in text and "ASHA stops" in text
    rows = [p.row() for p in planned if p.chosen_later]
    assert len(rows) == 10 and all(r["chosen_later"] == ["learning_rate"] and r["stage"] == "confirm" for r in rows)


def test_paper_rank_study_tune_then_confirm_is_48_trials_instead_of_90():
    spec = REPO / "tune_jobs" / "experiments" / "rank.yaml"
    assert trial_counts(load_study(spec, "paper")) == (90, 90)
    confirm = load_study(spec, "paper_confirm")
    assert trial_counts(confirm) == (48, 48) and confirm.select.early_stop == EarlyStop(4, 3)
    assert confirm.model == "roberta-base" and confirm.scenarios[0].train.epochs == 14  # extends: paper
    assert trial_counts(load_study(spec, "demo_confirm")) == (24, 24)


@pytest.mark.parametrize("edit, field, message", [
    (lambda t: t.replace(", selection: {fraction: 0.05}", ""), "select", "holds none out"),
    (lambda t: t.replace("axes: [learning_rate]", "axes: [batch_size]"), "select.axes",
     "batch_size is not an axis of any scenario"),
    (lambda t: t.replace("axes: [learning_rate]", "axes: [learnig_rate]"), "select.axes",
     "did you mean 'learning_rate'"),
    (lambda t: t.replace("grace_epochs: 1", "grace_epochs: 3"), "select.early_stop.grace_epochs",
     "below the tuning trials' epochs (3)"),
    (lambda t: t.replace("reduction: 3", "reduction: 1"), "select.early_stop.reduction", "> 1"),
    (lambda t: t.replace("epochs: 3,", "epochs: [2, 3],").replace("grace_epochs: 1", "grace_epochs: 3"),
     "select.early_stop.grace_epochs", "below the tuning trials' epochs (3)"),
    (lambda t: t.replace("tune_repeats: 1", "tune_repeats: 0"), "select.tune_repeats", ">= 1"),
    (lambda t: t.replace("select: {axes: [learning_rate], ", "select: {"), "select.axes", "missing"),
    (lambda t: t.replace("tune_repeats: 1", "tune_repeat: 1"), "select.tune_repeat", "unknown key"),
])
def test_bad_select_is_one_line_exit_2(tmp_path, capsys, edit, field, message):
    assert main(["plan", str(spec_file(tmp_path, edit(RANK_STUDY)))]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}:") and message in lines[0], lines


def test_a_profile_extends_another(tmp_path, capsys):
    text = RANK_STUDY + (
        "profiles:\n  quick: {train: {epochs: 2}, select: null}\n  quick_tuned: {extends: quick, select: "
        "{axes: [learning_rate]}}\n  loop_a: {extends: loop_b}\n  loop_b: {extends: loop_a}\n")
    assert study(tmp_path, text, "quick").select is None
    tuned = study(tmp_path, text, "quick_tuned")
    assert tuned.select.axes == ("learning_rate",) and tuned.scenarios[0].train.epochs == 2
    assert main(["plan", str(spec_file(tmp_path, text)), "--profile", "loop_a"]) == 2
    assert "profiles.loop_b.extends: profiles extend each other in a circle" in capsys.readouterr().err
    bad = text.replace("extends: quick,", "extends: quack,")
    assert main(["plan", str(spec_file(tmp_path, bad)), "--profile", "quick_tuned"]) == 2
    assert "profiles.quick_tuned.extends: unknown profile (got 'quack')" in capsys.readouterr().err
    listed = text.replace("extends: quick,", "extends: [quick],")
    assert main(["plan", str(spec_file(tmp_path, listed)), "--profile", "quick_tuned"]) == 2
    assert "profiles.quick_tuned.extends: unknown profile (got ['quick'])" in capsys.readouterr().err


# ---------------------------------------------------------------- the choice


def test_choose_prefers_candidates_that_ran_to_the_end_then_the_best_mean():
    assert choose([("a", [(0.80, False)]), ("b", [(0.85, False)]), ("c", [(0.90, True)])]) == "b"
    assert choose([("a", [(0.80, True)]), ("b", [(0.85, True)])]) == "b"  # all stopped: the best of them
    assert choose([("a", [(0.9, False), (0.7, False)]), ("b", [(0.85, False), (0.8, False)])]) == "b"
    assert choose([("a", [(0.8, False)]), ("b", [(0.8, False)])]) == "a"  # a tie: grid order
    assert choose([("a", [(None, False)]), ("b", [(0.6, False)])]) == "b"  # a diverged seed has no value
    assert choose([("a", [(None, False)]), ("b", [(None, False)])]) is None
    assert choose([("a", [(0.3, False)]), ("b", [(0.2, False)])], higher_is_better=False) == "b"


SEL = {"a-r4-lr1e-3-rep0": 0.70, "a-r4-lr2e-3-rep0": 0.80, "a-r4-lr4e-3-rep0": 0.75,
       "a-r8-lr1e-3-rep0": 0.72, "a-r8-lr2e-3-rep0": 0.74, "a-r8-lr4e-3-rep0": 0.90}


def drive(s: StudySearcher, order, stopped=()) -> list[str]:
    """Run the study to the end, each round's trials completed in `order`; tune trials report SEL on `sel_accuracy`."""
    d, ran = Driver(s), []
    while names := d.ask():
        ran += names
        for name in order(names):
            epoch = 1 if name in stopped else 3
            d.finish(name, 0.5, sel_accuracy=SEL.get(name, 0.5), epoch=epoch)
    assert s.suggest("last") == Searcher.FINISHED
    return ran


def test_the_searcher_confirms_only_each_placements_best_candidate_in_any_completion_order(tmp_path):
    grid = cells(study(tmp_path))
    runs = [drive(StudySearcher(grid, "val_accuracy", selection_metric="sel_accuracy"), order)
            for order in (lambda n: n, lambda n: list(reversed(n)))]
    assert sorted(runs[0]) == sorted(runs[1])
    confirmed = sorted({n.rsplit("-rep", 1)[0] for n in runs[0] if not n.endswith("rep0")})
    assert confirmed == ["a-r4-lr2e-3", "a-r8-lr4e-3", "head"]
    assert len(runs[0]) == 21
    # the tune trials come first; a placement's confirm stage only after every one of its candidates finished
    first_confirm = min(i for i, n in enumerate(runs[0]) if n.startswith("a-") and not n.endswith("rep0"))
    assert all(n.endswith("rep0") or n.startswith("head") for n in runs[0][:first_confirm])


def test_a_stopped_candidate_is_not_confirmed_and_resume_keeps_the_choice(tmp_path):
    grid = cells(study(tmp_path))
    s = StudySearcher(grid, "val_accuracy", selection_metric="sel_accuracy")
    ran = drive(s, lambda n: n, stopped={"a-r8-lr4e-3-rep0"})  # the best on the selection split, but stopped
    assert "a-r8-lr2e-3-rep1" in ran and not any(n.startswith("a-r8-lr4e-3-rep") and n != "a-r8-lr4e-3-rep0"
                                                  for n in ran)
    assert s.stopped == {"a-r8-lr4e-3-rep0"}
    # a driver restart: Ray's recorded trials (finished ones with their selection value and stop) give the same choice
    recorded = [RecordedTrial(tid, name, True, 0.5, SEL.get(name, 0.5), name == "a-r8-lr4e-3-rep0")
                for name, tid in zip(ran, (f"t{i}" for i in itertools.count()))]
    again = StudySearcher(grid, "val_accuracy", selection_metric="sel_accuracy", recorded=recorded)
    assert again.chosen("a-r8") == "a-r8-lr2e-3" and again.chosen("a-r4") == "a-r4-lr2e-3"
    assert again.suggest("new") == Searcher.FINISHED
    path = tmp_path / "state.json"
    s.save(str(path))
    restored = StudySearcher(grid, "val_accuracy", selection_metric="sel_accuracy")
    restored.restore(str(path))
    assert restored.stopped == s.stopped and restored.chosen("a-r8") == "a-r8-lr2e-3"


def test_no_confirm_stage_runs_while_a_candidate_is_still_training(tmp_path):
    grid = cells(study(tmp_path))
    s = StudySearcher(grid, "val_accuracy", selection_metric="sel_accuracy")
    d = Driver(s)
    handed = d.ask()
    for name in handed:
        if name != "a-r4-lr4e-3-rep0":
            d.finish(name, 0.5, sel_accuracy=SEL.get(name, 0.5), epoch=3)
    later = d.ask()
    assert s.chosen("a-r4") is None and not any(n.startswith("a-r4-") for n in later)
    assert any(n.startswith("a-r8-lr4e-3-rep") for n in later)  # the other placement goes on


# ---------------------------------------------------------------- ASHA within a placement


def trial(name: str, config: dict) -> Trial:
    return Trial("__fake", config={"trial_name": name, **config}, stub=True)


def test_asha_compares_a_trial_only_with_its_own_placements_candidates_on_the_selection_split(tmp_path):
    grid = cells(study(tmp_path))
    sched = early_stopping(grid, EarlyStop(grace_epochs=1, reduction=2), "sel_accuracy", "max")
    assert sched.set_search_properties("val_accuracy", "max") and sched.sel_metric == "sel_accuracy"
    trials = {n: trial(n, {}) for n in ("a-r4-lr1e-3-rep0", "a-r4-lr2e-3-rep0", "a-r8-lr1e-3-rep0",
                                        "a-r8-lr2e-3-rep0", "a-r8-lr2e-3-rep1", "head-rep1")}
    for t in trials.values():
        sched.on_trial_add(None, t)

    def result(name, sel, dev=0.5):
        return sched.on_trial_result(None, trials[name], {"epoch": 1, "sel_accuracy": sel, "val_accuracy": dev})

    assert result("a-r4-lr1e-3-rep0", 0.90) == TrialScheduler.CONTINUE  # first at the rung
    assert result("a-r8-lr1e-3-rep0", 0.60) == TrialScheduler.CONTINUE  # first of *its* placement: r=4 is not a rival
    assert result("a-r4-lr2e-3-rep0", 0.80, dev=0.99) == TrialScheduler.STOP  # worse on sel; dev never decides
    assert result("a-r8-lr2e-3-rep0", 0.70) == TrialScheduler.CONTINUE  # better than its placement's rival
    assert result("a-r8-lr2e-3-rep1", 0.10) == TrialScheduler.CONTINUE  # a confirm trial is never stopped
    assert result("head-rep1", 0.10) == TrialScheduler.CONTINUE
    assert set(sched.by_group) == {"a-r4", "a-r8"}


# ---------------------------------------------------------------- progress counts trials the searcher hands out later


def test_the_eta_counts_trials_not_handed_out_yet_and_says_when_it_is_a_range():
    from tune_jobs.sweep.progress import eta_text, trials_left

    count = {"RUNNING": 2, "PENDING": 0, "TERMINATED": 6, "DIVERGED": 1, "ERROR": 1}
    assert trials_left(count, None) == (2, 2)  # what Tune knows: an underestimate with adaptive repeats
    assert trials_left(count, (12, 20)) == (4, 12)  # the study's min and max, less what ended
    assert trials_left(count, (8, 8)) == (2, 2)  # never fewer than those running
    assert eta_text(60.0, (4, 12), 2) == "2.0-6.0 min" and eta_text(60.0, (4, 4), 2) == "2.0 min"


def test_confirm_stage_until_decided_compares_the_chosen_candidates_only_and_resumes_alike(tmp_path):
    text = RANK_STUDY.replace("tune_repeats: 1,", "tune_repeats: 1, confirm_repeats: {min: 3, max: 6, "
                                                  "until: decided},")
    grid = cells(study(tmp_path, text))
    confirm = [c for c in grid if c.stage == "confirm"]
    assert {t.looks for c in confirm for t in c.trials} == {4} and {t.looks for c in grid if c.stage == "tune"
                                                                    for t in c.trials} == {1}

    def value(name: str) -> float:  # the two chosen candidates within noise of each other; head far below
        k = int(name.rsplit("-rep", 1)[1])
        wiggle = [0.004, -0.003, 0.002, -0.004, 0.003, -0.002, 0.001][k]
        return 0.60 + wiggle / 3 if name.startswith("head") else 0.85 + (wiggle if "r4" in name else -wiggle)

    runs = []
    for order in (lambda n: n, lambda n: list(reversed(n))):
        s, ran = StudySearcher(grid, "val_accuracy", selection_metric="sel_accuracy"), []
        d = Driver(s)
        while names := d.ask():
            ran += names
            for name in order(names):
                d.finish(name, value(name), sel_accuracy=SEL.get(name, 0.5), epoch=3)
        runs.append(sorted(ran))
    assert runs[0] == runs[1]
    confirmed = [n for n in runs[0] if not n.endswith("rep0")]
    assert sorted(n for n in confirmed if n.startswith("head")) == [f"head-rep{k}" for k in (1, 2, 3)]  # decided
    assert sorted(n for n in confirmed if n.startswith("a-r4-lr2e-3")) == [f"a-r4-lr2e-3-rep{k}" for k in range(1, 7)]
    assert not any(n.startswith(("a-r4-lr1e-3", "a-r8-lr1e-3")) for n in confirmed)  # never chosen: never confirmed
