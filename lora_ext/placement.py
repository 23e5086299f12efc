"""Placement vocabulary: which layers, which components, which rank; parsed from spec values and validated.

Layer selectors over N layers (k defaults to N // 2, i.e. half the layers):
  - `all`              every layer 0..N-1
  - `lower` / `lower:k` the bottom k layers: 0..k-1            (RoBERTa-base: 0-5)
  - `upper` / `upper:k` the top k layers: N-k..N-1              (RoBERTa-base: 6-11)
  - `even`  / `even:k`  k layers spread evenly from the bottom: floor(i*N/k) for i < k
                                                                (RoBERTa-base: 0,2,4,6,8,10; MiniLM: 0,2,4)
  - an integer (one layer) or a list of distinct integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .architectures import COMPONENTS
from record.errors import InputError

Baseline = Literal["classifier_only", "full"]
BASELINES: tuple[str, ...] = ("classifier_only", "full")
LAYER_SELECTORS = "'all', 'upper', 'lower', 'even' (optionally ':k', e.g. 'upper:4'), an index, or a list of indices"


@dataclass(frozen=True)
class Placement:
    """What one trial trains: LoRA on `components` of `layers` at rank `r`, or a baseline.

    `rank_pattern` maps a component to its own rank where it differs from `r` (PEFT's `rank_pattern`).
    Baselines have no layers, components or rank.
    """

    layers: tuple[int, ...] = ()
    components: tuple[str, ...] = ()
    r: int | None = None
    alpha: float | None = None
    dropout: float = 0.0
    rank_pattern: tuple[tuple[str, int], ...] = field(default=())
    baseline: Baseline | None = None

    @property
    def is_lora(self) -> bool:
        return self.baseline is None

    def rank_of(self, component: str) -> int:
        return dict(self.rank_pattern).get(component, self.r)


def resolve_layers(selector: object, n_layers: int, field_name: str = "layers") -> tuple[int, ...]:
    """Turn a layer selector into sorted layer indices of a model with `n_layers` layers."""
    if isinstance(selector, bool):
        raise InputError(field_name, "not a layer selector", got=selector, allowed=LAYER_SELECTORS)
    if isinstance(selector, int):
        selector = [selector]
    if isinstance(selector, (list, tuple)):
        if not selector:
            raise InputError(field_name, "empty layer list", got=list(selector), allowed=LAYER_SELECTORS)
        for idx in selector:
            if isinstance(idx, bool) or not isinstance(idx, int):
                raise InputError(field_name, "layer indices must be integers", got=idx, allowed=LAYER_SELECTORS)
            if not 0 <= idx < n_layers:
                raise InputError(
                    field_name, "layer index out of range for the model", got=idx,
                    allowed=f"indices 0..{n_layers - 1} ({n_layers} layers)",
                )
        if len(set(selector)) != len(selector):
            dupes = sorted({i for i in selector if list(selector).count(i) > 1})
            raise InputError(field_name, "duplicate layer indices", got=dupes, allowed="list each layer once")
        return tuple(sorted(selector))
    if not isinstance(selector, str):
        raise InputError(field_name, "not a layer selector", got=selector, allowed=LAYER_SELECTORS)
    name, _, count_text = selector.strip().partition(":")
    if name not in ("all", "upper", "lower", "even"):
        raise InputError(field_name, "unknown layer selector", got=selector, allowed=LAYER_SELECTORS)
    if name == "all":
        if count_text:
            raise InputError(field_name, "'all' takes no count", got=selector, allowed=LAYER_SELECTORS)
        return tuple(range(n_layers))
    count = n_layers // 2
    if count_text:
        if not count_text.isdigit() or not 1 <= int(count_text) <= n_layers:
            raise InputError(field_name, "bad layer count", got=selector, allowed=f"a count 1..{n_layers}")
        count = int(count_text)
    if count < 1:
        raise InputError(field_name, "model has too few layers for this selector", got=selector)
    if name == "lower":
        return tuple(range(count))
    if name == "upper":
        return tuple(range(n_layers - count, n_layers))
    return tuple(sorted({(i * n_layers) // count for i in range(count)}))


def resolve_components(value: object, field_name: str = "components") -> tuple[str, ...]:
    """Parse `all`, `v+up`, `q` or a list of names into components in canonical order (q k v o up down)."""
    allowed = "any of q, k, v, o, up, down (a list, or joined with '+', e.g. 'v+up'), or 'all'"
    if isinstance(value, str):
        names = [s.strip() for s in value.split("+")]
    elif isinstance(value, (list, tuple)):
        names = list(value)
    else:
        raise InputError(field_name, "not a component selection", got=value, allowed=allowed)
    if names == ["all"]:
        return COMPONENTS
    if not names or names == [""]:
        raise InputError(field_name, "empty component selection", got=value, allowed=allowed)
    for name in names:
        if name not in COMPONENTS:
            raise InputError(field_name, "unknown component", got=name, allowed=allowed)
    if len(set(names)) != len(names):
        raise InputError(field_name, "duplicate component", got=value, allowed=allowed)
    return tuple(c for c in COMPONENTS if c in names)


def check_rank(value: object, field_name: str) -> int:
    """A LoRA rank: an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(field_name, "rank must be an integer >= 1", got=value, allowed="e.g. 1, 8, 32")
    return value


def check_alpha(value: object, field_name: str = "alpha") -> float | None:
    """LoRA alpha: a number > 0, or None (= r, i.e. scaling 1)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise InputError(field_name, "alpha must be a number > 0", got=value, allowed="e.g. 8 or 16, or null for alpha = r")
    return float(value)


def check_dropout(value: object, field_name: str) -> float:
    """A dropout probability in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise InputError(field_name, "dropout must be a number in [0, 1)", got=value, allowed="e.g. 0.1")
    return float(value)
