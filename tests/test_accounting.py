"""Exact parameter accounting and the exact set of adapted modules, on RoBERTa-base (meta) and MiniLM."""

import pytest
import torch

from lora_ext import (
    Placement,
    apply_placement,
    architecture_for,
    count_params,
    load_model_config,
    predicted_module_names,
    to_lora_config,
)
from record.errors import InputError
from tests import tiny_models
from tests.conftest import tiny_roberta_config

ROBERTA_COMPONENTS = ("q", "k", "v", "o", "up", "down")

ROBERTA_TOTAL = 124_647_170


@pytest.fixture(scope="module")
def roberta_cfg():
    return load_model_config("roberta-base")


@pytest.fixture(scope="module")
def minilm_cfg():
    return load_model_config("minilm-l6")


def lora(layers, components=ROBERTA_COMPONENTS, r=8, **kw):
    return Placement(layers=tuple(layers), components=tuple(components), r=r, **kw)


@pytest.mark.parametrize("placement,trainable,pct", [
    (Placement(baseline="classifier_only"), 592_130, "0.475"),
    (Placement(baseline="full"), ROBERTA_TOTAL, "100.000"),
    (lora(range(12), r=8), 1_919_234, "1.540"),
    (lora(range(12), r=1), 758_018, "0.608"),
])
def test_roberta_base_reference_numbers(roberta_cfg, placement, trainable, pct):
    count = count_params(roberta_cfg, placement)
    assert count.full_model_total == ROBERTA_TOTAL
    assert count.trainable == trainable
    assert f"{count.relative_pct:.3f}" == pct


def test_per_component_rank_counts(roberta_cfg):
    # o at r=8 and down at r=2 in layer 0: 8*(768+768) + 2*(3072+768) + head
    count = count_params(roberta_cfg, lora([0], ("o", "down"), r=8, rank_pattern=(("down", 2),)))
    assert count.trainable == 8 * 1536 + 2 * 3840 + 592_130


def meta_model(cfg):
    from transformers import AutoModelForSequenceClassification
    with torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(cfg)


def names(prefix, layers, paths):
    return sorted(f"{prefix}.encoder.layer.{i}.{p}" for i in layers for p in paths)


ALL_PATHS = ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
             "intermediate.dense", "output.dense"]


@pytest.mark.parametrize("model,prefix,layers,expected_layers", [
    ("roberta", "roberta", "upper", [6, 7, 8, 9, 10, 11]),
    ("roberta", "roberta", "lower", [0, 1, 2, 3, 4, 5]),
    ("roberta", "roberta", "even", [0, 2, 4, 6, 8, 10]),
    ("roberta", "roberta", [7], [7]),
    ("minilm", "bert", "upper", [3, 4, 5]),
    ("minilm", "bert", "lower", [0, 1, 2]),
    ("minilm", "bert", "even", [0, 2, 4]),
    ("minilm", "bert", [0], [0]),
])
def test_exact_adapted_module_names(roberta_cfg, minilm_cfg, model, prefix, layers, expected_layers):
    from lora_ext import resolve_layers
    cfg = roberta_cfg if model == "roberta" else minilm_cfg
    m = meta_model(cfg)
    sel = resolve_layers(layers, cfg.num_hidden_layers)
    assert sorted(predicted_module_names(m, lora(sel))) == names(prefix, expected_layers, ALL_PATHS)


def test_down_does_not_match_attention_output(roberta_cfg):
    m = meta_model(roberta_cfg)
    assert predicted_module_names(m, lora([3], ["down"])) == ["roberta.encoder.layer.3.output.dense"]
    assert predicted_module_names(m, lora([3], ["o"])) == ["roberta.encoder.layer.3.attention.output.dense"]


