"""LoRA variants as a study axis (`method`): vocabulary, exact counts against PEFT's, training, resume, plan."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from lora_ext import apply_placement, architecture_for, count_params, count_trainable
from lora_ext.methods import resolve_method, resolve_methods
from lora_ext.placement import Placement
from record.errors import InputError, InputErrors
from tests import tiny_models
from tests.conftest import tiny_spec
from tune_jobs.study.grid import cells, select_trial
from tune_jobs.study.spec import load_study
from tune_jobs.train.loop import run_trial
from tune_jobs.train.prepare import build_optimizer

METHODS = ("lora", "rslora", "dora", "pissa", "olora", "loraplus", "dora+rslora", "pissa+rslora")
LEARNED = ("train_loss", "val_loss", "val_accuracy", "trainable_params")


@pytest.mark.parametrize("value,expected", [
    ("lora", "lora"), ("rslora+dora", "dora+rslora"), (" olora + rslora ", "olora+rslora"),
    ("loraplus+dora", "dora+loraplus"),
])
def test_a_method_has_one_canonical_spelling(value, expected):
    assert resolve_method(value) == expected


@pytest.mark.parametrize("value,needle", [
    ("dora+pissa", "drops DoRA's magnitudes"), ("pissa+olora", "both initialisations"), ("lora+dora", "plain LoRA"),
    ("qlora", "unknown LoRA method"), ("dora+dora", "twice"), (3, "not a LoRA method"),
])
def test_a_method_peft_cannot_make_is_one_line(value, needle):
    with pytest.raises(InputError, match=needle) as err:
        resolve_method(value)
    assert "\n" not in str(err.value)


def test_a_method_list_is_an_axis_without_repeats():
    assert resolve_methods(["lora", "dora+rslora"]) == ("lora", "dora+rslora")
    with pytest.raises(InputError, match="listed twice"):
        resolve_methods(["dora+rslora", "rslora+dora"])


@pytest.mark.parametrize("model_type", sorted(tiny_models.TINY))
def test_every_architecture_and_method_counts_what_peft_trains(model_type):
    """The meta-device count (no weights, PiSSA/OLoRA's decomposition skipped) equals the trainable parameters of the
    materialised model and PEFT's own count; DoRA adds one magnitude per output feature of each adapted module."""
    from transformers import AutoModelForSequenceClassification

    config = tiny_models.tiny_config(model_type, vocab_size=64)
    arch = architecture_for(model_type)
    counts = {}
    for method in METHODS:
        placement = Placement(layers=(0, 1), components=arch.component_names, r=4, method=method)
        torch.manual_seed(0)
        model = apply_placement(AutoModelForSequenceClassification.from_config(config), placement)
        counts[method] = count_params(config, placement).trainable
        assert counts[method] == count_trainable(model) == model.get_nb_trainable_parameters()[0], method
        if method == "lora":
            out_features = sum(m.base_layer.out_features for m in model.modules() if hasattr(m, "lora_A"))
    assert counts["dora"] - counts["lora"] == out_features
    assert counts["rslora"] == counts["pissa"] == counts["olora"] == counts["loraplus"] == counts["lora"]


def test_roberta_base_dora_adds_a_magnitude_per_output_feature():
    from lora_ext import load_model_config

    config = load_model_config("roberta-base")
    every = Placement(layers=tuple(range(12)), components=("q", "k", "v", "o", "up", "down"), r=8)
    assert count_params(config, every).trainable == 1_919_234
    from dataclasses import replace

    assert count_params(config, replace(every, method="dora")).trainable == 2_002_178  # + 12 x (4 x 768 + 3072 + 768)


SCEN = "scenarios:\n  - {name: vup, layers: all, components: v+up}\n  - {name: head, baseline: classifier_only}\n"


@pytest.fixture(scope="module")
def methods_study(tmp_path_factory, tiny_bert_dir):
    root = tmp_path_factory.mktemp("methods")
    return load_study(tiny_spec(root, tiny_bert_dir, SCEN, lora={"ranks": [4], "dropout": 0.1, "method": list(METHODS),
                                                                  "loraplus_lr_ratio": 8}))


def test_the_method_axis_multiplies_lora_cells_and_names_them(methods_study):
    grid = cells(methods_study)
    labels = [c.label for c in grid]
    assert labels == ["vup-r4", "vup-r4-rslora", "vup-r4-dora", "vup-r4-pissa", "vup-r4-olora", "vup-r4-loraplus",
                      "vup-r4-dora-rslora", "vup-r4-pissa-rslora", "head"]  # baselines are not multiplied
    trials = {c.label: c.trials[0] for c in grid}
    assert trials["vup-r4"].method == "lora" and trials["head"].method is None
    assert trials["vup-r4-loraplus"].loraplus_lr_ratio == 8.0 and trials["vup-r4-dora"].loraplus_lr_ratio is None
    assert trials["vup-r4-dora-rslora"].placement().method == "dora+rslora"


@pytest.mark.parametrize("lora,needle", [
    ({"method": "dora+pissa"}, "lora.method"),
    ({"method": "loraplus", "loraplus_lr_ratio": 0}, "loraplus_lr_ratio"),
    ({"method": "dora", "loraplus_lr_ratio": 4}, "no scenario's method uses loraplus"),
    ({"method": "pissa+rslora", "ranks": [{"v": 8, "up": 4}]}, "per-component ranks"),
])
def test_bad_method_settings_are_one_line(tmp_path, tiny_bert_dir, lora, needle):
    with pytest.raises(InputErrors, match=needle) as err:
        load_study(tiny_spec(tmp_path, tiny_bert_dir, SCEN, lora=lora))
    assert len(err.value.errors) == 1


def test_a_scenarios_own_ratio_without_loraplus_is_an_error_even_when_another_uses_it(tmp_path, tiny_bert_dir):
    """Another scenario's LoRA+ kept the study-wide check quiet, and the plain-LoRA scenario's ratio was dropped."""
    scen = ("scenarios:\n  - {name: plus, layers: all, components: v, method: loraplus}\n"
            "  - {name: plain, layers: all, components: v, loraplus_lr_ratio: 4}\n")
    with pytest.raises(InputErrors) as err:
        load_study(tiny_spec(tmp_path, tiny_bert_dir, scen))
    assert [str(e) for e in err.value.errors] == [
        "scenarios[1] (plain).loraplus_lr_ratio: set, but this scenario's method (lora) does not use LoRA+, so the "
        "ratio would be ignored (got 4); set `method: loraplus` (or e.g. dora+loraplus) in this scenario, or remove "
        "the ratio"]
    fine = scen.replace("loraplus_lr_ratio: 4", "method: [lora, loraplus], loraplus_lr_ratio: 4")
    assert load_study(tiny_spec(tmp_path, tiny_bert_dir, fine)).scenarios[1].loraplus_lr_ratio == 4.0


def test_a_baseline_takes_no_method(tmp_path, tiny_bert_dir):
    scen = "scenarios:\n  - {name: head, baseline: classifier_only, method: dora}\n"
    with pytest.raises(InputErrors, match="a baseline has no LoRA placement"):
        load_study(tiny_spec(tmp_path, tiny_bert_dir, scen))


def test_loraplus_trains_b_faster_through_peft_s_optimizer(methods_study):
    from tune_jobs.train.model import load_model, load_tokenizer

    tc = select_trial(methods_study, "vup", method="loraplus")
    model = apply_placement(load_model(tc, load_tokenizer(tc), ("0", "1")), tc.placement())
    optimizer = build_optimizer(model, tc)
    names = {id(p): n for n, p in model.named_parameters()}
    rates = {names[id(p)]: g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert {lr for n, lr in rates.items() if "lora_B" in n} == {tc.learning_rate * 8}
    assert {lr for n, lr in rates.items() if "lora_A" in n} == {tc.learning_rate}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_and_resumes_exactly(methods_study, tmp_path, method):
    """Two epochs straight equal one epoch, a checkpoint, and a resumed second epoch (PiSSA/OLoRA redo their
    decomposition of the base weights on resume, then load the trained adapter)."""
    config = select_trial(methods_study, "vup", method=method).to_dict()
    kept = tmp_path / "epoch1"

    def keep_first(metrics, checkpoint):
        if metrics["epoch"] == 1:
            shutil.copytree(checkpoint, kept)

    straight = run_trial(config, on_epoch=keep_first)
    assert json.loads((kept / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"
    resumed = run_trial(config, resume_from=kept)
    assert [{k: m[k] for k in LEARNED} for m in resumed] == [{k: m[k] for k in LEARNED} for m in straight]
    assert all(torch.isfinite(torch.tensor(m["train_loss"])) for m in straight)


def test_a_verdict_comes_with_its_price():
    """The headline prices every group that is better than, or as good as, the focal one: trainable parameters,
    samples/s and memory against the focal group's (DoRA's cost is the question next to its verdict)."""
    import pandas as pd

    from analysis.headline import headline

    summary = pd.DataFrame([
        {"group": "all r=8 dora", "data_key": "k", "dataset": "sst2", "mean": 0.86, "n": 3, "ci95_low": 0.85,
         "ci95_high": 0.87, "trainable_params": 501_122, "train_samples_per_s": 80.0, "peak_memory_mb": 1300.0},
        {"group": "all r=8", "data_key": "k", "dataset": "sst2", "mean": 0.855, "n": 3, "ci95_low": 0.85,
         "ci95_high": 0.86, "trainable_params": 480_386, "train_samples_per_s": 100.0, "peak_memory_mb": 1000.0},
        {"group": "head", "data_key": "k", "dataset": "sst2", "mean": 0.70, "n": 3, "ci95_low": 0.69,
         "ci95_high": 0.71, "trainable_params": 148_610, "train_samples_per_s": 300.0, "peak_memory_mb": 500.0},
    ])
    comparisons = pd.DataFrame([
        {"a": "all r=8", "b": "all r=8 dora", "delta": -0.005, "verdict": "equivalent"},
        {"a": "all r=8 dora", "b": "head", "delta": 0.16, "verdict": "better"},
    ])
    lines = headline(summary, comparisons, "val_accuracy", 0.01, "all r=8")
    assert "Better than all r=8: all r=8 dora (+0.0050)" not in lines  # equivalent, not better
    price = next(line for line in lines if line.startswith("What they cost against all r=8"))
    assert "all r=8 dora ×1.04 trainable parameters, ×0.80 samples/s, ×1.30 peak memory" in price
    assert "head" not in price  # not compared with the reference: no verdict to price


LOAD_EACH = """
import json, sys, torch
from peft import AutoPeftModelForSequenceClassification
from transformers import AutoTokenizer
rows = json.loads(sys.argv[1])
out = {}
for path in sys.argv[2:]:
    model = AutoPeftModelForSequenceClassification.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    with torch.no_grad():
        out[path] = model(**tok(rows, padding=True, return_tensors="pt")).logits.tolist()
print(json.dumps(out))
"""
SWEPT = ("lora", "rslora", "dora", "pissa", "olora", "loraplus", "dora+rslora")


@pytest.fixture(scope="module")
def modernbert_sweep(tmp_path_factory):
    """A real Ray sweep of a tiny ModernBERT (saved weights, MiniLM's tokenizer) over every method."""
    import subprocess
    import sys

    from transformers import AutoModelForSequenceClassification

    from lora_ext.model_configs import random_model_dir
    from tests.conftest import REPO

    root = tmp_path_factory.mktemp("modernbert")
    model_dir = random_model_dir(tiny_models.tiny_config("modernbert"), root / "model")
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(tiny_models.tiny_config("modernbert")).save_pretrained(model_dir)
    spec = tiny_spec(root, model_dir, "scenarios:\n  - {name: g, layers: global, components: qkv+up}\n",
                     model_init="pretrained", train={"epochs": 1},
                     lora={"ranks": [4], "dropout": 0.1, "method": list(SWEPT)})
    res = subprocess.run([sys.executable, "-m", "tune_jobs.sweep", str(spec), "--storage", str(root / "store"),
                          "--name", "exp"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return root / "store" / "exp"


@pytest.mark.slow
def test_every_method_exports_for_the_original_base_and_reports(modernbert_sweep, tmp_path, capsys):
    """Each method's export loads with AutoPeftModelForSequenceClassification alone, in a clean process, on the
    unmodified base weights (PiSSA/OLoRA converted by PEFT), and gives the trial's own logits; the report keeps
    one group per method."""
    import subprocess
    import sys

    from tests.conftest import REPO
    from tests.test_export import ROWS, logits_of_the_trial
    from tune_jobs.cli import main

    outs = {}
    for method in SWEPT:
        out = tmp_path / method.replace("+", "_")
        assert main(["export", str(modernbert_sweep), "--scenario", "g", "--method", method, "--out", str(out)]) == 0
        outs[method] = out
    assert "method pissa; exported as a plain LoRA delta of rank 8" in (outs["pissa"] / "README.md").read_text()
    assert json.loads((outs["olora"] / "adapter_config.json").read_text())["init_lora_weights"] is True
    res = subprocess.run([sys.executable, "-c", LOAD_EACH, json.dumps(ROWS), *map(str, outs.values())],
                         capture_output=True, text=True, cwd=REPO.parent)
    assert res.returncode == 0, res.stderr[-3000:]
    loaded = json.loads(res.stdout.strip().splitlines()[-1])
    for method, out in outs.items():
        trial = next(d for d in modernbert_sweep.iterdir() if d.is_dir() and json.loads(
            (d / "params.json").read_text()).get("method") == method)
        expected = logits_of_the_trial(json.loads((trial / "params.json").read_text()),
                                       sorted(trial.glob("checkpoint_*"))[-1])
        assert torch.allclose(torch.tensor(loaded[str(out)]), expected, atol=1e-5), method
    assert main(["export", str(modernbert_sweep), "--scenario", "g", "--out", str(tmp_path / "x")]) == 2
    assert "several methods" in capsys.readouterr().err

    assert main(["analyze", str(modernbert_sweep), "--out", str(tmp_path / "pq")]) == 0
    import pandas as pd

    trials = pd.read_parquet(tmp_path / "pq" / "trials.parquet")
    assert sorted(trials["method"]) == sorted(SWEPT)
    assert trials.loc[trials["method"] == "loraplus", "loraplus_lr_ratio"].tolist() == [16.0]
    assert all(json.loads(r) == {"cpu": 1} for r in trials["resources"])  # the unit of each trial's bill
    assert main(["report", str(tmp_path / "pq"), "--out", str(tmp_path / "rep")]) == 0
    summary = pd.read_csv(tmp_path / "rep" / "summary.csv")
    assert len(summary) == len(SWEPT) and any("dora+rslora" in g for g in summary["group"])
