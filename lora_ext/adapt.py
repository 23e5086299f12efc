"""Placement -> `peft.LoraConfig`, and applying a placement (or a baseline) to a sequence-classification model."""

from __future__ import annotations

import re
import warnings

from torch import nn

from record.errors import InputError

from .architectures import Architecture, architecture_for
from .methods import lora_config_flags
from .placement import Placement


def to_lora_config(placement: Placement, arch: Architecture, initialise: bool = True):
    """The `peft.LoraConfig` that adapts exactly the placement's modules, with its method's flags (use_rslora,
    use_dora, init_lora_weights), and trains the head in full.

    PEFT's list form of `target_modules` matches by suffix (`output.dense` would also hit
    `attention.output.dense`) and only that form honours `layers_to_transform`; so the layers and components go
    into one regex, anchored at the layer index, which PEFT full-matches against every module name.
    `initialise=False` keeps PEFT's default initialisation: the same parameters, for counting on the meta device,
    where PiSSA's SVD and OLoRA's QR of the base weights cannot run.
    """
    from peft import LoraConfig

    if not placement.is_lora:
        raise ValueError(f"baseline {placement.baseline!r} has no LoRA config")
    rank_pattern = {arch.component_regex(c): r for c, r in placement.rank_pattern}
    flags = lora_config_flags(placement.method)
    if not initialise:
        flags.pop("init_lora_weights", None)
    return LoraConfig(**flags,
        r=placement.r,
        lora_alpha=placement.alpha if placement.alpha is not None else placement.r,
        lora_dropout=placement.dropout,
        target_modules=arch.module_regex(placement.layers, placement.components),
        rank_pattern=rank_pattern,
        alpha_pattern={k: v for k, v in rank_pattern.items()} if placement.alpha is None else {},
        modules_to_save=list(arch.head),
        bias="none",
        task_type="SEQ_CLS",  # a PeftModelForSequenceClassification: AutoPeftModelForSequenceClassification loads it
    )


def predicted_module_names(model: nn.Module, placement: Placement) -> list[str]:
    """Qualified names of the Linear modules the placement adapts, found by the same regex PEFT uses."""
    arch = architecture_for(model.config.model_type)
    pattern = re.compile(arch.module_regex(placement.layers, placement.components))
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and pattern.fullmatch(n)]


def head_parameters(model: nn.Module, arch: Architecture) -> list[nn.Parameter]:
    """Parameters of the classification head modules (top-level or under the base model, e.g. `bert.pooler`)."""
    params = []
    for name, module in model.named_modules():
        if name.split(".")[-1] in arch.head and not any(name.startswith(h + ".") for h in arch.head):
            params.extend(module.parameters())
    return params


def apply_placement(model: nn.Module, placement: Placement, initialise: bool = True) -> nn.Module:
    """Adapt `model` as the placement says; returns the model to train (a PeftModel for LoRA).

    LoRA: adapters on the selected modules, head trained in full, everything else (embeddings included)
    frozen. `classifier_only`: only the head trains. `full`: every parameter trains (full fine-tuning).
    `initialise=False`: see `to_lora_config`.
    """
    arch = architecture_for(model.config.model_type)
    if placement.baseline == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if placement.baseline == "classifier_only":
        for p in model.parameters():
            p.requires_grad_(False)
        head = head_parameters(model, arch)
        if not head:
            raise InputError("model", "no classification head module found", got=list(arch.head))
        for p in head:
            p.requires_grad_(True)
        return model
    from peft import get_peft_model

    if not predicted_module_names(model, placement):
        raise InputError(
            "layers/components", "placement matches no module of this model",
            got={"layers": list(placement.layers), "components": list(placement.components)},
        )
    with warnings.catch_warnings():  # PEFT calls a transformers API that v5 deprecates; not ours to fix.
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, to_lora_config(placement, arch, initialise))
