"""lora_ext: LoRA placement vocabulary -> PEFT config, applying it to a model, and exact parameter accounting.

Knows nothing of Ray. See `placement` for the layer/component vocabulary and `architectures` for the
per-model module table. Names load on first use (PEP 562), so importing it does not
import torch: the CLI's help and the analysis commands stay fast.
"""

from __future__ import annotations

import importlib

_HOME = {
    "ParamCount": "accounting", "count_params": "accounting", "count_trainable": "accounting",
    "apply_placement": "adapt", "predicted_module_names": "adapt", "to_lora_config": "adapt",
    "ARCHITECTURES": "architectures", "COMPONENTS": "architectures", "Architecture": "architectures",
    "architecture_for": "architectures", "layer_types": "architectures", "num_layers": "architectures",
    "METHOD_ALLOWED": "methods", "VARIANTS": "methods", "resolve_methods": "methods",
    "MINILM_ALIAS": "model_configs", "hub_id": "model_configs", "load_model_config": "model_configs",
    "model_location": "model_configs",
    "BASELINES": "placement", "Placement": "placement", "resolve_components": "placement",
    "resolve_layers": "placement",
}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'lora_ext' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
