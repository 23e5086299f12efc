"""What a trial computes must be what the spec says: fp32 master weights, a checkpoint that matches, the right
precision per device, exact memory figures, the GPU RNG in checkpoints."""

from __future__ import annotations

import pytest
import torch

from record.errors import InputError
from tests.conftest import tiny_spec
from tune_jobs.study.grid import select_trial, with_overrides
from tune_jobs.study.spec import load_study
from tune_jobs.train.checkpoint import load_checkpoint, save_checkpoint
from tune_jobs.train.loop import run_trial
from tune_jobs.train.meters import SavedTensorMeter
from tune_jobs.train.model import load_model, load_tokenizer

SCEN = ("scenarios:\n  - {name: low, layers: [0], components: all}\n  - {name: high, layers: [3], components: all}\n"
        "  - {name: head, baseline: classifier_only}\n")


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    """A tiny pretrained-style BERT checkpoint saved in bf16 (as Llama-family checkpoints ship)."""
    from transformers import BertConfig, BertForSequenceClassification

    from lora_ext.model_configs import random_model_dir

    out = tmp_path_factory.mktemp("bf16_model")
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    random_model_dir(config, out)
    torch.manual_seed(0)
    BertForSequenceClassification(config).to(torch.bfloat16).save_pretrained(out)
    return out


def _trial(tmp_path, model_dir, scenario="low", **spec):
    study = load_study(tiny_spec(tmp_path, model_dir, SCEN, model_init="pretrained", **spec))
    return select_trial(study, scenario)


def _model(trial):
    return load_model(trial, load_tokenizer(trial), ("0", "1"))


def test_bf16_checkpoint_trains_fp32_weights(tmp_path, saved_tiny):
    model = _model(_trial(tmp_path, saved_tiny))
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_checkpoint_missing_encoder_weights_is_refused(tmp_path, saved_tiny):
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(saved_tiny, broken)
    weights = load_file(broken / "model.safetensors")
    del weights[next(k for k in weights if "encoder.layer.2.attention.self.query.weight" in k)]
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(InputError, match="encoder weight.*missing from the checkpoint.*layer.2.attention"):
        _model(_trial(tmp_path, broken))
    _model(_trial(tmp_path, saved_tiny))  # the intact one: only the head is new, accepted


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_same_seed_same_metrics_in_either_precision(tmp_path, tiny_bert_dir, precision):
    trial = with_overrides(select_trial(load_study(tiny_spec(tmp_path, _deep(tmp_path, tiny_bert_dir), SCEN,
                                                             data=dict(train_limit=48))),
                                        "low"), epochs=1, precision=precision).to_dict()
    first, second = run_trial(trial), run_trial(trial)
    keys = ("train_loss", "val_loss", "val_accuracy", "compute_dtype")
    assert [{k: m[k] for k in keys} for m in first] == [{k: m[k] for k in keys} for m in second]
    assert first[0]["compute_dtype"] == precision


def test_saved_activations_grow_with_depth_below_the_adapted_layer(tmp_path, tiny_bert_dir):
    """Adapting layer 0 keeps activations of every layer above it for backward; adapting the top layer does not."""
    cfg = dict(train_limit=32)
    low = run_trial(with_overrides(select_trial(load_study(tiny_spec(tmp_path, _deep(tmp_path, tiny_bert_dir), SCEN,
                                                                     data=cfg)), "low"), epochs=1).to_dict())
    high = run_trial(with_overrides(select_trial(load_study(tiny_spec(tmp_path, _deep(tmp_path, tiny_bert_dir), SCEN,
                                                                      data=cfg)), "high"), epochs=1).to_dict())
    assert low[0]["saved_activations_mb"] > 2 * high[0]["saved_activations_mb"] > 0


def _deep(tmp_path, tiny_bert_dir):
    """The session's tiny BERT with 4 layers instead of 2 (same tokenizer)."""
    from transformers import BertConfig

    from lora_ext.model_configs import random_model_dir

    out = tmp_path / "deep"
    if not out.exists():
        config = BertConfig.from_pretrained(tiny_bert_dir)
        config.num_hidden_layers = 4
        random_model_dir(config, out)
    return out


def test_trainable_state_is_weights_grads_and_two_adam_moments(tmp_path, tiny_bert_dir):
    trial = with_overrides(select_trial(load_study(tiny_spec(tmp_path, _deep(tmp_path, tiny_bert_dir), SCEN,
                                                             data=dict(train_limit=32))), "high"), epochs=1)
    metrics = run_trial(trial.to_dict())[0]
    assert metrics["trainable_state_mb"] * 2**20 == pytest.approx(4 * 4 * metrics["trainable_params"])  # fp32


def test_saved_tensor_meter_counts_each_storage_once_and_no_parameters():
    lin = torch.nn.Linear(8, 8)
    meter = SavedTensorMeter(lin)
    x = torch.randn(4, 8, requires_grad=True)
    with meter.step():
        y = torch.tanh(lin(x))  # saves x (input of the matmul) and tanh's output; the weight is not counted
        z = (y * y).sum()  # saves y twice: one storage
    meter.end_step()
    z.backward()
    assert meter.peak_bytes == 2 * 4 * 8 * 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_checkpoint_restores_the_cuda_rng(tmp_path):
    model = torch.nn.Linear(2, 2).cuda()
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    torch.cuda.manual_seed(3)
    (tmp_path / "trial_state.json").write_text('{"epoch": 1, "history": []}')
    save_checkpoint(tmp_path, model, opt, sched)
    expected = torch.rand(4, device="cuda")
    torch.cuda.manual_seed(99)
    load_checkpoint(tmp_path, model, opt, sched)
    assert torch.equal(torch.rand(4, device="cuda"), expected)
