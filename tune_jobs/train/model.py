"""The model and tokenizer of a trial, loaded from a hub id, a local folder or a staged URI (export loads
through these too): the task's head, the spec's dropouts, float32 master weights, only the head newly initialized.
"""

from __future__ import annotations

import torch

from lora_ext import architecture_for
from record.errors import InputError
from record.metrics import REGRESSION
from tune_jobs.study.spec import TrialConfig


def _load_error(err: Exception, model: str) -> InputError:
    return InputError("model", f"cannot load model or tokenizer ({str(err).splitlines()[0][:120]})", got=model,
                     allowed="the alias minilm-l6, a local model directory, or a hub id with network access")


def load_tokenizer(tc: TrialConfig):
    """The model's tokenizer (a pad token set for decoder-only models, which ship without one)."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from tune_jobs.remote.model import local_model

    hf_logging.set_verbosity_error()  # the "newly initialized classifier" report is expected every trial
    hf_logging.disable_progress_bar()
    location = local_model(tc.model, weights=False)  # a model at a URI: staged on this node, without its weights
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError) as err:
        raise _load_error(err, tc.model) from None
    if tokenizer.pad_token is None:  # decoder-only models (Llama, Qwen) ship without one: pad with end-of-sequence
        if tokenizer.eos_token is None:
            raise InputError("model", "its tokenizer has neither a pad nor an end-of-sequence token to pad with",
                             got=tc.model, allowed="a tokenizer with pad_token or eos_token set")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(tc: TrialConfig, tokenizer, label_names: tuple[str, ...] | None):
    """Sequence-classification model with the task's head (one output and MSE loss for regression; the label names
    as id2label/label2id otherwise) and the spec's dropouts (weights or random init)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from tune_jobs.remote.model import local_model

    location = local_model(tc.model)  # a model at a URI: fetched once per node into the cache
    if tc.task == REGRESSION:
        head = {"num_labels": 1, "problem_type": "regression"}
    else:
        head = {"num_labels": len(label_names), "problem_type": "single_label_classification",
                "id2label": dict(enumerate(label_names)), "label2id": {n: i for i, n in enumerate(label_names)}}
    try:
        config = AutoConfig.from_pretrained(location, **head)
    except (OSError, ValueError) as err:
        raise _load_error(err, tc.model) from None
    arch = architecture_for(config.model_type)
    arch.set_dropouts(config, tc.hidden_dropout, tc.attention_dropout, tc.classifier_dropout)
    config.pad_token_id = tokenizer.pad_token_id
    # float32 master weights whatever dtype the checkpoint was saved in (transformers 5 loads dtype="auto", so a
    # bf16 checkpoint would train bf16 weights); bf16 compute, where chosen, comes from autocast.
    if tc.model_init == "random":
        return AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    model, info = AutoModelForSequenceClassification.from_pretrained(
        location, config=config, dtype=torch.float32, output_loading_info=True)
    check_loading_info(info, arch.head, tc.model)
    return model


def check_loading_info(info: dict, head: tuple[str, ...], model: str) -> None:
    """Only the classification head may be newly initialized: a checkpoint whose encoder weights are missing or
    of another shape would otherwise train a random encoder in silence (the verbosity setting hides the report)."""
    def in_head(key: str) -> bool:
        return any(part in head for part in key.split("."))

    missing = sorted(k for k in info.get("missing_keys", ()) if not in_head(k))
    mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get("mismatched_keys", ())
                        if not in_head(str(k[0] if isinstance(k, tuple) else k)))
    bad = missing or mismatched
    if bad:
        what = "missing from" if missing else "of another shape in"
        raise InputError("model", f"{len(bad)} encoder weight(s) {what} the checkpoint, e.g. {bad[0]}: it does not "
                        "match its config", got=model, allowed="a checkpoint saved for this architecture (only the "
                        "classification head may be new)")
