"""Task metrics, computed by scikit-learn and scipy: accuracy, F1, Matthews correlation; MSE, Pearson, Spearman.

Which task reports which is declared once, in `record.metrics.TASK_METRICS` (with which way is better): `compute`
reads it and calls each metric's function here. A metric declared there without a function here is a KeyError at
the first evaluation (and a failing test), never a metric a task silently does not report.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np

from record.metrics import REGRESSION, TASK_METRICS


def _finite(value: float) -> float | None:
    """A metric undefined for the data (Pearson of a constant prediction) is None, never NaN in a JSON result."""
    value = float(value)
    return value if math.isfinite(value) else None


def _accuracy(pred: np.ndarray, labels: np.ndarray, classes: int) -> float:
    from sklearn import metrics

    return metrics.accuracy_score(labels, pred)


def _f1(pred: np.ndarray, labels: np.ndarray, classes: int) -> float:
    """F1 of label 1 with two labels, macro-averaged with more."""
    from sklearn import metrics

    return metrics.f1_score(labels, pred, average="binary" if classes == 2 else "macro", zero_division=0)


def _mcc(pred: np.ndarray, labels: np.ndarray, classes: int) -> float:
    from sklearn import metrics

    return metrics.matthews_corrcoef(labels, pred)


def _mse(pred: np.ndarray, labels: np.ndarray, classes: int) -> float:
    from sklearn import metrics

    return metrics.mean_squared_error(labels, pred)


def _pearson(pred: np.ndarray, labels: np.ndarray, classes: int) -> float:
    from scipy import stats

    return stats.pearsonr(pred, labels).statistic


def _spearman(pred: np.ndarray, labels: np.ndarray, classes: int) -> float:
    from scipy import stats

    return stats.spearmanr(pred, labels).statistic


# metric name -> f(predictions, targets, number of outputs): predictions are class ids (classification) or the one
# output's values (regression)
FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray, int], float]] = {
    "accuracy": _accuracy, "f1": _f1, "mcc": _mcc, "mse": _mse, "pearson": _pearson, "spearman": _spearman}


def compute(task: str, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """The task's metrics (`record.metrics.TASK_METRICS[task]`, in its order) from model outputs (logits, rows x
    classes; or rows x 1 for regression) and targets."""
    names = TASK_METRICS[task]
    if task == REGRESSION:
        pred, classes = outputs.reshape(len(outputs), -1)[:, 0], 1
        with warnings.catch_warnings():  # a constant prediction: scipy warns and returns NaN, reported as None
            warnings.simplefilter("ignore")
            return {name: _finite(FUNCTIONS[name](pred, labels, classes)) for name in names}
    pred, classes = outputs.argmax(-1), outputs.shape[-1]
    return {name: _finite(FUNCTIONS[name](pred, labels, classes)) for name in names}
