"""Which grid point runs next: a Ray Tune `Searcher` over a study's cells (adaptive repeats, growing a study).

A cell is a grid point without its repeat. The searcher hands out every cell's repeats 0..min-1 in grid order,
then adds repeat k to a cell only once repeats 0..k-1 have all finished and the 95 % t half-width of their final
metric is still above the cell's target (k < max). Each decision therefore sees exactly the results of seeds
base_seed + 0..k-1, never whichever trials happened to finish first: the design is the same under any
concurrency or completion order. That rule stops on precision, never on significance.

`repeats: {until: decided}` stops on significance, with its error rate kept: the cells of one model on one data set
(the report's comparison stratum; under `select:` the confirm stage's chosen candidates) take their rounds together,
and after each round only the cells whose comparison with the best one is open get a seed
(`analysis.sequential.rounds`: the report's own test, alpha split over the planned looks); with `reference:` the
comparisons with that scenario's cell instead.

Resuming or growing: the driver builds a fresh searcher from the current spec with Ray's recorded trials; Tune
then restores the searcher's checkpoint into it, and the recorded trials win where the two differ (Ray resumes
exactly those; the checkpoint can be a save behind). Grid points neither records are new, and run.

Tune, then confirm (`select:`): a placement's candidates (say its learning rates) run their tune cells first; once
every tune trial of the placement has finished (or been stopped early), `choose` picks the candidate with the best
mean final selection-split metric, and only that candidate's confirm cell runs (adaptive repeats included). The
choice is a function of those results alone, so it too is the same under any concurrency, completion order or
resume (given the results; where ASHA stopped trials, which ones it stopped depends on the order they reached a rung).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ray.tune.search import Searcher, SearchGenerator
from scipy import stats

from analysis.sequential import PENDING, Arm, rounds
from record.fields import CONFIRM, TUNE
from record.metrics import DEV, is_diverged, resolution
from record.outcome import STOPPED, TERMINATED, outcome
from tune_jobs.study.grid import Cell


@dataclass(frozen=True)
class RecordedTrial:
    """A trial of Ray's experiment state: finished (with its final metric, None if it has none) or to be resumed."""

    trial_id: str
    name: str
    finished: bool
    value: float | None = None
    selection: float | None = None  # its final selection-split metric (tune-then-confirm chooses on it)
    stopped: bool = False  # ended early by the tuning stage's scheduler (ASHA)
    examples: float | None = None  # rows of its dev split (the step of an accuracy)


def halfwidth(values: Sequence[float], level: float = 0.95) -> float:
    """Half-width of the Student t interval of the mean of `values`; inf below 2 values."""
    n = len(values)
    if n < 2:
        return math.inf
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return float(stats.t.ppf((1 + level) / 2, n - 1) * std / math.sqrt(n))


def final_value(result: dict | None, metric: str) -> float | None:
    """A trial's final metric from its last result; None when it diverged or reported no finite value."""
    if not result or is_diverged(result):
        return None
    value = result.get(metric)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


ALPHA = 0.05  # the report's default family-wise error rate, which `until: decided` spends over its looks


def stratum_of(cell: Cell) -> tuple:
    """What a cell is compared within (the report's comparison stratum): its model, its data and its parameter
    budget (placements at equal cost are compared with each other only, as the report does)."""
    t = cell.trials[0]
    return (t.model, t.model_init, t.dataset, t.task, t.eval_split, tuple(t.text_columns or ()), t.label_column,
            t.budget)


# a candidate: its cell label, (selection value, stopped) per seed
Tuned = tuple[str, Sequence[tuple[float | None, bool]]]


def choose(candidates: Sequence[Tuned], higher_is_better: bool = True) -> str | None:
    """The candidate to confirm: the best mean selection value among those whose every tune seed ran to the end
    (a stopped seed was judged worse by the scheduler); only if none did, the best among the rest. Ties go to the
    first in grid order; None when no seed of any candidate has a value (all diverged)."""
    def mean(seeds) -> float | None:
        values = [v for v, _ in seeds if v is not None]
        return sum(values) / len(values) if values else None

    sign = 1.0 if higher_is_better else -1.0
    for pool in ([c for c in candidates if not any(stopped for _, stopped in c[1])], candidates):
        scored = [(label, mean(seeds)) for label, seeds in pool if mean(seeds) is not None]
        if scored:
            best = max(sign * m for _, m in scored)
            return next(label for label, m in scored if sign * m == best)
    return None


