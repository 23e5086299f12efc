"""How a trial ended (or that it has not yet): Ray Tune's statuses, the project's outcomes, and the one rule from
the first to the second. The sweep's progress line and summary, the searcher, resuming, `export` and `analyze`
(trials.parquet's `status` column) all ask `outcome`; nothing else spells a status.

Ray knows five statuses. It records a trial TERMINATED however its trial function returned: after its last epoch,
after a NaN/inf loss (the trial's last report says `diverged: true`, see `record.metrics.is_diverged`), or when a
tuning stage's scheduler (ASHA, `tune_jobs.sweep.early_stop`) ended it before its last epoch. The outcomes tell those
apart. They keep Ray's word where Ray has one (TERMINATED, ERROR, RUNNING, PENDING), so the sweep's summary
(`3 TERMINATED, 1 DIVERGED, 2 STOPPED`) and trials.parquet read as they always did.
"""

from __future__ import annotations

from collections.abc import Mapping

from .fields import TUNE
from .metrics import is_diverged

# Ray Tune's trial statuses (`Trial.status`; `status` in experiment_state-*.json): the input of `outcome`
TERMINATED, ERROR, RUNNING, PENDING, PAUSED = "TERMINATED", "ERROR", "RUNNING", "PENDING", "PAUSED"
RAY_STATUSES = (TERMINATED, ERROR, RUNNING, PENDING, PAUSED)

# The outcomes: what `outcome` returns
FINISHED = TERMINATED  # ran to its last epoch (or reported no epoch count to compare with)
STOPPED = "STOPPED"  # a tuning stage's scheduler (ASHA) ended it before its last epoch: never averaged
DIVERGED = "DIVERGED"  # its loss turned NaN/inf: a result (not retried, never averaged), not an error
ERRORED = ERROR  # it raised (Ray retries it up to max_failures; a resume runs it again)
# RUNNING: running now; PENDING: not started, or PAUSED (waiting for resources, or to be resumed)
OUTCOMES = (FINISHED, STOPPED, DIVERGED, ERRORED, RUNNING, PENDING)
COMPLETED = (FINISHED, STOPPED, DIVERGED)  # ended without an error: kept on a resume, its last report is its result

# trials.parquet's `status` column (a public contract: `WHERE status = 'TERMINATED'` in DuckDB): Ray's status as
# the experiment state records it (UNKNOWN where there is none and nothing else tells), STOPPED for a trial stopped
# early. A diverged trial stays TERMINATED there (its `diverged` column says so): the column's values predate DIVERGED.
UNKNOWN = "UNKNOWN"
STATUS_VALUES = (TERMINATED, STOPPED, ERROR, RUNNING, PENDING, PAUSED, UNKNOWN)


def outcome(status: str | None, last: Mapping | None, config: Mapping | None, *, complete: bool = True) -> str:
    """How a trial ended (one of OUTCOMES) from Ray's `status`, its `last` report and its `config`.

    - ERROR -> ERRORED, RUNNING -> RUNNING; PENDING, PAUSED and anything Ray may add (or None) -> PENDING: not
      ended, whatever its last report says (Ray calls a callback before it updates the status: pass the status the
      trial is moving to).
    - TERMINATED with a diverged last report -> DIVERGED.
    - TERMINATED with a last report before the config's last epoch (`epoch` < `epochs`) -> STOPPED, only where both
      facts hold that make it a scheduler's stop: the config's `stage` is the tuning stage (only a tuning stage's
      trials are ever stopped early; a confirm trial, or one of a study without `select:`, runs all its epochs),
      and `complete`: the reports read are all the trial made (False where result.json is cut: its last readable
      report is then damage, not a stop; `analyze` flags such a trial in its `problem` column instead).
    - else TERMINATED -> FINISHED (no epoch in the report, or no `epochs` in the config: nothing says it was cut).

    The rule was four before (the sweep's summary, resuming, the searcher and `export` called any short TERMINATED
    trial stopped; `analyze` only a tuning-stage one with an intact result.json). A short trial outside a tuning
    stage cannot come from this project's scheduler, so only `analyze`'s reading is right; for the other callers
    it changes nothing a study can produce (the searcher only asks about tuning-stage candidates).
    """
    if status == ERROR:
        return ERRORED
    if status == RUNNING:
        return RUNNING
    if status != TERMINATED:
        return PENDING
    if is_diverged(last):
        return DIVERGED
    config = config or {}
    epoch, epochs = (last or {}).get("epoch"), config.get("epochs")
    short = isinstance(epoch, int) and isinstance(epochs, int) and not isinstance(epoch, bool) and epoch < epochs
    return STOPPED if short and complete and config.get("stage") == TUNE else FINISHED


def column_status(status: str | None, ended: str) -> str:
    """trials.parquet's `status` for a trial Ray recorded as `status` whose outcome is `ended`: Ray's status (UNKNOWN
    for none), STOPPED for a trial stopped early."""
    return STOPPED if ended == STOPPED else status or UNKNOWN


__all__ = ["COMPLETED", "DIVERGED", "ERROR", "ERRORED", "FINISHED", "OUTCOMES", "PAUSED", "PENDING", "RAY_STATUSES",
           "RUNNING", "STATUS_VALUES", "STOPPED", "TERMINATED", "UNKNOWN", "column_status", "outcome"]
