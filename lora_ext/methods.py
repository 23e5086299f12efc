"""LoRA variants a study can compare (the `method` axis), each one a flag of PEFT's own `LoraConfig` or its LoRA+
optimizer helper; nothing here reimplements a variant.

A method is `lora` (plain LoRA) or a `+`-joined combination of variants, written in one canonical order, e.g.
`dora+rslora` (the variant that changes the adapter first, then the scaling, then the optimizer). `pissa` and
`olora` start from a decomposition of the base weights and so change them; an export
converts such an adapter back into a plain LoRA delta on the original base (PEFT's
`path_initial_model_for_weight_conversion`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from record.errors import InputError, did_you_mean

PLAIN = "lora"


@dataclass(frozen=True)
class Variant:
    """One LoRA variant: what it sets on `peft.LoraConfig` and what it changes elsewhere."""

    name: str
    summary: str
    lora_config: dict = field(default_factory=dict)  # LoraConfig keyword arguments
    changes_base: bool = False  # initialises from the base weights and subtracts that from them (PiSSA, OLoRA)
    optimizer: bool = False  # trains through PEFT's `create_loraplus_optimizer` (LoRA+)
    reads_base: bool = False  # its forward computes from the base weights (DoRA's norm): they must stay fp32


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("dora", "weight-decomposed LoRA: a trained magnitude per output feature (use_dora)", {"use_dora": True},
            reads_base=True),
    Variant("pissa", "A and B from the base weights' principal singular vectors (init_lora_weights='pissa')",
            {"init_lora_weights": "pissa"}, changes_base=True),
    Variant("olora", "A and B from a QR decomposition of the base weights (init_lora_weights='olora')",
            {"init_lora_weights": "olora"}, changes_base=True),
    Variant("rslora", "rank-stabilised scaling alpha/sqrt(r) (use_rslora)", {"use_rslora": True}),
    Variant("loraplus", "B trains at loraplus_lr_ratio x the learning rate (peft.optimizers.create_loraplus_optimizer)",
            optimizer=True),
)}
METHOD_ALLOWED = ("lora, or variants joined with '+': " + ", ".join(VARIANTS) + " (e.g. dora+rslora); "
                  "a list of these is an axis")
DEFAULT_LORAPLUS_LR_RATIO = 16.0  # the LoRA+ paper's and PEFT's suggested ratio (2^4)


def variants_of(method: str) -> tuple[Variant, ...]:
    """The variants a canonical method string combines (none for plain `lora`)."""
    return () if method == PLAIN else tuple(VARIANTS[name] for name in method.split("+"))


def changes_base(method: str) -> bool:
    """Whether the method subtracts its initial adapter from the base weights (an export must convert it)."""
    return any(v.changes_base for v in variants_of(method))


def reads_base_weights(method: str) -> bool:
    """Whether the method's forward computes from the frozen base weights (DoRA), so they must keep fp32."""
    return any(v.reads_base for v in variants_of(method))


def uses_loraplus(method: str) -> bool:
    return any(v.optimizer for v in variants_of(method))


def lora_config_flags(method: str) -> dict:
    """The `peft.LoraConfig` keyword arguments of a method."""
    out: dict = {}
    for variant in variants_of(method):
        out.update(variant.lora_config)
    return out


def resolve_method(value: object, field_name: str = "method") -> str:
    """One method value (`dora`, `rslora+dora`) -> its canonical string (`dora+rslora`)."""
    if isinstance(value, str):
        names = [s.strip() for s in value.split("+")]
    else:
        raise InputError(field_name, "not a LoRA method", got=value, allowed=METHOD_ALLOWED)
    if names == [PLAIN]:
        return PLAIN
    if PLAIN in names:
        raise InputError(field_name, "'lora' is plain LoRA: combine variants without it", got=value,
                         allowed="e.g. dora+rslora")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise InputError(field_name, "unknown LoRA method", got=unknown[0],
                         allowed=did_you_mean(unknown[0], (PLAIN, *VARIANTS)) + METHOD_ALLOWED)
    if len(set(names)) != len(names):
        raise InputError(field_name, "a variant named twice", got=value, allowed=METHOD_ALLOWED)
    chosen = [v for v in VARIANTS.values() if v.name in names]
    inits = [v.name for v in chosen if "init_lora_weights" in v.lora_config]
    if len(inits) > 1:
        raise InputError(field_name, f"{' and '.join(inits)} are both initialisations: pick one", got=value,
                         allowed="one of pissa, olora per method")
    if inits and any(v.name == "dora" for v in chosen):
        # PEFT's conversion back to a plain LoRA delta (subtract_mutated_init) keeps only lora_A/lora_B, so DoRA's
        # magnitude vector would be lost and the export would not reproduce the trial.
        raise InputError(field_name, f"dora cannot be combined with {inits[0]}: PEFT cannot convert the result into "
                         "an adapter for the original base model (it drops DoRA's magnitudes)", got=value,
                         allowed=f"dora, {inits[0]}, or {inits[0]}+rslora")
    return "+".join(v.name for v in chosen)


def resolve_methods(value: object, field_name: str = "method") -> tuple[str, ...]:
    """`method`: one method or a list of them (an axis), each canonical, none twice."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise InputError(field_name, "empty list of methods", got=value, allowed=METHOD_ALLOWED)
    out = tuple(resolve_method(v, f"{field_name}[{i}]" if isinstance(value, list) else field_name)
                for i, v in enumerate(values))
    if len(set(out)) != len(out):
        raise InputError(field_name, "a method listed twice", got=value, allowed="list each method once")
    return out


def check_loraplus_lr_ratio(value: object, field_name: str = "loraplus_lr_ratio") -> float:
    """LoRA+'s ratio of B's learning rate to A's: a number > 0 (PEFT suggests >= 1; 16 by default)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise InputError(field_name, "must be a finite number > 0", got=value,
                         allowed="e.g. 16 (B trains 16x faster than A)")
    return float(value)


def check_method_with_ranks(method: str, has_rank_pattern: bool, field_name: str = "method") -> None:
    """PEFT cannot convert a PiSSA/OLoRA adapter that uses rsLoRA together with per-component ranks."""
    if changes_base(method) and "rslora" in method.split("+") and has_rank_pattern:
        raise InputError(field_name, f"{method} with per-component ranks cannot be exported for the original base "
                         "model (PEFT refuses rsLoRA + rank_pattern in that conversion)", got=method,
                         allowed="one rank per scenario, or drop rslora")
