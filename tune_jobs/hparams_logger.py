"""TensorBoard logging for sweeps: Ray's TBX logger, with every grid-point field in the HParams table.

Ray's `TBXLoggerCallback` logs as HParams every key the search algorithm handed out, as is (TensorBoard shows no
lists and fails on None). This subclass logs the study's own fields instead, lists as 'a,b' and None as '-';
scalars (`ray/tune/<metric>` per epoch) are Ray's unchanged.
"""

from __future__ import annotations

from ray.tune.logger import TBXLoggerCallback

from .spec import TRAIN_SCHEMA

HPARAM_KEYS = (
    "trial_name", "scenario", "baseline", "layers", "components", "r", "alpha", "lora_dropout", "repeat", "seed",
    "model", "dataset", "train_limit", "selection_fraction", "selection_rows", *TRAIN_SCHEMA,  # every setting can be an axis
)
METRIC_KEYS = ("val_accuracy", "val_f1", "val_mcc", "val_mse", "val_pearson", "val_spearman", "val_loss",
               "sel_accuracy", "sel_loss", "train_loss", "trainable_params", "params_relative_pct", "peak_memory_mb",
               "train_samples_per_s")


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
