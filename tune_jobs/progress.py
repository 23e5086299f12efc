"""A concise progress line for a sweep (instead of Ray's full table): counts, best so far, ETA.

A diverged trial (NaN/inf loss) ends TERMINATED with `diverged: True` in its last result; it is counted, and
summarised, as diverged rather than done.
"""

from __future__ import annotations

import sys
import time

from ray import tune

from record.fields import TUNE
from record.metrics import STOPPED, higher_is_better, is_diverged, primary_metric, stopped_early


class ConciseProgress(tune.Callback):
    """One line when a trial starts, finishes or errors, and for epoch reports at most every `min_interval_s`.

    Counts come from Ray's own trial list, so they are right after a resume too. The callback is pickled into
    tuner.pkl with the RunConfig, hence no file handles or clocks in its pickled state.
    """

    def __init__(self, concurrency: int | None, min_interval_s: float = 10.0, totals: tuple[int, int] | None = None):
        self.concurrency = concurrency
        self.min_interval_s = min_interval_s
        # the study's (fewest, most) trials: Tune only knows the trials the searcher has handed out, and adaptive
        # repeats (or a confirm stage) hand theirs out later
        self.totals = totals
        self._reset()

    def _reset(self) -> None:
        self.t0 = time.time()
        self.last_print = 0.0
        self.started_at: dict[str, float] = {}
        self.durations: list[float] = []
        self.best: tuple[float, str] | None = None
        self.max_running = 1

    def __getstate__(self) -> dict:
        return {"concurrency": self.concurrency, "min_interval_s": self.min_interval_s, "totals": self.totals}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    @staticmethod
    def _name(trial) -> str:
        return str(trial.config.get("trial_name", trial.trial_id))

    @staticmethod
    def _status(trial, status: str) -> str:
        diverged = status == "TERMINATED" and is_diverged(trial.last_result)
        return "DIVERGED" if diverged else status

    def _line(self, trials, event: str, force: bool = True, now_status: tuple | None = None) -> None:
        now = time.time()
        if not force and now - self.last_print < self.min_interval_s:
            return
        self.last_print = now
        # Ray calls back before it updates the trial's status; `now_status` = (trial, the status it is moving to)
        status = {t.trial_id: self._status(t, t.status) for t in trials}
        if now_status is not None:
            status[now_status[0].trial_id] = self._status(*now_status)
        count = {s: sum(1 for v in status.values() if v == s)
                 for s in ("RUNNING", "PENDING", "TERMINATED", "DIVERGED", "ERROR")}
        left = trials_left(count, self.totals)
        self.max_running = max(self.max_running, count["RUNNING"])
        best = f"best {self.best[1]} {self.best[0]:.4f}" if self.best else "best -"
        eta = "-"
        if self.durations:
            eta = eta_text(sum(self.durations) / len(self.durations), left, self.concurrency or self.max_running)
        print(f"[{(now - self.t0) / 60:5.1f} min] running {count['RUNNING']} | pending {count['PENDING']} | "
              f"done {count['TERMINATED']} | diverged {count['DIVERGED']} | errored {count['ERROR']} | {best} | "
              f"ETA {eta} | {event}",
              file=sys.stdout, flush=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started_at[trial.trial_id] = time.time()
        self._line(trials, f"started {self._name(trial)}", now_status=(trial, "RUNNING"))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if is_diverged(result):
            self._line(trials, f"{self._name(trial)} diverged: {result.get('diverged_reason')}")
            return
        metric = primary_metric(trial.config)
        acc = result.get(metric)
        if acc is None:
            return
        sign = 1 if higher_is_better(metric) else -1
        if self.best is None or sign * acc > sign * self.best[0]:
            self.best = (float(acc), self._name(trial))
        self._line(trials, f"{self._name(trial)} epoch {result.get('epoch')} {metric} {acc:.4f}", force=False)

    def on_trial_complete(self, iteration, trials, trial, **info):
        start = self.started_at.pop(trial.trial_id, None)
        diverged = self._status(trial, "TERMINATED") == "DIVERGED"
        result = trial.last_result or {}
        stopped = stopped_early(result, trial.config.get("epochs"))
        if start is not None and not diverged and not stopped:  # those end early: their time would skew the ETA
            self.durations.append(time.time() - start)
        word = "diverged (not retried)" if diverged else \
            f"stopped early at epoch {result.get('epoch')} (tuning stage)" if stopped else "finished"
        self._line(trials, f"{word} {self._name(trial)}", now_status=(trial, "TERMINATED"))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.started_at.pop(trial.trial_id, None)
        self._line(trials, f"ERROR in {self._name(trial)} (see {trial.path}/error.txt)", now_status=(trial, "ERROR"))


def trials_left(count: dict[str, int], totals: tuple[int, int] | None) -> tuple[int, int]:
    """(fewest, most) trials still to run: those Tune knows (running, pending), or more where the study's totals say
    that the searcher has yet to hand out some (adaptive repeats, a confirm stage)."""
    known = count["RUNNING"] + count["PENDING"]
    if totals is None:
        return known, known
    ended = count["TERMINATED"] + count["DIVERGED"] + count["ERROR"]
    return max(known, totals[0] - ended), max(known, totals[1] - ended)


def eta_text(mean_trial_s: float, left: tuple[int, int], parallel: int) -> str:
    """`4.2 min`, or a range `4.2-9.8 min` while adaptive repeats may still add trials."""
    low, high = (mean_trial_s * n / max(parallel, 1) / 60 for n in left)
    return f"{low:.1f} min" if left[0] == left[1] else f"{low:.1f}-{high:.1f} min"


def result_status(result) -> str:
    """TERMINATED, ERROR, DIVERGED for a trial that ended normally with `diverged: True`, or STOPPED for one the
    tuning stage's early stopping ended before its last epoch."""
    if result.error:
        return "ERROR"
    if is_diverged(result.metrics):
        return "DIVERGED"
    return STOPPED if stopped_early(result.metrics, (result.config or {}).get("epochs")) else "TERMINATED"


def print_summary(results, wall_s: float, path: str) -> None:
    """The final lines of a sweep: statuses, best trial, diverged trials, where the results are."""
    statuses: dict[str, int] = {}
    for r in results:
        statuses[result_status(r)] = statuses.get(result_status(r), 0) + 1
    metric = primary_metric(next((r.config for r in results if r.config), {}))
    done = [r for r in results if result_status(r) == "TERMINATED" and r.metrics.get(metric) is not None
            and (r.config or {}).get("stage") != TUNE]  # the best on dev among trials compared on dev
    best = ""
    if done:
        sign = 1 if higher_is_better(metric) else -1
        b = max(done, key=lambda r: sign * r.metrics[metric])
        best = f"; best {b.config.get('trial_name')} {metric} {b.metrics[metric]:.4f}"
    summary = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    print(f"lora-sweep: {len(results)} trials ({summary}) in {wall_s / 60:.1f} min{best}; results in {path}",
          flush=True)
    for r in results:
        if result_status(r) == "DIVERGED":
            print(f"  diverged (not retried, never averaged in): {r.config.get('trial_name')}: "
                  f"{r.metrics.get('diverged_reason')}", flush=True)


def savings_line(results, fixed_max: int, resources: dict) -> str:
    """Trials adaptive repeats ran against the fixed-max design, and the device-hours that saved (mean trial time)."""
    saved = fixed_max - len(results)
    line = f"lora-sweep: ran {len(results)} trials of the fixed-max design's {fixed_max} (saved {saved} trials"
    times = [r.metrics["time_total_s"] for r in results
             if result_status(r) == "TERMINATED" and isinstance(r.metrics.get("time_total_s"), (int, float))]
    if times:
        mean_s = sum(times) / len(times)
        kind = "gpu" if resources.get("gpu") else "cpu"
        amount = resources.get(kind, 1)
        mean = f"{mean_s / 60:.1f} min" if mean_s >= 120 else f"{mean_s:.0f} s"
        hours = saved * mean_s / 3600 * amount
        line += (f", ≈ {hours:.3g} {kind.upper()}-hours at {{{kind}: {amount:g}}} per trial, "
                 f"from the mean trial time of {mean}")
    return line + ")"
