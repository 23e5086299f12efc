"""The encoders and decoder classifiers people fine-tune today: exact counts from the shipped configs, the fused and
alternating-attention vocabulary (ModernBERT), and a real training run of a tiny random model of each."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lora_ext import count_params, load_model_config, predicted_module_names
from lora_ext.architectures import architecture_for, layer_types
from lora_ext.model_configs import SHIPPED_CONFIGS, random_model_dir
from lora_ext.placement import Placement, resolve_components, resolve_layers
from record.errors import InputError, InputErrors
from tests import tiny_models
from tests.conftest import EXPERIMENTS, tiny_spec
from tune_jobs.study.grid import select_trial
from tune_jobs.study.profiles import read_yaml
from tune_jobs.study.spec import load_study, parse_study
from tune_jobs.train.loop import run_trial

# hub id -> (model_type, layers, parameters of the 2-label sequence classifier: full fine-tuning's count)
SHIPPED = {
    "FacebookAI/roberta-base": ("roberta", 12, 124_647_170),
    "FacebookAI/roberta-large": ("roberta", 24, 355_361_794),
    "google-bert/bert-base-uncased": ("bert", 12, 109_483_778),
    "FacebookAI/xlm-roberta-base": ("xlm-roberta", 12, 278_045_186),
    "answerdotai/ModernBERT-base": ("modernbert", 22, 149_606_402),
    "google/electra-base-discriminator": ("electra", 12, 109_483_778),
    "microsoft/deberta-v3-base": ("deberta-v2", 12, 184_423_682),
    "Qwen/Qwen2.5-0.5B": ("qwen2", 24, 494_034_560),
    "Qwen/Qwen3-0.6B": ("qwen3", 28, 596_051_968),
    "meta-llama/Llama-3.2-1B": ("llama", 16, 1_235_818_496),
    "google/gemma-2-2b": ("gemma2", 26, 2_614_346_496),
}


def test_every_shipped_config_is_listed_here():
    assert {SHIPPED_CONFIGS[k] for k in SHIPPED} == set(SHIPPED_CONFIGS.values())


@pytest.mark.parametrize("hub_id", sorted(SHIPPED))
def test_shipped_configs_plan_offline_with_a_paper_profile(hub_id):
    """`plan --profile paper` of the variants study on each published base model, offline: exact totals, and DoRA
    adding one magnitude per output feature of every adapted module."""
    from tune_jobs.plan import plan

    model_type, n_layers, total = SHIPPED[hub_id]
    raw = read_yaml(EXPERIMENTS / "variants.yaml")
    raw.update(lora={"ranks": [8], "dropout": 0.1, "method": ["lora", "dora"]}, scenarios=[raw["scenarios"][0]])
    raw["profiles"] = {"paper": {"model": hub_id}}
    study = parse_study(raw, "paper")
    assert (study.model_type, study.num_layers) == (model_type, n_layers)
    planned = {p.trial.method: p.params for p in plan(study)}
    assert planned["lora"].full_model_total == total
    config = load_model_config(hub_id)
    with torch.device("meta"):
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_config(config)
    placement = select_trial(study, "all", method="lora").placement()
    adapted = [m for n, m in model.named_modules() if n in set(predicted_module_names(model, placement))]
    assert planned["dora"].trainable - planned["lora"].trainable == sum(m.out_features for m in adapted)


def test_modernbert_fuses_q_k_v_and_names_its_modules():
    arch = architecture_for("modernbert")
    with pytest.raises(InputError, match=r"fuses q, k and v into one module \(attn.Wqkv\)") as err:
        resolve_components("q+v", "scenarios[0].components", arch)
    assert "qkv" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError, match=r"separate q, k and v modules.*q\+k\+v"):
        resolve_components("qkv", "components", architecture_for("roberta"))
    assert resolve_components("all", "components", arch) == ("qkv", "o", "up", "down")
    config = load_model_config("answerdotai/ModernBERT-base")
    with torch.device("meta"):
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_config(config)
    placement = Placement(layers=(3,), components=("qkv", "o", "up", "down"), r=8)
    assert sorted(predicted_module_names(model, placement)) == [
        "model.layers.3.attn.Wo", "model.layers.3.attn.Wqkv", "model.layers.3.mlp.Wi", "model.layers.3.mlp.Wo"]
    head = count_params(config, Placement(baseline="classifier_only")).trainable
    assert head == 768 * 768 + 768 + (768 * 2 + 2)  # head.dense and head.norm (no biases in ModernBERT), classifier


def test_global_and_local_layers_come_from_the_config():
    modern = load_model_config("answerdotai/ModernBERT-base")
    kinds = layer_types(modern)
    assert resolve_layers("global", 22, kinds=kinds) == tuple(range(0, 22, 3))  # 0, 3, ..., 21
    assert resolve_layers("local", 22, kinds=kinds) == tuple(i for i in range(22) if i % 3)
    gemma = load_model_config("google/gemma-2-2b")
    assert resolve_layers("global", 26, kinds=layer_types(gemma)) == tuple(range(1, 26, 2))
    for model, n in (("roberta-base", 12), ("Qwen/Qwen3-0.6B", 28)):  # no layer_types / every layer global
        with pytest.raises(InputError, match="alternates global and local attention") as err:
            resolve_layers("local", n, "scenarios[0].layers", kinds=layer_types(load_model_config(model)))
        assert "\n" not in str(err.value)


def test_a_spec_on_modernbert_is_checked_against_its_layout(tmp_path):
    base = dict(name="m", model="answerdotai/ModernBERT-base", data={"dataset": "glue/sst2"})
    study = parse_study({**base, "scenarios": [{"name": "g", "layers": "global", "components": "qkv+up"}]})
    assert study.scenarios[0].layers == tuple(range(0, 22, 3))
    with pytest.raises(InputErrors, match="scenarios\\[0\\] \\(q\\).components: ModernBERT fuses q, k and v") as err:
        parse_study({**base, "scenarios": [{"name": "q", "layers": "all", "components": "q"}]})
    assert len(err.value.errors) == 1
    with pytest.raises(InputErrors, match="'global' needs a model that alternates"):
        parse_study({**base, "model": "roberta-base", "scenarios": [{"name": "g", "layers": "global",
                                                                     "components": "all"}]})


@pytest.mark.parametrize("model_type", ["modernbert", "electra", "deberta-v2", "xlm-roberta", "llama", "qwen2",
                                        "qwen3", "gemma"])
def test_a_tiny_random_model_of_each_architecture_trains_on_real_rows(tmp_path, model_type):
    """Real SST-2 rows, MiniLM's tokenizer, one epoch of LoRA on every component of every layer, DoRA on top: the
    loss is finite, the head and adapters learn, and the trainable count is the meta-device count."""
    model_dir = random_model_dir(tiny_models.tiny_config(model_type), tmp_path / "model")
    spec = tiny_spec(tmp_path, model_dir, "scenarios:\n  - {name: all, layers: all, components: all}\n",
                     train={"epochs": 1}, lora={"ranks": [4], "dropout": 0.1, "method": "dora"})
    study = load_study(spec)
    config = select_trial(study, "all").to_dict()
    history = run_trial(config)
    assert len(history) == 1 and not history[0].get("diverged")
    assert 0.0 < history[0]["train_loss"] < 5.0 and 0.0 <= history[0]["val_accuracy"] <= 1.0
    placement = select_trial(study, "all").placement()
    assert history[0]["trainable_params"] == count_params(load_model_config(str(model_dir)), placement).trainable


def _decoder_dir(tmp_path, model_type: str, eos: str | None = "[SEP]"):
    """A tiny random decoder whose tokenizer has no pad token (as Llama's and Qwen's base tokenizers ship)."""
    import json

    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    model_dir = Path(random_model_dir(tiny_models.tiny_config(model_type), tmp_path / "decoder"))
    spec = json.loads((model_dir / "tokenizer.json").read_text())
    spec["padding"] = None  # MiniLM's tokenizer.json pads with [PAD]: a decoder's has no padding
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        (model_dir / name).unlink(missing_ok=True)
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"), eos_token=eos).save_pretrained(model_dir)
    assert AutoTokenizer.from_pretrained(model_dir).pad_token is None
    return model_dir


def test_a_decoder_classifier_pads_with_eos_and_pools_the_last_real_token(tmp_path):
    from lora_ext import apply_placement
    from tune_jobs.train.model import load_model, load_tokenizer

    model_dir = _decoder_dir(tmp_path, "qwen3")
    spec = tiny_spec(tmp_path, model_dir, "scenarios:\n  - {name: all, layers: all, components: all}\n")
    tc = select_trial(load_study(spec), "all")
    tokenizer = load_tokenizer(tc)
    assert tokenizer.pad_token == "[SEP]"
    torch.manual_seed(0)
    model = apply_placement(load_model(tc, tokenizer, ("0", "1")), tc.placement()).eval()
    rows = ["a gripping , beautifully acted film that never lets go", "dull"]
    with torch.no_grad():
        batch = model(**tokenizer(rows, padding=True, return_tensors="pt")).logits
        alone = model(**tokenizer(rows[1:], return_tensors="pt")).logits
    assert torch.allclose(batch[1], alone[0], atol=1e-5)  # padding does not change the short row's score


def test_a_tokenizer_without_pad_or_eos_is_one_line(tmp_path):
    from tune_jobs.train.model import load_tokenizer

    model_dir = _decoder_dir(tmp_path, "llama", eos=None)
    spec = tiny_spec(tmp_path, model_dir, "scenarios:\n  - {name: all, layers: all, components: all}\n")
    with pytest.raises(InputError, match="neither a pad nor an end-of-sequence token"):
        load_tokenizer(select_trial(load_study(spec), "all"))
