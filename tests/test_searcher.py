"""The StudySearcher without training: fake completions drive adaptive repeats, restore, growth; and the spec side."""

import itertools
import json
import math
import sys

import pytest
from ray.tune.search import Searcher
from scipy import stats

from tests.test_spec_cli import GOOD, spec_file
from tune_jobs.cli import main
from tune_jobs.study.grid import cells, trial_counts
from tune_jobs.study.spec import Repeats, load_study
from tune_jobs.sweep.searcher import RecordedTrial, StudySearch, StudySearcher, halfwidth

TWO_CELLS = GOOD + "  - {name: b, baseline: classifier_only}\n"


def grid(tmp_path, repeats, text=TWO_CELLS):
    return cells(load_study(spec_file(tmp_path, text + f"repeats: {json.dumps(repeats)}\n")))


def searcher(grid_cells, **kw):
    return StudySearcher(grid_cells, "val_accuracy", **kw)


class Driver:
    """Plays Tune: asks for trials with fresh ids and completes them with values from `results` (name -> value)."""

    def __init__(self, s: StudySearcher, prefix: str = "t"):
        self.s, self.ids, self.counter, self.prefix = s, {}, itertools.count(), prefix

    def ask(self) -> list[str]:
        """Every trial the searcher hands out now (until it says wait or finished)."""
        names = []
        while True:
            trial_id = f"{self.prefix}{next(self.counter)}"  # unique, as Tune's ids are
            got = self.s.suggest(trial_id)
            if not isinstance(got, dict):
                return names
            self.ids[got["trial_name"]] = trial_id
            names.append(got["trial_name"])

    def finish(self, name: str, value, **result) -> None:
        self.s.on_trial_complete(self.ids[name], result={"val_accuracy": value, **result})

    def run(self, values: dict, order=lambda names: names) -> list[str]:
        """Run to the end, completing everything handed out per round in `order`; the names that ran."""
        ran = []
        while names := self.ask():
            ran += names
            for name in order(names):
                self.finish(name, values[name])
        assert self.s.suggest("last") == Searcher.FINISHED
        return ran


def test_halfwidth_is_the_student_t_interval():
    values = [0.91, 0.93, 0.92, 0.95]
    low, high = stats.t.interval(0.95, len(values) - 1, loc=sum(values) / 4, scale=stats.sem(values))
    assert halfwidth(values) == pytest.approx((high - low) / 2)
    assert halfwidth([0.9]) == math.inf and halfwidth([0.9, 0.9]) == 0


def test_fixed_repeats_hand_out_the_grid_in_order_then_finish(tmp_path):
    s = searcher(grid(tmp_path, 2))
    d = Driver(s)
    assert d.ask() == ["a-r8-rep0", "a-r8-rep1", "b-rep0", "b-rep1"]
    assert s.suggest("x") is None  # waiting on live trials, not finished
    for name in ("a-r8-rep0", "a-r8-rep1", "b-rep0"):
        d.finish(name, 0.9)
    assert s.suggest("y") is None
    d.finish("b-rep1", None, diverged=True)
    assert s.suggest("z") == Searcher.FINISHED
    assert s.results["b-rep1"] is None


def test_concurrency_limit_counts_live_trials(tmp_path):
    d = Driver(searcher(grid(tmp_path, 2), max_concurrent=1))
    assert d.ask() == ["a-r8-rep0"]
    d.finish("a-r8-rep0", 0.9)
    assert d.ask() == ["a-r8-rep1"]


ADAPTIVE = {"min": 2, "max": 4, "until_halfwidth": 0.01}
# cell a: noisy (two seeds 0.05 apart, then still too wide at three); cell b: quiet (identical seeds)
VALUES = {"a-r8-rep0": 0.80, "a-r8-rep1": 0.85, "a-r8-rep2": 0.82, "a-r8-rep3": 0.83,
          "b-rep0": 0.70, "b-rep1": 0.70, "b-rep2": 0.70, "b-rep3": 0.70}


