"""A concise progress line for a sweep (instead of Ray's full table): counts, best so far, ETA.

How a trial ended is `record.outcome`'s: a diverged trial (NaN/inf loss) ends TERMINATED with `diverged: True` in
its last result; it is counted, and summarised, as diverged rather than done. An errored trial's line, and the
summary, show its error's last line; a sweep whose trials stay pending because no node could ever hold one says so
(an autoscaler may yet add such nodes).
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from ray import tune

from record.fields import TUNE
from record.metrics import higher_is_better, is_diverged, primary_metric
from record.outcome import (
    COMPLETED,
    DIVERGED,
    ERROR,
    ERRORED,
    FINISHED,
    OUTCOMES,
    PENDING,
    RUNNING,
    STOPPED,
    TERMINATED,
    outcome,
)


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
        self.hint: str | None = None  # the pending hint last printed
        self.hint_checked = 0.0

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
        """The trial's outcome, given Ray's `status` for it."""
        return outcome(status, trial.last_result, trial.config)

    def _line(self, trials, event: str, force: bool = True, now_status: tuple | None = None) -> None:
        now = time.time()
        if not force and now - self.last_print < self.min_interval_s:
            return
        self.last_print = now
        # Ray calls back before it updates the trial's status; `now_status` = (trial, the status it is moving to)
        status = {t.trial_id: self._status(t, t.status) for t in trials}
        if now_status is not None:
            status[now_status[0].trial_id] = self._status(*now_status)
        count = {s: sum(1 for v in status.values() if v == s) for s in OUTCOMES}
        left = trials_left(count, self.totals)
        self.max_running = max(self.max_running, count[RUNNING])
        best = f"best {self.best[1]} {self.best[0]:.4f}" if self.best else "best -"
        eta = "-"
        if self.durations:
            eta = eta_text(sum(self.durations) / len(self.durations), left, self.concurrency or self.max_running)
        print(f"[{(now - self.t0) / 60:5.1f} min] running {count[RUNNING]} | pending {count[PENDING]} | "
              f"done {count[FINISHED] + count[STOPPED]} | diverged {count[DIVERGED]} | errored {count[ERRORED]} | "
              f"{best} | ETA {eta} | {event}",
              file=sys.stdout, flush=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started_at[trial.trial_id] = time.time()
        self._line(trials, f"started {self._name(trial)}", now_status=(trial, RUNNING))

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
        ended = self._status(trial, TERMINATED)
        if start is not None and ended == FINISHED:  # diverged and stopped end early: their time would skew the ETA
            self.durations.append(time.time() - start)
        word = "diverged (not retried)" if ended == DIVERGED else \
            f"stopped early at epoch {(trial.last_result or {}).get('epoch')} (tuning stage)" if ended == STOPPED \
            else "finished"
        self._line(trials, f"{word} {self._name(trial)}", now_status=(trial, TERMINATED))

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.started_at.pop(trial.trial_id, None)
        self._line(trials, f"retrying {self._name(trial)} (failure {trial.num_failures} of max_failures "
                           f"{trial.max_failures}): {error_line(trial_error_text(trial))}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.started_at.pop(trial.trial_id, None)
        # max_failures allowed a retry, yet it errored: a failure a retry cannot fix (sweep.retry_cannot_fix)
        not_retried = " (not retried)" if 0 < trial.num_failures <= trial.max_failures else ""
        self._line(trials, f"ERROR in {self._name(trial)}{not_retried}: {error_line(trial_error_text(trial))} "
                           f"(see {trial.path}/error.txt)", now_status=(trial, ERROR))

    def on_step_end(self, iteration, trials, **info):
        """While trials are pending that no node could hold: a line saying so, again when it changes or after
        `HINT_REPEAT_S` (Tune's own loop runs many steps a second: the cluster is looked at every `HINT_CHECK_S`)."""
        now = time.time()
        if now - self.hint_checked < HINT_CHECK_S:
            return
        self.hint_checked = now
        hint = pending_hint(trials)
        if hint is not None and (hint != self.hint or now - self.last_print >= HINT_REPEAT_S):
            self._line(trials, hint)
        self.hint = hint


HINT_CHECK_S, HINT_REPEAT_S = 2.0, 60.0


def trial_error_text(trial) -> str:
    """The driver's copy of the trial's error.txt (Tune appends each failure to it), '' if there is none."""
    try:
        return Path(trial.error_file).read_text(errors="replace") if trial.error_file else ""
    except OSError:
        return ""


def error_line(error) -> str:
    """An error's one line: the last line of its text (a traceback ends with `Type: message`; a project InputError's
    message is one line naming the field, the problem and the fix), the module path of the type dropped."""
    text = str(error) if error is not None else ""
    last = next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "unknown error")
    return re.sub(r"^(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*: )", r"\1", last)[:500]


def _bundles(trial) -> list[dict]:
    """The resource bundles a trial asks for, each of which one node must hold (all of them, for STRICT_PACK)."""
    pgf = trial.placement_group_factory  # None until Tune resolved the trial's config
    if pgf is None:
        return []
    return [pgf.required_resources] if pgf.strategy == "STRICT_PACK" else pgf.bundles


def _spec_name(resource: str) -> str:
    """A Ray resource as the spec's `resources` names it (CPU -> cpu, GPU -> gpu; custom ones as they are)."""
    return resource.lower() if resource in ("CPU", "GPU") else resource