def test_peft_adapts_exactly_the_predicted_modules_and_trains_only_adapters_and_head():
    from peft.utils.other import ModulesToSaveWrapper
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(tiny_roberta_config())
    placement = lora([0, 3], ["v", "down"], r=2)
    predicted = predicted_module_names(model, placement)
    peft_model = apply_placement(model, placement)
    assert sorted(peft_model.base_model.targeted_module_names) == sorted(predicted)
    assert isinstance(peft_model.base_model.model.classifier, ModulesToSaveWrapper)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or "classifier" in n for n in trainable)
    assert not any("embeddings" in n for n in trainable)

    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    opt = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=0.5)
    ids = torch.randint(3, 120, (4, 10))
    for _ in range(3):
        out = peft_model(input_ids=ids, labels=torch.tensor([0, 1, 0, 1]))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    for n, p in peft_model.named_parameters():
        moved = not torch.equal(before[n], p.detach())
        assert moved == (n in trainable), n  # lora_B moves at step 1, lora_A from step 2


def test_lora_config_uses_peft_fields():
    arch = architecture_for("roberta")
    cfg = to_lora_config(lora([1], ["q", "up"], r=4, alpha=16, dropout=0.1, rank_pattern=(("up", 2),)), arch)
    assert cfg.r == 4 and cfg.lora_alpha == 16 and cfg.lora_dropout == 0.1
    assert cfg.modules_to_save == ["classifier"]
    assert list(cfg.rank_pattern.values()) == [2]


def test_classifier_only_on_bert_trains_pooler_and_classifier(minilm_cfg):
    count = count_params(minilm_cfg, Placement(baseline="classifier_only"))
    assert count.trainable == (384 * 384 + 384) + (384 * 2 + 2)


def test_unknown_architecture_lists_known():
    with pytest.raises(InputError, match="known model_types: .*bert.*roberta"):
        architecture_for("gpt2")


def tiny_config(model_type: str):
    return tiny_models.tiny_config(model_type, vocab_size=100)


@pytest.mark.parametrize("model_type,expected", [
    ("distilbert", ["distilbert.transformer.layer.1.attention.out_lin", "distilbert.transformer.layer.1.ffn.lin1"]),
    ("deberta-v2", ["deberta.encoder.layer.1.attention.output.dense", "deberta.encoder.layer.1.intermediate.dense"]),
    ("llama", ["model.layers.1.self_attn.o_proj", "model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj"]),
    ("bert", ["bert.encoder.layer.1.attention.output.dense", "bert.encoder.layer.1.intermediate.dense"]),
])
def test_other_architectures_adapt_exactly_the_table_modules(model_type, expected):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(tiny_config(model_type))
    placement = lora([1], ["o", "up"], r=2)
    assert sorted(predicted_module_names(model, placement)) == sorted(expected)
    peft_model = apply_placement(model, placement)
    assert sorted(peft_model.base_model.targeted_module_names) == sorted(expected)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    head = architecture_for(model_type).head
    assert any(h in n for n in trainable for h in head)
    assert all("lora_" in n or any(f"{h}." in n for h in head) for n in trainable)
    with torch.no_grad():
        out = peft_model(input_ids=torch.randint(1, 100, (2, 6)))
    assert out.logits.shape == (2, 2)


@pytest.mark.parametrize("model_type,head_dropouts", [
    ("deberta-v2", lambda m: [m.dropout.p, m.pooler.dropout.p]),  # reads cls_dropout and pooler_dropout
    ("bert", lambda m: [m.dropout.p]),
    ("distilbert", lambda m: [m.dropout.p]),
])
def test_spec_dropouts_reach_every_family_s_modules(model_type, head_dropouts):
    from transformers import AutoModelForSequenceClassification

    config = tiny_config(model_type)
    architecture_for(model_type).set_dropouts(config, hidden=0.05, attention=0.07, classifier=0.33)
    model = AutoModelForSequenceClassification.from_config(config)
    assert head_dropouts(model) == pytest.approx([0.33] * len(head_dropouts(model)))
    assert {round(m.p, 2) for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.05, 0.07, 0.33}