def test_adaptive_noisy_cell_gets_more_repeats_up_to_max(tmp_path):
    ran = Driver(searcher(grid(tmp_path, ADAPTIVE))).run(VALUES)
    assert sorted(ran) == ["a-r8-rep0", "a-r8-rep1", "a-r8-rep2", "a-r8-rep3", "b-rep0", "b-rep1"]
    assert halfwidth([0.80, 0.85, 0.82]) > 0.01  # why a reached max


def test_adaptive_stops_when_settled(tmp_path):
    values = dict(VALUES, **{"a-r8-rep1": 0.80, "a-r8-rep2": 0.801})
    s = searcher(grid(tmp_path, ADAPTIVE))
    assert sorted(Driver(s).run(values)) == ["a-r8-rep0", "a-r8-rep1", "b-rep0", "b-rep1"]
    values = dict(VALUES, **{"a-r8-rep1": 0.803, "a-r8-rep2": 0.801})  # wide at 2 seeds, within 0.01 at 3
    assert halfwidth([0.80, 0.803]) > 0.01 >= halfwidth([0.80, 0.803, 0.801])
    assert sorted(Driver(searcher(grid(tmp_path, ADAPTIVE))).run(values)) == [
        "a-r8-rep0", "a-r8-rep1", "a-r8-rep2", "b-rep0", "b-rep1"]


def test_adaptive_decides_only_when_the_cells_outstanding_repeats_finished(tmp_path):
    s = searcher(grid(tmp_path, ADAPTIVE))
    d = Driver(s)
    d.ask()
    d.finish("a-r8-rep0", 0.80)
    assert d.ask() == []  # a-r8-rep1 still running: no decision from one seed
    d.finish("a-r8-rep1", 0.85)
    assert d.ask() == ["a-r8-rep2"]


@pytest.mark.parametrize("order", [lambda n: n, lambda n: n[::-1], lambda n: sorted(n, key=lambda x: x[-1])],
                         ids=["in-order", "reversed", "by-repeat"])
@pytest.mark.parametrize("limit", [None, 1, 3])
def test_adaptive_design_is_independent_of_completion_order_and_concurrency(tmp_path, order, limit):
    ran = Driver(searcher(grid(tmp_path, ADAPTIVE), max_concurrent=limit)).run(VALUES, order)
    assert sorted(ran) == ["a-r8-rep0", "a-r8-rep1", "a-r8-rep2", "a-r8-rep3", "b-rep0", "b-rep1"]


def test_diverged_results_never_count_toward_the_halfwidth(tmp_path):
    all_diverged = {n: None for n in VALUES}
    assert sorted(Driver(searcher(grid(tmp_path, ADAPTIVE))).run(all_diverged)) == [
        "a-r8-rep0", "a-r8-rep1", "b-rep0", "b-rep1"]  # nothing to measure: stop at min
    one_left = dict(VALUES, **{"b-rep1": None})  # b has one value at min: not settled, a third seed runs
    ran = Driver(searcher(grid(tmp_path, ADAPTIVE))).run(one_left)
    assert {"b-rep2", "b-rep3"} & set(ran) == {"b-rep2"}  # b-rep0 and b-rep2 agree: settled at 3


def test_an_errored_trial_holds_its_cell_and_resumes_live(tmp_path):
    s = searcher(grid(tmp_path, ADAPTIVE))
    d = Driver(s)
    d.ask()
    d.finish("a-r8-rep0", 0.80)
    s.on_trial_complete(d.ids["a-r8-rep1"], error=True)
    d.finish("b-rep0", 0.7)
    d.finish("b-rep1", 0.7)
    assert s.suggest("u") == Searcher.FINISHED  # nothing live; cell a cannot decide without its errored seed
    recorded = [RecordedTrial(d.ids[n], n, n != "a-r8-rep1", VALUES.get(n)) for n in d.ids]
    again = searcher(grid(tmp_path, ADAPTIVE), recorded=recorded)  # `lora-sweep run` resumes errored trials
    assert again.live() == {"a-r8-rep1"} and again.suggest("v") is None
    again.on_trial_complete(d.ids["a-r8-rep1"], result={"val_accuracy": 0.85})
    assert again.suggest("w")["trial_name"] == "a-r8-rep2"


