"""A study through Ray Tune: the experiment folder, the runner, the searcher (adaptive repeats, tune-then-confirm),
early stopping, progress, TensorBoard HParams, trackers, address probes. Imports train, data, study and remote."""

from __future__ import annotations


def __getattr__(name: str):
    """Experiments written before tune_jobs had rooms pickled `tune_jobs.sweep.trial_dirname` (Tune's saved search
    state names the trial-folder function); resuming one unpickles it from here (tests/test_old_experiment.py)."""
    if name == "trial_dirname":
        from .experiment import trial_dirname

        return trial_dirname
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
