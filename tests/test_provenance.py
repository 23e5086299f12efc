"""Provenance: the training node's versions, device and lora-sweep commit, reported by the trial once per run and
carried into trials.parquet and an export's model card; the analysing machine's versions are named as such."""

import json
import shutil
import subprocess
from types import SimpleNamespace

import pytest
import torch

from analysis.aggregate import trial_row
from analysis.load import TrialRecord
from record.fields import (
    CONFIGURATION,
    FIELDS,
    PROVENANCE,
    PROVENANCE_NAMES,
    provenance_of,
)
from tune_jobs.train import provenance as prov

GIT = shutil.which("git")


def _git(root, *args):
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


@pytest.mark.skipif(GIT is None, reason="needs git")
def test_git_state_of_a_checkout_clean_dirty_and_not_one(tmp_path):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "a.py").write_text("x = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one")
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert prov.git_state(repo) == (head, False)
    (repo / "results").mkdir()
    (repo / "results" / "new.json").write_text("{}")
    assert prov.git_state(repo) == (head, False)  # untracked files (results written into the checkout) are not dirt
    (repo / "pkg" / "a.py").write_text("x = 2\n")
    assert prov.git_state(repo) == (head, True)
    # a package installed inside some other repository (a venv in a project) is not that repository's commit
    assert prov.git_state(repo / "pkg") == (None, None)
    assert prov.git_state(tmp_path / "elsewhere") == (None, None)  # Ray's working_dir upload: no .git


def test_no_git_on_the_node_is_no_commit(tmp_path, monkeypatch):
    def missing(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(prov.subprocess, "run", missing)
    assert prov.git_state(tmp_path) == (None, None)


def test_provenance_of_a_cpu_trial_and_computed_once_per_process(monkeypatch):
    origin = prov.provenance(torch.device("cpu"))
    assert list(origin) == list(PROVENANCE_NAMES)
    assert origin["torch_version"] == torch.__version__.split("+")[0] or origin["torch_version"] == torch.__version__
    assert origin["python_version"].count(".") == 2 and origin["transformers_version"] and origin["peft_version"]
    assert origin["device_name"].startswith("cpu") and origin["driver_version"] is None
    assert origin["cuda_version"] == torch.version.cuda
    assert (origin["git_commit"] is None) == (origin["git_dirty"] is None)
    if origin["git_commit"] is not None:
        assert len(origin["git_commit"]) == 40 and isinstance(origin["git_dirty"], bool)
    calls = []
    monkeypatch.setattr(prov.subprocess, "run", lambda *a, **k: calls.append(a))
    assert prov.provenance(torch.device("cpu")) == origin and calls == []  # cached: no git per trial


def test_provenance_is_declared_as_record_fields_not_config():
    assert not set(PROVENANCE_NAMES) & {f.name for f in FIELDS}
    assert not set(PROVENANCE_NAMES) & set(CONFIGURATION)  # never part of a group's identity
    assert all(f.nullable and f.default is None for f in PROVENANCE)


def _record(results):
    return TrialRecord(experiment="e", trial_id="t", trial_dir="/x/t", status="TERMINATED",
                       config={"trial_name": "t", "scenario": "s", "repeat": 0, "seed": 1}, results=results)


def test_trials_parquet_takes_the_run_that_reported_last_whole():
    first = {name: None for name in PROVENANCE_NAMES} | {"torch_version": "2.4", "git_commit": "a" * 40,
                                                         "git_dirty": False, "device_name": "NVIDIA A10G"}
    resumed = {name: None for name in PROVENANCE_NAMES} | {"torch_version": "2.5", "device_name": "NVIDIA L4"}
    results = [{"epoch": 1, "val_accuracy": 0.5, **first}, {"epoch": 2, "val_accuracy": 0.6},
               {"epoch": 3, "val_accuracy": 0.7, **resumed}, {"epoch": 4, "val_accuracy": 0.8}]
    row = trial_row(_record(results))
    # the resumed run's node, every field from its report: not the first run's commit under the second's torch
    assert (row["torch_version"], row["device_name"], row["git_commit"]) == ("2.5", "NVIDIA L4", None)
    assert provenance_of([{"epoch": 1}]) == {name: None for name in PROVENANCE_NAMES}
    old = trial_row(_record([{"epoch": 1, "val_accuracy": 0.5}]))
    assert all(old[name] is None for name in PROVENANCE_NAMES)


def _tc():
    return SimpleNamespace(study="s", trial_name="t", scenario="vup", seed=1, model="m", dataset="d", train_limit=None,
                           max_length=64, label_names=("neg", "pos"), num_labels=2, baseline=None, r=8, alpha=None,
                           layers=[0], components=["v"], rank_pattern=None, method="lora", loraplus_lr_ratio=None,
                           epochs=1, learning_rate=1e-3, batch_size=8, lr_schedule="cosine")


def test_the_model_card_names_what_trained_it(tmp_path):
    from tune_jobs.export import model_card, trained_with
    from tune_jobs.train.checkpoint import STATE_FILE

    origin = {name: None for name in PROVENANCE_NAMES} | {
        "torch_version": "2.5.1", "transformers_version": "4.57.0", "peft_version": "0.17.1", "ray_version": "2.50.0",
        "python_version": "3.12.3", "cuda_version": "12.4", "driver_version": "550.54.15",
        "device_name": "NVIDIA H100 80GB HBM3", "lora_sweep_version": "0.9.0", "git_commit": "c" * 40,
        "git_dirty": True}
    (tmp_path / STATE_FILE).write_text(json.dumps({"epoch": 2, "history": [{"epoch": 1, **origin}, {"epoch": 2}]}))
    assert trained_with(tmp_path) == origin
    final = {"val_accuracy": 0.9, "trainable_params": 10, "params_relative_pct": 1.0}
    card = model_card(_tc(), final, "repeat 0", "base", "here", True, trained_with(tmp_path))
    line = next(x for x in card.splitlines() if x.startswith("- trained on:"))
    for text in ("NVIDIA H100 80GB HBM3", "driver 550.54.15", "CUDA 12.4", "torch 2.5.1", "peft 0.17.1",
                 "lora-sweep 0.9.0", "c" * 40, "uncommitted changes"):
        assert text in line, text
    (tmp_path / STATE_FILE).write_text(json.dumps({"epoch": 1, "history": [{"epoch": 1}]}))  # an older trial
    card = model_card(_tc(), final, "repeat 0", "base", "here", True, trained_with(tmp_path))
    assert "- trained on: not recorded" in card