def test_save_restore_continues_without_rerunning(tmp_path):
    cells_ = grid(tmp_path, ADAPTIVE)
    s = searcher(cells_)
    d = Driver(s)
    d.ask()
    for name in ("a-r8-rep0", "a-r8-rep1", "b-rep0"):
        d.finish(name, VALUES[name])
    s.save(str(tmp_path / "state.json"))
    fresh = searcher(cells_)
    fresh.restore(str(tmp_path / "state.json"))
    assert (fresh.assigned, fresh.results, fresh.live()) == (s.assigned, s.results, {"b-rep1"})
    assert fresh.suggest("n1")["trial_name"] == "a-r8-rep2"
    assert fresh.suggest("n2") is None


def test_recorded_trials_win_over_the_checkpoint(tmp_path):
    cells_ = grid(tmp_path, 2)
    s = searcher(cells_)
    d = Driver(s)
    d.ask()
    s.save(str(tmp_path / "state.json"))
    # Ray recorded a-r8-rep0 (finished) and b-rep0 under an id the checkpoint lacks; it lost a-r8-rep1 and b-rep1
    recorded = [RecordedTrial(d.ids["a-r8-rep0"], "a-r8-rep0", True, 0.9), RecordedTrial("other", "b-rep0", False)]
    fresh = searcher(cells_, recorded=recorded)
    fresh.restore(str(tmp_path / "state.json"))
    assert fresh.assigned == {d.ids["a-r8-rep0"]: "a-r8-rep0", "other": "b-rep0"}
    assert Driver(fresh, "u").ask() == ["a-r8-rep1", "b-rep1"]


def test_growth_hands_out_exactly_the_new_grid_points(tmp_path):
    first = searcher(grid(tmp_path, 1))
    d = Driver(first)
    d.run({"a-r8-rep0": 0.9, "b-rep0": 0.8})
    recorded = [RecordedTrial(i, n, True, first.results[n]) for n, i in d.ids.items()]
    more = TWO_CELLS.replace("components: all}", "components: all, ranks: [8, 16]}") \
        + "  - {name: c, layers: [0], components: v}\n"
    grown = searcher(grid(tmp_path, 2, more), recorded=recorded)
    assert Driver(grown, "u").ask() == ["a-r8-rep1", "a-r16-rep0", "a-r16-rep1", "b-rep1", "c-r8-rep0", "c-r8-rep1"]


def test_restored_search_generator_may_hand_out_trials_again(tmp_path):
    gen = StudySearch(searcher(grid(tmp_path, 1)))
    # what Tune saved after the first run's searcher said FINISHED (num_samples=-1: sys.maxsize samples)
    gen.set_state({"counter": 2, "total_samples": sys.maxsize, "finished": True, "experiment": None})
    assert not gen.is_finished() and gen.get_state()["counter"] == 2


# ---------------------------------------------------------------- until: decided (seeds to a verdict)

THREE_CELLS = TWO_CELLS + "  - {name: c, layers: [0], components: v}\n"
DECIDED = {"min": 3, "max": 6, "until": "decided"}
NOISE = [0.001, -0.002, 0.0015, 0.0, -0.001, 0.002]
# a best; b far below (decided at the first look); c within noise of a (open at every look, so it runs to max)
DECIDED_VALUES = {**{f"a-r8-rep{k}": 0.90 + e for k, e in enumerate(NOISE)},
                  **{f"b-rep{k}": 0.70 + e / 2 for k, e in enumerate(NOISE)},
                  **{f"c-r8-rep{k}": 0.90 + 0.006 * (-1) ** k for k in range(6)}}


def test_until_decided_adds_seeds_only_where_the_comparison_with_the_best_is_open(tmp_path):
    cells_ = grid(tmp_path, DECIDED, THREE_CELLS)
    assert {t.looks for c in cells_ for t in c.trials} == {4}  # the report spends alpha over the 4 planned looks
    ran = Driver(searcher(cells_)).run(DECIDED_VALUES)
    assert sorted(n for n in ran if n.startswith("b-")) == ["b-rep0", "b-rep1", "b-rep2"]
    assert len([n for n in ran if n.startswith(("a-", "c-"))]) == 12  # both to max: a vs c never settles


