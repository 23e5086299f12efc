"""Task metrics, computed by scikit-learn and scipy: accuracy, F1, Matthews correlation; MSE, Pearson, Spearman
(which task reports which, and which way is better: record.metrics)."""

from __future__ import annotations

import math
import warnings

import numpy as np

from record.metrics import REGRESSION


def _finite(value: float) -> float | None:
    """A metric undefined for the data (Pearson of a constant prediction) is None, never NaN in a JSON result."""
    value = float(value)
    return value if math.isfinite(value) else None


def compute(task: str, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """The task's metrics from model outputs (logits, rows x classes; or rows x 1 for regression) and targets."""
    from scipy import stats
    from sklearn import metrics

    if task == REGRESSION:
        pred = outputs.reshape(len(outputs), -1)[:, 0]
        with warnings.catch_warnings():  # a constant prediction: scipy warns and returns NaN, reported as None
            warnings.simplefilter("ignore")
            return {"mse": _finite(metrics.mean_squared_error(labels, pred)),
                    "pearson": _finite(stats.pearsonr(pred, labels).statistic),
                    "spearman": _finite(stats.spearmanr(pred, labels).statistic)}
    pred = outputs.argmax(-1)
    average = "binary" if outputs.shape[-1] == 2 else "macro"
    return {"accuracy": float(metrics.accuracy_score(labels, pred)),
            "f1": float(metrics.f1_score(labels, pred, average=average, zero_division=0)),
            "mcc": float(metrics.matthews_corrcoef(labels, pred))}