def unplaceable(bundle: dict, nodes: list[dict]) -> str | None:
    """Why none of `nodes` (each node's total resources) can hold `bundle`: `gpu 1 (cluster has GPU 0)`; None when
    one can."""
    wanted = {k: v for k, v in bundle.items() if v > 0}
    if any(all(node.get(k, 0) >= v for k, v in wanted.items()) for node in nodes):
        return None
    short = [k for k, v in wanted.items() if max((node.get(k, 0) for node in nodes), default=0) < v]
    if not short:
        return "{" + ", ".join(f"{_spec_name(k)} {v:g}" for k, v in wanted.items()) + "} together on one node"
    parts = []
    for k in short:
        most = max((node.get(k, 0) for node in nodes), default=0)
        seen = f"cluster has {k} 0" if most == 0 else f"largest node has {k} {most:g}"
        parts.append(f"{_spec_name(k)} {wanted[k]:g} ({seen})")
    return ", ".join(parts)


def pending_hint(trials, nodes: list[dict] | None = None) -> str | None:
    """`2 pending: no node offers gpu 1 (cluster has GPU 0); add GPU workers or lower resources.gpu` when pending
    trials ask for more than any live node has (`nodes`: each live node's total resources, default Ray's), else
    None. A state, not a failure: an autoscaling cluster may add such nodes."""
    pending = [t for t in trials if t.status == PENDING]  # Ray's status: waiting for a node to hold it
    if not pending:
        return None
    if nodes is None:
        import ray

        try:
            nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        except Exception:  # noqa: BLE001 (a hint only: never fail the sweep over it)
            return None
    reasons: dict[str, int] = {}
    for trial in pending:
        why = next((w for b in _bundles(trial) if (w := unplaceable(b, nodes)) is not None), None)
        if why is not None:
            reasons[why] = reasons.get(why, 0) + 1
    if not reasons:
        return None
    lines = []
    for why, n in reasons.items():
        fix = "add GPU workers or lower resources.gpu" if "gpu " in why else \
            "add larger workers or lower resources.cpu" if why.startswith("cpu ") else "add nodes that offer it"
        lines.append(f"{n} pending: no node offers {why}; {fix}")
    return " | ".join(lines)


def trials_left(count: dict[str, int], totals: tuple[int, int] | None) -> tuple[int, int]:
    """(fewest, most) trials still to run: those Tune knows (running, pending), or more where the study's totals say
    that the searcher has yet to hand out some (adaptive repeats, a confirm stage). `count`: trials per outcome."""
    known = count.get(RUNNING, 0) + count.get(PENDING, 0)
    if totals is None:
        return known, known
    ended = sum(count.get(s, 0) for s in (*COMPLETED, ERRORED))
    return max(known, totals[0] - ended), max(known, totals[1] - ended)


def eta_text(mean_trial_s: float, left: tuple[int, int], parallel: int) -> str:
    """`4.2 min`, or a range `4.2-9.8 min` while adaptive repeats may still add trials."""
    low, high = (mean_trial_s * n / max(parallel, 1) / 60 for n in left)
    return f"{low:.1f} min" if left[0] == left[1] else f"{low:.1f}-{high:.1f} min"


def result_status(result) -> str:
    """The outcome of a trial of Tune's ResultGrid (every one has ended: ERROR where it holds an error)."""
    return outcome(ERROR if result.error else TERMINATED, result.metrics, result.config)


def print_summary(results, wall_s: float, path: str) -> None:
    """The final lines of a sweep: statuses, best trial, diverged trials, where the results are."""
    statuses: dict[str, int] = {}
    for r in results:
        statuses[result_status(r)] = statuses.get(result_status(r), 0) + 1
    metric = primary_metric(next((r.config for r in results if r.config), {}))
    done = [r for r in results if result_status(r) == FINISHED and r.metrics.get(metric) is not None
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
        if result_status(r) == DIVERGED:
            print(f"  diverged (not retried, never averaged in): {r.config.get('trial_name')}: "
                  f"{r.metrics.get('diverged_reason')}", flush=True)
        elif result_status(r) == ERRORED:
            print(f"  errored: {(r.config or {}).get('trial_name')}: {error_line(r.error)}", flush=True)


def savings_line(results, fixed_max: int, resources: dict) -> str:
    """Trials adaptive repeats ran against the fixed-max design, and the device-hours that saved (mean trial time)."""
    saved = fixed_max - len(results)
    line = f"lora-sweep: ran {len(results)} trials of the fixed-max design's {fixed_max} (saved {saved} trials"
    times = [r.metrics["time_total_s"] for r in results
             if result_status(r) == FINISHED and isinstance(r.metrics.get("time_total_s"), (int, float))]
    if times:
        mean_s = sum(times) / len(times)
        kind = "gpu" if resources.get("gpu") else "cpu"
        amount = resources.get(kind, 1)
        mean = f"{mean_s / 60:.1f} min" if mean_s >= 120 else f"{mean_s:.0f} s"
        hours = saved * mean_s / 3600 * amount
        line += (f", ≈ {hours:.3g} {kind.upper()}-hours at {{{kind}: {amount:g}}} per trial, "
                 f"from the mean trial time of {mean}")
    return line + ")"