@pytest.mark.parametrize("order", [lambda n: n[::-1], lambda n: sorted(n, key=lambda x: x[-1])])
@pytest.mark.parametrize("limit", [None, 2])
def test_until_decided_is_the_same_design_under_any_order_and_concurrency(tmp_path, order, limit):
    cells_ = grid(tmp_path, DECIDED, THREE_CELLS)
    reference = sorted(Driver(searcher(cells_)).run(DECIDED_VALUES))
    assert sorted(Driver(searcher(cells_, max_concurrent=limit)).run(DECIDED_VALUES, order)) == reference


def test_until_decided_waits_for_the_whole_round_and_resumes_from_the_record(tmp_path):
    cells_ = grid(tmp_path, DECIDED, THREE_CELLS)
    s = searcher(cells_)
    d = Driver(s)
    first = d.ask()
    assert len(first) == 9
    for name in first[:-1]:
        d.finish(name, DECIDED_VALUES[name])
    assert d.ask() == []  # one run of the round is out: no look yet
    d.finish(first[-1], DECIDED_VALUES[first[-1]])
    assert sorted(d.ask()) == ["a-r8-rep3", "c-r8-rep3"]
    recorded = [RecordedTrial(i, n, n in s.results, s.results.get(n)) for n, i in d.ids.items()]
    again = Driver(searcher(cells_, recorded=recorded), "u")
    assert again.ask() == []  # the same round is live, nothing new handed out
    for name in ("a-r8-rep3", "c-r8-rep3"):
        again.s.on_trial_complete(d.ids[name], result={"val_accuracy": DECIDED_VALUES[name]})
    assert sorted(again.ask()) == ["a-r8-rep4", "c-r8-rep4"]


def test_until_decided_stops_everyone_once_every_comparison_is_decided(tmp_path):
    values = dict(DECIDED_VALUES, **{f"c-r8-rep{k}": 0.80 + e for k, e in enumerate(NOISE[::-1])})
    ran = Driver(searcher(grid(tmp_path, DECIDED, THREE_CELLS))).run(values)
    assert len(ran) == 9  # a > c and a > b at the first look: nobody needs a fourth seed


# ---------------------------------------------------------------- the spec: repeats mapping, precedence, plan


def test_repeats_mapping_and_precedence(tmp_path):
    text = TWO_CELLS.replace("baseline: classifier_only}", "baseline: classifier_only, repeats: 4}") \
        + "repeats: {min: 3, max: 10, until_halfwidth: 0.004}\n"
    study = load_study(spec_file(tmp_path, text))
    assert [sc.repeats for sc in study.scenarios] == [Repeats(3, 10, 0.004), Repeats(4, 4)]
    assert trial_counts(study) == (7, 14)
    text += "profiles: {p: {repeats: {min: 2, max: 3, until_halfwidth: 0.01}}}\n"
    study = load_study(spec_file(tmp_path, text), "p")
    assert {sc.repeats for sc in study.scenarios} == {Repeats(2, 3, 0.01)}
    assert [t.seed - study.base_seed for t in cells(study)[0].trials] == [0, 1, 2]


@pytest.mark.parametrize("value,field,message", [
    ("{min: 4, max: 3, until_halfwidth: 0.01}", "repeats.min", "must be <= repeats.max (3)"),
    ("{min: 0, max: 3, until_halfwidth: 0.01}", "repeats.min", "integer >= 1"),
    ("{min: 1, max: 3, until_halfwidth: 0}", "repeats.until_halfwidth", "> 0"),
    ("{min: 1, max: 3, until_halfwidth: -1}", "repeats.until_halfwidth", "> 0"),
    ("{min: 1, max: 3, until_halfwith: 0.1}", "repeats.until_halfwith", "did you mean 'until_halfwidth'"),
    ("{min: 1, max: 3}", "repeats.until", "missing"),
    ("{min: 3, max: 6, until: settled}", "repeats.until", "unknown rule"),
    ("{min: 1, max: 6, until: decided}", "repeats.min", "must be >= 2 with until: decided"),
    ("{min: 3, max: 6, until: decided, until_halfwidth: 0.01}", "repeats.until", "not both"),
    ("many", "repeats", "integer >= 1 or a mapping"),
])
def test_bad_repeats_is_one_line_exit_2(tmp_path, capsys, value, field, message):
    assert main(["plan", str(spec_file(tmp_path, TWO_CELLS + f"repeats: {value}\n"))]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}:") and message in lines[0], lines


