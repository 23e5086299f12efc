"""lora_ext: LoRA placement vocabulary -> PEFT config, applying it to a model, and exact parameter accounting.

Knows nothing of Ray. See `placement` for the layer/component vocabulary and `architectures` for the
per-model module table.
"""

from .accounting import ParamCount, count_params, count_trainable
from .adapt import apply_placement, predicted_module_names, to_lora_config
from .architectures import ARCHITECTURES, COMPONENTS, Architecture, architecture_for, num_layers
from .errors import SpecError, SpecErrors
from .model_configs import MINILM_ALIAS, load_model_config, model_location
from .placement import BASELINES, Placement, resolve_components, resolve_layers

__all__ = [
    "ARCHITECTURES", "BASELINES", "COMPONENTS", "MINILM_ALIAS", "Architecture", "ParamCount", "Placement",
    "SpecError", "SpecErrors", "apply_placement", "architecture_for", "count_params", "count_trainable",
    "load_model_config", "model_location", "num_layers", "predicted_module_names", "resolve_components",
    "resolve_layers", "to_lora_config",
]
