"""Which grid point runs next: a Ray Tune `Searcher` over a study's cells (adaptive repeats, growing a study).

A cell is a grid point without its repeat. The searcher hands out every cell's repeats 0..min-1 in grid order,
then adds repeat k to a cell only once repeats 0..k-1 have all finished and the 95 % t half-width of their final
metric is still above the cell's target (k < max). Each decision therefore sees exactly the results of seeds
base_seed + 0..k-1, never whichever trials happened to finish first: the design is the same under any
concurrency or completion order. It stops on precision, never on significance.

Resuming or growing: the driver builds a fresh searcher from the current spec with Ray's recorded trials; Tune
then restores the searcher's checkpoint into it, and the recorded trials win where the two differ (Ray resumes
exactly those; the checkpoint can be a save behind). Grid points neither records are new, and run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ray.tune.search import SearchGenerator, Searcher
from scipy import stats

from record.metrics import is_diverged

from .grid import Cell


@dataclass(frozen=True)
class RecordedTrial:
    """A trial of Ray's experiment state: finished (with its final metric, None if it has none) or to be resumed."""

    trial_id: str
    name: str
    finished: bool
    value: float | None = None


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


class StudySearcher(Searcher):
    """Hands out a study's grid points (Tune configs with `trial_name`), adaptively per cell; see the module doc."""

    # Tune copies an experiment's *.json / *.pkl files back to the driver before it restores a searcher.
    CKPT_FILE_TMPL = "study-searcher-state-{}.json"

    def __init__(self, cells: Sequence[Cell], metric: str, mode: str = "max", max_concurrent: int | None = None,
                 recorded: Sequence[RecordedTrial] | None = None):
        super().__init__(metric=metric, mode=mode)
        self.cells = tuple(cells)
        self.max_concurrent = max_concurrent
        self._points = {t.trial_name: t for c in self.cells for t in c.trials}
        self._recorded = None if recorded is None else tuple(r for r in recorded if r.name in self._points)
        self.assigned: dict[str, str] = {}  # Tune trial id -> trial name
        self.results: dict[str, float | None] = {}  # trial name -> final metric (None: diverged, or none reported)
        self.errored: set[str] = set()  # trial names whose trial errored; `lora-sweep run` resumes them
        self._take_recorded()

    def _take_recorded(self) -> None:
        if self._recorded is not None:
            self.assigned = {r.trial_id: r.name for r in self._recorded}
            self.results = {r.name: r.value for r in self._recorded if r.finished}
            self.errored = set()

    def live(self) -> set[str]:
        """Trial names handed out and still running or waiting (neither finished nor errored)."""
        return set(self.assigned.values()) - set(self.results) - self.errored

    def wanted(self, cell: Cell) -> int:
        """How many repeats the cell needs as far as its finished results tell: min, or more while unsettled."""
        n = cell.repeats.min
        while n < cell.repeats.max and self._unsettled(cell, n):
            n += 1
        return n

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
        if error:
            self.errored.add(name)
        else:
            self.errored.discard(name)
            self.results[name] = final_value(result, self.metric)

    def save(self, checkpoint_path: str) -> None:
        state = {"assigned": self.assigned, "results": self.results, "errored": sorted(self.errored)}
        Path(checkpoint_path).write_text(json.dumps(state))

    def restore(self, checkpoint_path: str) -> None:
        state = json.loads(Path(checkpoint_path).read_text())
        self.assigned = {i: n for i, n in state["assigned"].items() if n in self._points}
        self.results = {n: v for n, v in state["results"].items() if n in self._points}
        self.errored = set(state["errored"]) & set(self._points)
        self._take_recorded()


class StudySearch(SearchGenerator):
    """Tune's SearchGenerator around a StudySearcher, minus restoring its `finished` flag: that saved flag would
    keep a grown study, or a cell whose errored trial is resumed, from running anything new."""

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self._finished = False


__all__ = ["RecordedTrial", "StudySearch", "StudySearcher", "final_value", "halfwidth"]
