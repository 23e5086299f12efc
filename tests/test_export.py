"""Standard checkpoints and `lora-sweep export`: what a sweep trains loads with PEFT / transformers alone, in a
clean process, and gives the trial's own logits on real SST-2 rows."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, SST2_DIR, tiny_spec
from tune_jobs.cli import main

SCEN = ("scenarios:\n  - {name: vup, layers: all, components: v+up}\n"
        "  - {name: head, baseline: classifier_only}\n  - {name: full, baseline: full}\n")
ROWS = ["a gripping , beautifully acted film", "a dull , lifeless mess", "it 's fine , i guess", "not bad at all"]

LOAD = """
import json, sys, torch
from transformers import AutoTokenizer
kind, out, rows = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if kind == "peft":
    from peft import AutoPeftModelForSequenceClassification as Auto
else:
    from transformers import AutoModelForSequenceClassification as Auto
model = Auto.from_pretrained(out).eval()
tok = AutoTokenizer.from_pretrained(out)
with torch.no_grad():
    logits = model(**tok(rows, padding=True, return_tensors="pt")).logits
print(json.dumps(logits.tolist()))
"""


def logits_in_clean_process(kind: str, out) -> torch.Tensor:
    res = subprocess.run([sys.executable, "-c", LOAD, kind, str(out), json.dumps(ROWS)], capture_output=True,
                         text=True, cwd=REPO.parent)  # outside the repository: nothing of lora-sweep on the path
    assert res.returncode == 0, res.stderr[-3000:]
    return torch.tensor(json.loads(res.stdout.strip().splitlines()[-1]))


def logits_of_the_trial(config: dict, checkpoint) -> torch.Tensor:
    """The trial's own model rebuilt from its checkpoint through lora-sweep's loader."""
    from lora_ext import apply_placement
    from tune_jobs.checkpoint import load_weights
    from tune_jobs.spec import TrialConfig
    from tune_jobs.trial import load_model, load_tokenizer

    tc = TrialConfig.from_dict(config)
    tok = load_tokenizer(tc)
    model = load_model(tc, tok, tuple(tc.label_names or ("0", "1")))
    model = apply_placement(model, tc.placement())
    load_weights(checkpoint, model)
    model.eval()
    with torch.no_grad():
        return model(**tok(ROWS, padding=True, return_tensors="pt")).logits


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, tiny_bert_dir):
    """A real sweep (Ray) of a tiny pretrained-style BERT: LoRA, classifier-only and full fine-tuning."""
    from transformers import BertConfig, BertForSequenceClassification

    root = tmp_path_factory.mktemp("export")
    model_dir = root / "model"
    import shutil

    shutil.copytree(tiny_bert_dir, model_dir)
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig.from_pretrained(model_dir)).save_pretrained(model_dir)  # weights
    spec = tiny_spec(root, model_dir, SCEN, model_init="pretrained", repeats=2, train={"epochs": 1})
    res = subprocess.run([sys.executable, "-m", "tune_jobs.sweep", str(spec), "--storage", str(root / "store"),
                          "--name", "exp"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return root / "store" / "exp"


@pytest.mark.slow
@pytest.mark.parametrize("scenario,kind", [("vup", "peft"), ("head", "transformers"), ("full", "transformers")])
def test_export_loads_with_the_ecosystem_and_gives_the_trials_logits(experiment, tmp_path, capsys, scenario, kind):
    out = tmp_path / scenario
    assert main(["export", str(experiment), "--scenario", scenario, "--repeat", "1", "--out", str(out)]) == 0
    assert "exported" in capsys.readouterr().out
    card = (out / "README.md").read_text()
    assert "seed 8" in card and "trainable parameters" in card and "lora-sweep" in card  # base_seed 7 + repeat 1
    if kind == "peft":
        config = json.loads((out / "adapter_config.json").read_text())
        assert config["task_type"] == "SEQ_CLS" and config["base_model_name_or_path"].endswith("model")
    trial = next(d for d in experiment.iterdir() if d.is_dir() and d.name.startswith(scenario) and "rep1" in d.name)
    checkpoint = sorted(trial.glob("checkpoint_*"))[-1]
    expected = logits_of_the_trial(json.loads((trial / "params.json").read_text()), checkpoint)
    assert torch.allclose(logits_in_clean_process(kind, out), expected, atol=1e-5)


@pytest.mark.slow
def test_export_best_says_how_it_chose_and_bad_flags_are_one_line(experiment, tmp_path, capsys):
    assert main(["export", str(experiment), "--scenario", "vup", "--best", "--out", str(tmp_path / "b")]) == 0
    assert "best final val_accuracy" in capsys.readouterr().out  # no selection split in this study: the dev set
    for argv, needle in ((["--scenario", "nope"], "--scenario"), (["--scenario", "vup", "--r", "9"], "--r"),
                         (["--trial", "zz"], "--trial")):
        assert main(["export", str(experiment), *argv, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0]
    assert main(["export", str(tmp_path / "none"), "--scenario", "vup", "--out", str(tmp_path / "y")]) == 2
    assert not (tmp_path / "x").exists()


def test_checkpoint_formats_are_the_standard_ones(tmp_path, tiny_bert_dir):
    """Without Ray: LoRA as PEFT writes it, the head as safetensors, full fine-tuning as a transformers model."""
    from tune_jobs.grid import select_trial
    from tune_jobs.spec import load_study
    from tune_jobs.trial import copy_checkpoint_to, run_trial

    study = load_study(tiny_spec(tmp_path, tiny_bert_dir, SCEN, train={"epochs": 1}))
    files = {}
    for scenario in ("vup", "head", "full"):
        keep = tmp_path / scenario
        run_trial(select_trial(study, scenario).to_dict(), on_epoch=copy_checkpoint_to(keep))
        files[scenario] = {p.name for p in keep.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "train_state.pt", "trial_state.json"} <= files["vup"]
    assert {"head.safetensors", "train_state.pt"} <= files["head"] and "model.safetensors" not in files["head"]
    assert {"config.json", "model.safetensors", "train_state.pt"} <= files["full"]
    assert SST2_DIR.is_dir()


@pytest.mark.parametrize("primary, finals, expected, why", [
    ("val_mcc", [{"val_accuracy": 0.71, "val_mcc": 0.10}, {"val_accuracy": 0.69, "val_mcc": 0.25}], 1, "val_mcc"),
    ("val_f1", [{"val_accuracy": 0.80, "val_f1": 0.82, "sel_f1": 0.90, "sel_accuracy": 0.9},
                {"val_accuracy": 0.78, "val_f1": 0.86, "sel_f1": 0.80, "sel_accuracy": 0.7}], 0, "sel_f1"),
    ("val_mse", [{"val_mse": 0.9, "val_pearson": 0.8}, {"val_mse": 0.5, "val_pearson": 0.7}], 1, "val_mse"),
    (None, [{"val_accuracy": 0.80}, {"val_accuracy": 0.85}], 1, "val_accuracy"),  # made before studies named it
])
def test_export_best_follows_the_studys_primary_metric_and_its_direction(primary, finals, expected, why):
    from tune_jobs.export import best_by_primary_metric

    pool = [{"config": {"primary_metric": primary, "trial_name": f"t{i}"}, "final": f} for i, f in enumerate(finals)]
    chosen, how = best_by_primary_metric(pool)
    assert chosen is pool[expected] and f"best final {why} " in how  # was: best val_accuracy whatever the task