def test_bad_scenario_repeats_names_the_scenario(tmp_path, capsys):
    text = TWO_CELLS.replace("baseline: classifier_only}", "baseline: classifier_only, repeats: {min: 2}}")
    assert main(["plan", str(spec_file(tmp_path, text))]) == 2
    assert "scenarios[1] (b).repeats.max: missing" in capsys.readouterr().err


def test_plan_prints_fewest_and_most_trials(tmp_path, capsys):
    assert main(["plan", str(spec_file(tmp_path, TWO_CELLS + f"repeats: {json.dumps(ADAPTIVE)}\n"))]) == 0
    out = capsys.readouterr().out
    assert "4 to 8 trials, 2 distinct configurations" in out
    assert "min 2, max 4, until_halfwidth 0.01" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if "-rep" in line}
    assert rows["b-rep1"][4] == "1" and rows["b-rep2"][4] == "2+"
    assert main(["plan", str(spec_file(tmp_path, TWO_CELLS + f"repeats: {json.dumps(ADAPTIVE)}\n")), "--json"]) == 0
    assert [r["conditional"] for r in json.loads(capsys.readouterr().out)] == [False, False, True, True] * 2


def test_an_experiment_without_searcher_state_is_refused_before_ray_starts(tmp_path, tiny_bert_dir, capsys):
    """An experiment of the grid-search version: Tune could not continue it with a searcher; say so, start nothing."""
    import ray

    from tests.conftest import tiny_spec
    from tune_jobs.run import main as sweep_main

    spec = tiny_spec(tmp_path, tiny_bert_dir, "scenarios:\n  - {name: head, baseline: classifier_only}\n")
    exp = tmp_path / "store" / "old"
    exp.mkdir(parents=True)
    (exp / "tuner.pkl").write_bytes(b"")
    trial = {"trial_id": "abc", "status": "TERMINATED", "relative_logdir": "head-rep0",
             "config": {"grid_index": 0, "trial_name": "head-rep0"}}
    (exp / "experiment_state-2026-01-01_00-00-00.json").write_text(
        json.dumps({"trial_data": [[json.dumps(trial), json.dumps({"last_result": {"val_accuracy": 0.5}})]]}))
    assert sweep_main([str(spec), "--storage", str(tmp_path / "store"), "--name", "old"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not ray.is_initialized()
    assert captured.err.startswith(f"error: --name: the experiment at {exp} has no lora-sweep searcher state")


def test_until_decided_against_a_reference_scenario(tmp_path):
    ref = {**DECIDED, "reference": "b"}
    # against b (far below both): a and c are decided at the first look, though a vs c is open
    ran = Driver(searcher(grid(tmp_path, ref, THREE_CELLS))).run(DECIDED_VALUES)
    assert len(ran) == 9
    assert "until decided against b" in Repeats(3, 6, until_decided=True, reference="b").describe()


@pytest.mark.parametrize("repeats,message", [
    ({**DECIDED, "reference": "zz"}, "repeats.reference: not a scenario of this study (got 'zz')"),
    ({**DECIDED, "reference": "a"}, "scenario 'a' is 2 groups"),
    ({"min": 3, "max": 6, "until_halfwidth": 0.01, "reference": "b"}, "only with until: decided"),
])
def test_bad_reference_is_one_line_exit_2(tmp_path, capsys, repeats, message):
    text = THREE_CELLS.replace("components: all}", "components: all, ranks: [4, 8]}")
    assert main(["plan", str(spec_file(tmp_path, text + f"repeats: {json.dumps(repeats)}\n"))]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
