"""TensorBoard logging for sweeps: Ray's TBX logger, with every grid-point field in the HParams table.

Ray's `TBXLoggerCallback` logs as HParams every key the search algorithm handed out, as is (TensorBoard shows no
lists and fails on None). This subclass logs the study's own fields instead, lists as 'a,b' and None as '-';
scalars (`ray/tune/<metric>` per epoch) are Ray's unchanged.
"""

from __future__ import annotations

from ray.tune.logger import TBXLoggerCallback

from record.fields import HPARAMS as HPARAM_KEYS
from record.metrics import SUMMARY_METRICS as METRIC_KEYS


def _hparam(value):
    """HParams takes numbers, strings and bools: lists become 'a,b', None becomes '-'."""
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "-"
    return value


class HParamsTBXLogger(TBXLoggerCallback):
    """Ray's TensorBoard logger with the grid point's fields (scenario, layers, r, ...) as HParams."""

    def _try_log_hparams(self, trial, result: dict) -> None:
        from tensorboardX.summary import hparams

        params = {k: _hparam(trial.config.get(k)) for k in HPARAM_KEYS if k in trial.config}
        # Ray hands over the last result keyed by its scalar tags, `ray/tune/<metric>`; HParams links by tag.
        metrics = {f"ray/tune/{k}": result[f"ray/tune/{k}"] for k in METRIC_KEYS
                   if isinstance(result.get(f"ray/tune/{k}"), (int, float))}
        for summary in hparams(hparam_dict=params, metric_dict=metrics):
            self._trial_writer[trial].file_writer.add_summary(summary)
