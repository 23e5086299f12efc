"""Placement vocabulary: which layers, which components, which rank; parsed from spec values and validated.

Layer selectors over N layers (k defaults to N // 2, i.e. half the layers):
  - `all`              every layer 0..N-1
  - `lower` / `lower:k` the bottom k layers: 0..k-1            (RoBERTa-base: 0-5)
  - `upper` / `upper:k` the top k layers: N-k..N-1              (RoBERTa-base: 6-11)
  - `even`  / `even:k`  k layers spread evenly from the bottom: floor(i*N/k) for i < k
                                                                (RoBERTa-base: 0,2,4,6,8,10; MiniLM: 0,2,4)
  - `global` / `local`  the layers with full (global) / sliding-window (local) attention, where the model alternates
                        them (ModernBERT: global at 0, 3, 6, ...; Gemma 2: every other layer)
  - an integer (one layer) or a list of distinct integers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from record.errors import InputError, did_you_mean

from .architectures import COMPONENTS, FULL_ATTENTION, Architecture
from .methods import PLAIN

Baseline = Literal["classifier_only", "full"]
BASELINES: tuple[str, ...] = ("classifier_only", "full")
LAYER_SELECTORS = ("'all', 'upper', 'lower', 'even' (optionally ':k', e.g. 'upper:4'), 'global' or 'local' "
                   "(models that alternate them), an index, or a list of indices")


@dataclass(frozen=True)
class Placement:
    """What one trial trains: LoRA on `components` of `layers` at rank `r`, or a baseline.

    `rank_pattern` maps a component to its own rank where it differs from `r` (PEFT's `rank_pattern`). `method` is a
    canonical LoRA method (`lora_ext.methods`); `loraplus_lr_ratio` is set when the method trains with LoRA+.
    Baselines have no layers, components, rank or method.
    """

    layers: tuple[int, ...] = ()
    components: tuple[str, ...] = ()
    r: int | None = None
    alpha: float | None = None
    dropout: float = 0.0
    rank_pattern: tuple[tuple[str, int], ...] = field(default=())
    baseline: Baseline | None = None
    method: str = PLAIN
    loraplus_lr_ratio: float | None = None

    @property
    def is_lora(self) -> bool:
        return self.baseline is None

    def rank_of(self, component: str) -> int:
        return dict(self.rank_pattern).get(component, self.r)


def _attention_layers(name: str, selector: str, n_layers: int, kinds: tuple[str, ...] | None,
                      field_name: str) -> tuple[int, ...]:
    """The `global` (full attention) or `local` (sliding window) layers of a model that has both kinds."""
    if not kinds or len(set(kinds)) < 2:
        raise InputError(field_name, f"'{name}' needs a model that alternates global and local attention; every layer "
                         "of this one attends globally", got=selector, allowed="all, upper, lower, even or indices")
    if len(kinds) != n_layers:
        raise InputError(field_name, f"the model's layer_types lists {len(kinds)} layers, not {n_layers}", got=selector)
    return tuple(i for i, kind in enumerate(kinds) if (kind == FULL_ATTENTION) == (name == "global"))


def resolve_layers(selector: object, n_layers: int, field_name: str = "layers",
                   kinds: tuple[str, ...] | None = None) -> tuple[int, ...]:
    """Turn a layer selector into sorted layer indices of a model with `n_layers` layers (`kinds`: its
    `layer_types`, for `global`/`local`)."""
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
    if name in ("global", "local") and not count_text:
        return _attention_layers(name, selector, n_layers, kinds, field_name)
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


def resolve_components(value: object, field_name: str = "components",
                       arch: Architecture | None = None) -> tuple[str, ...]:
    """Parse `all`, `v+up`, `q` or a list of names into components in canonical order (q k v qkv o up down); with
    `arch`, only the components that architecture has (`all` = its components)."""
    allowed = "any of q, k, v, o, up, down (qkv where a model fuses them; a list, or joined with '+', e.g. 'v+up'), " \
              "or 'all'"
    if isinstance(value, str):
        names = [s.strip() for s in value.split("+")]
    elif isinstance(value, (list, tuple)):
        names = list(value)
    else:
        raise InputError(field_name, "not a component selection", got=value, allowed=allowed)
    if names == ["all"]:
        return arch.component_names if arch else tuple(c for c in COMPONENTS if c != "qkv")
    if not names or names == [""]:
        raise InputError(field_name, "empty component selection", got=value, allowed=allowed)
    for name in names:
        if name not in COMPONENTS:
            raise InputError(field_name, "unknown component", got=name,
                             allowed=did_you_mean(name, (*COMPONENTS, "all")) + allowed)
    if len(set(names)) != len(names):
        raise InputError(field_name, "duplicate component", got=value, allowed=allowed)
    for name in names if arch else ():
        arch.check_component(name, field_name)
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
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise InputError(field_name, "alpha must be a finite number > 0", got=value,
                         allowed="e.g. 8 or 16, or null for alpha = r")
    return float(value)


def check_dropout(value: object, field_name: str) -> float:
    """A dropout probability in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise InputError(field_name, "dropout must be a number in [0, 1)", got=value, allowed="e.g. 0.1")
    return float(value)
