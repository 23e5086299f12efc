"""Early stopping of a tuning stage's candidates: Ray Tune's ASHA, run separately within each placement.

Ray's `AsyncHyperBandScheduler` compares a trial at a rung with every trial that reached the rung. Choosing a
learning rate per rank must compare only that rank's candidates (r = 1 at its best rate is still worse than r = 32,
and must not be stopped for it), so each placement gets an ASHA of its own; confirm-stage trials (the ones compared
on dev) are never stopped. Decisions use the selection split's metric only, whatever metric the Tuner ranks by.
"""

from __future__ import annotations

from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from record.fields import TUNE
from tune_jobs.study.grid import Cell
from tune_jobs.study.select_section import EarlyStop


class PlacementASHA(FIFOScheduler):
    """One `AsyncHyperBandScheduler` (time attribute `epoch`, one bracket) per placement's tuning trials; FIFO for
    every other trial."""

    def __init__(self, groups: dict[str, str], settings: EarlyStop, metric: str, mode: str, max_epochs: int):
        super().__init__()
        self.groups = dict(groups)  # trial name -> its placement (tune-stage trials only)
        self.settings, self.sel_metric, self.sel_mode, self.max_epochs = settings, metric, mode, max_epochs
        self.by_group: dict[str, AsyncHyperBandScheduler] = {}
        self.of_trial: dict[str, AsyncHyperBandScheduler] = {}  # Tune trial id -> its placement's ASHA

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        return True  # keep the selection metric: the Tuner's (dev) metric must never decide a stop

    def _asha(self, group: str) -> AsyncHyperBandScheduler:
        if group not in self.by_group:
            self.by_group[group] = AsyncHyperBandScheduler(
                time_attr="epoch", metric=self.sel_metric, mode=self.sel_mode, max_t=self.max_epochs,
                grace_period=self.settings.grace_epochs, reduction_factor=self.settings.reduction,
                stop_last_trials=False)  # a trial that reaches its last epoch ends as it would have
        return self.by_group[group]

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        group = self.groups.get(trial.config.get("trial_name"))
        if group is not None:
            self.of_trial[trial.trial_id] = asha = self._asha(group)
            asha.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        asha = self.of_trial.get(trial.trial_id)
        return TrialScheduler.CONTINUE if asha is None else asha.on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        asha = self.of_trial.pop(trial.trial_id, None)
        if asha is not None and result:
            asha.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        asha = self.of_trial.pop(trial.trial_id, None)
        if asha is not None:
            asha.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return f"ASHA per placement ({len(self.by_group)} placements) on {self.sel_metric}"


def early_stopping(grid: list[Cell], settings: EarlyStop, metric: str, mode: str) -> PlacementASHA:
    """The scheduler for a study's tune cells: each candidate's trials grouped by the placement that chooses."""
    tuned = [c for c in grid if c.stage == TUNE and c.choice is not None]
    groups = {t.trial_name: c.choice for c in tuned for t in c.trials}
    return PlacementASHA(groups, settings, metric, mode, max((t.epochs for c in tuned for t in c.trials), default=1))


__all__ = ["PlacementASHA", "early_stopping"]