class StudySearcher(Searcher):
    """Hands out a study's grid points (Tune configs with `trial_name`), adaptively per cell; see the module doc."""

    # Tune copies an experiment's *.json / *.pkl files back to the driver before it restores a searcher.
    CKPT_FILE_TMPL = "study-searcher-state-{}.json"

    def __init__(self, cells: Sequence[Cell], metric: str, mode: str = "max", max_concurrent: int | None = None,
                 recorded: Sequence[RecordedTrial] | None = None, selection_metric: str | None = None):
        super().__init__(metric=metric, mode=mode)
        self.selection_metric = selection_metric  # tune-then-confirm chooses on it (None: no `select:`)
        self.cells = tuple(cells)
        self.max_concurrent = max_concurrent
        self._points = {t.trial_name: t for c in self.cells for t in c.trials}
        self._tuned: dict[str, list[Cell]] = {}  # a placement's candidates (tune cells), by its choice label
        for c in self.cells:
            if c.stage == TUNE and c.choice is not None:
                self._tuned.setdefault(c.choice, []).append(c)
        self._recorded = None if recorded is None else tuple(r for r in recorded if r.name in self._points)
        self.assigned: dict[str, str] = {}  # Tune trial id -> trial name
        self.results: dict[str, float | None] = {}  # trial name -> final metric (None: diverged, or none reported)
        self.errored: set[str] = set()  # trial names whose trial errored; `lora-sweep run` resumes them
        self.selection: dict[str, float | None] = {}  # trial name -> final selection-split metric (tune stage)
        self.stopped: set[str] = set()  # trial names their scheduler stopped early
        self.examples: dict[str, float | None] = {}  # trial name -> rows of its dev split (the metric's step)
        self._strata: dict[tuple, list[Cell]] = {}  # the cells that compete under `until: decided`, per stratum
        for c in self.cells:
            if c.stage != TUNE:
                self._strata.setdefault(stratum_of(c), []).append(c)
        self._version, self._memo = 0, {}  # decisions are cached until a result arrives
        self._take_recorded()

    def _take_recorded(self) -> None:
        if self._recorded is not None:
            self.assigned = {r.trial_id: r.name for r in self._recorded}
            self.results = {r.name: r.value for r in self._recorded if r.finished}
            self.selection = {r.name: r.selection for r in self._recorded if r.finished}
            self.stopped = {r.name for r in self._recorded if r.finished and r.stopped}
            self.examples = {r.name: r.examples for r in self._recorded if r.finished}
            self.errored = set()
        self._version += 1

    def live(self) -> set[str]:
        """Trial names handed out and still running or waiting (neither finished nor errored)."""
        return set(self.assigned.values()) - set(self.results) - self.errored

    def chosen(self, choice: str) -> str | None:
        """The label of the candidate a placement confirms; None while any of its tune trials is unfinished (one
        that errored for good too: the sweep then ends with it errored, and a rerun resumes it, then confirms)."""
        tuned = self._tuned.get(choice, [])
        names = [t.trial_name for c in tuned for t in c.trials]
        if any(name not in self.results for name in names):
            return None
        return choose([(c.label, [(self.selection.get(t.trial_name), t.trial_name in self.stopped) for t in c.trials])
                       for c in tuned], self.mode == "max")

    def wanted(self, cell: Cell) -> int:
        """How many repeats the cell needs as far as its finished results tell: min, or more while unsettled (a
        candidate's confirm cell: none until it is chosen)."""
        if cell.stage == CONFIRM and cell.choice is not None and self.chosen(cell.choice) != cell.label:
            return 0
        if cell.repeats.until_decided and cell.repeats.adaptive:
            return self._decided(stratum_of(cell)).get(cell.label, cell.repeats.min)
        n = cell.repeats.min
        while n < cell.repeats.max and self._unsettled(cell, n):
            n += 1
        return n

    def _decided(self, key: tuple) -> dict[str, int]:
        """Seeds per cell of one stratum under `until: decided` (see the module doc); every cell at its min while a
        candidate of the stratum is still being chosen."""
        memo = self._memo.get(key)
        if memo is not None and memo[0] == self._version:
            return memo[1]
        cells = self._strata[key]
        if any(c.choice is not None and self.chosen(c.choice) is None for c in cells):
            counts = {}
        else:
            live = [c for c in cells if c.choice is None or self.chosen(c.choice) == c.label]
            names = {(c.label, t.seed): t.trial_name for c in live for t in c.trials}

            def value_of(label: str, seed: int):
                name = names[(label, seed)]
                return self.results[name] if name in self.results else PENDING

            steps = [resolution(self.metric, self.examples.get(n)) for n in names.values()]
            wanted_ref = next((c.repeats.reference for c in live if c.repeats.reference), None)
            reference = next((c.label for c in live if c.trials[0].scenario == wanted_ref), None)
            counts = rounds([Arm(c.label, tuple(t.seed for t in c.trials),
                                 c.repeats.min if c.repeats.until_decided else self.wanted(c),
                                 c.repeats.until_decided) for c in live],
                            value_of, self.metric, ALPHA, max(c.repeats.looks for c in live), reference,
                            resolution=max((x for x in steps if x), default=None))
        self._memo[key] = (self._version, counts)
        return counts

    def _unsettled(self, cell: Cell, n: int) -> bool:
        """Whether repeats 0..n-1, all finished, leave the cell above its half-width target."""
        target = cell.repeats.until_halfwidth
        names = [t.trial_name for t in cell.trials[:n]]
        if target is None or any(name not in self.results for name in names):
            return False  # decide only on complete information: no seed's result is seen early
        values = [v for v in (self.results[name] for name in names) if v is not None]
        return bool(values) and halfwidth(values) > target  # no value at all (every seed diverged): stop

    def to_run(self) -> Iterator[str]:
        """Grid points wanted now and not handed out yet, in grid order."""
        taken = set(self.assigned.values())
        for cell in self.cells:
            yield from (t.trial_name for t in cell.trials[:self.wanted(cell)] if t.trial_name not in taken)

    def suggest(self, trial_id: str) -> dict | str | None:
        live = self.live()
        if self.max_concurrent and len(live) >= self.max_concurrent:
            return None
        name = next(self.to_run(), None)
        if name is None:
            return None if live else Searcher.FINISHED
        self.assigned[trial_id] = name
        return self._points[name].to_dict()

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        name = self.assigned.get(trial_id)
        if name is None:
            return
        self._version += 1
        if error:
            self.errored.add(name)
        else:
            self.errored.discard(name)
            self.results[name] = final_value(result, self.metric)
            self.examples[name] = (result or {}).get(f"{DEV}examples")
            if self.selection_metric:
                self.selection[name] = final_value(result, self.selection_metric)
            point = self._points[name]  # Tune says `error` or not: without one, the trial returned (TERMINATED)
            if outcome(TERMINATED, result, {"epochs": point.epochs, "stage": point.stage}) == STOPPED:
                self.stopped.add(name)

    def save(self, checkpoint_path: str) -> None:
        state = {"assigned": self.assigned, "results": self.results, "errored": sorted(self.errored),
                 "selection": self.selection, "stopped": sorted(self.stopped), "examples": self.examples}
        Path(checkpoint_path).write_text(json.dumps(state))

    def restore(self, checkpoint_path: str) -> None:
        state = json.loads(Path(checkpoint_path).read_text())
        self.assigned = {i: n for i, n in state["assigned"].items() if n in self._points}
        self.results = {n: v for n, v in state["results"].items() if n in self._points}
        self.errored = set(state["errored"]) & set(self._points)
        self.selection = {n: v for n, v in state.get("selection", {}).items() if n in self._points}
        self.stopped = set(state.get("stopped", ())) & set(self._points)
        self.examples = {n: v for n, v in state.get("examples", {}).items() if n in self._points}
        self._take_recorded()


class StudySearch(SearchGenerator):
    """Tune's SearchGenerator around a StudySearcher, minus restoring its `finished` flag: that saved flag would
    keep a grown study, or a cell whose errored trial is resumed, from running anything new."""

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self._finished = False


__all__ = ["RecordedTrial", "StudySearch", "StudySearcher", "choose", "final_value", "halfwidth"]
