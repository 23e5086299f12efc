"""Exact parameter accounting for a placement, on a model built on the `meta` device (no weights, seconds)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .adapt import apply_placement
from .placement import Placement


@dataclass(frozen=True)
class ParamCount:
    """Trainable parameters of a placement and the denominator they are compared with.

    `full_model_total` is the parameter count of the un-adapted sequence-classification model, i.e. what full
    fine-tuning trains; `relative_pct` = 100 * trainable / full_model_total.
    """

    trainable: int
    full_model_total: int

    @property
    def relative_pct(self) -> float:
        return 100.0 * self.trainable / self.full_model_total


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_params(model_config, placement: Placement) -> ParamCount:
    """Count what `placement` trains on the model described by `model_config` (a transformers config); a method's
    initialisation (PiSSA, OLoRA) changes values, not shapes, so it is left out on the meta device."""
    import torch
    from transformers import AutoModelForSequenceClassification

    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(model_config)
        total = sum(p.numel() for p in model.parameters())
        adapted = apply_placement(model, placement, initialise=False)
    return ParamCount(trainable=count_trainable(adapted), full_model_total=total)
