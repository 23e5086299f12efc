"""The trial: determinism, resume equivalence, gradient checkpointing, batching, bad input, real MiniLM."""

import json
import re

import numpy as np
import pytest

from record.errors import InputError
from record.fields import PROVENANCE_NAMES
from tests.conftest import EXPERIMENTS, SST2_DIR, tiny_spec
from tune_jobs.cli import main
from tune_jobs.data.splits import (
    TrialData,
    check_data,
    length_grouped_batches,
    padding_efficiency,
    selection_split,
    subset_indices,
    tokenized_splits,
)
from tune_jobs.study.data_section import DataConfig, Selection
from tune_jobs.study.grid import select_trial, with_overrides
from tune_jobs.study.spec import load_study
from tune_jobs.train.checkpoint import STATE_FILE
from tune_jobs.train.loop import run_trial

SCEN = "scenarios:\n  - {name: vup, layers: all, components: v+up}\n  - {name: head, baseline: classifier_only}\n"
LEARNED = ("train_loss", "val_loss", "val_accuracy", "trainable_params", "total_params", "padding_efficiency")


def learned(history):
    return [{k: m[k] for k in LEARNED} for m in history]


@pytest.fixture()
def trial_cfg(tmp_path, tiny_bert_dir):
    return select_trial(load_study(tiny_spec(tmp_path, tiny_bert_dir, SCEN)), "vup").to_dict()


def test_metrics_every_epoch_and_determinism(trial_cfg):
    first = run_trial(trial_cfg)
    second = run_trial(trial_cfg)
    assert [m["epoch"] for m in first] == [1, 2]
    expected = {"epoch", "train_loss", "val_loss", "val_accuracy", "val_f1", "val_mcc", "val_examples",
                "train_samples_per_s", "epoch_time_s", "peak_memory_mb", "memory_kind", "compute_dtype",
                "saved_activations_mb", "trainable_state_mb",
                "trainable_params", "total_params", "params_relative_pct", "padding_efficiency", "checkpoint_mb"}
    assert set(first[0]) == expected | set(PROVENANCE_NAMES) and set(first[1]) == expected  # provenance: first only
    assert first[0]["device_name"].startswith("cpu") and first[0]["driver_version"] is None
    assert first[0]["val_examples"] == 872  # the whole SST-2 dev split
    assert [m["saved_activations_mb"] for m in first] == [m["saved_activations_mb"] for m in second]  # exact
    assert first[0]["memory_kind"] == "cpu_rss" and first[0]["checkpoint_mb"] > 0
    assert first[0]["params_relative_pct"] == pytest.approx(
        100 * first[0]["trainable_params"] / first[0]["total_params"])
    assert learned(first) == learned(second)  # bit-identical, not approximately equal


def test_resume_from_checkpoint_matches_uninterrupted(trial_cfg, tmp_path):
    cfg = dict(trial_cfg, epochs=3)
    full = run_trial(cfg)
    saved = {}

    def keep_epoch_1(metrics, ckpt):
        if metrics["epoch"] == 1:
            import shutil
            shutil.copytree(ckpt, tmp_path / "ckpt1")
            saved["ok"] = True

    run_trial(dict(cfg, epochs=3), on_epoch=keep_epoch_1)
    assert saved
    state = json.loads((tmp_path / "ckpt1" / STATE_FILE).read_text())
    assert state["epoch"] == 1 and len(state["history"]) == 1
    from safetensors.torch import load_file

    adapter = load_file(tmp_path / "ckpt1" / "adapter_model.safetensors")  # PEFT's own format
    assert adapter and not any("embeddings" in name for name in adapter)
    assert json.loads((tmp_path / "ckpt1" / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"
    resumed = run_trial(cfg, resume_from=tmp_path / "ckpt1")
    assert [m["epoch"] for m in resumed] == [1, 2, 3]  # history carried over, training continued at epoch 2
    assert learned(resumed) == learned(full)


def test_gradient_checkpointing_gives_same_losses(trial_cfg):
    off = run_trial(dict(trial_cfg, epochs=1))
    on = run_trial(dict(trial_cfg, epochs=1, gradient_checkpointing=True))
    for key in ("train_loss", "val_loss"):
        assert abs(on[0][key] - off[0][key]) / abs(off[0][key]) <= 1e-4


def test_length_grouped_batches_pad_little(tiny_bert_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    data = TrialData.build(DataConfig(dataset=str(SST2_DIR), max_length=128), tok, 0)
    for bs in (32, 480):
        batches = length_grouped_batches(data.train_lengths, bs, seed=1)
        assert sorted(np.concatenate(batches).tolist()) == list(range(len(data.train_lengths)))
        assert padding_efficiency(data.train_lengths, batches) >= 0.90
        rand = np.random.default_rng(0).permutation(len(data.train_lengths))
        assert padding_efficiency(data.train_lengths, [rand[i:i + bs] for i in range(0, len(rand), bs)]) < 0.4
    assert len(data.eval_lengths) == 872


DIVERGED_REASON = r"^train loss (nan|inf) at epoch 1 step \d+ \(lr=1e12\)$"


def test_nan_loss_is_a_result_not_an_error(trial_cfg):
    reports = []
    history = run_trial(dict(trial_cfg, learning_rate=1e12, epochs=2), on_epoch=lambda m, d: reports.append((m, d)))
    assert len(history) == 1 and len(reports) == 1  # stopped at once: no second epoch, no exception
    last, checkpoint_dir = reports[0]
    assert last["diverged"] is True and re.match(DIVERGED_REASON, last["diverged_reason"]), last
    assert checkpoint_dir is None  # nothing to resume from
    assert "val_accuracy" in last and last["val_accuracy"] is None  # Tune requires the sweep metric's key
    assert last["trainable_params"] > 0 and last["memory_kind"] == "cpu_rss"


def test_trial_cli_diverged_exit_1_with_reason(tmp_path, tiny_bert_dir, capsys):
    spec = tiny_spec(tmp_path, tiny_bert_dir, SCEN, train={"learning_rate": 1e12})
    assert main(["trial", str(spec), "--scenario", "vup", "--checkpoint-dir", str(tmp_path / "ck")]) == 1
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "trial vup-r4-rep0 diverged: train loss" in err[0] and "lower learning_rate" in err[0]
    lines = [json.loads(line) for line in captured.out.strip().splitlines()]
    assert len(lines) == 1 and lines[0]["diverged"] is True
    assert not (tmp_path / "ck").exists()


def test_selection_split_is_fixed_disjoint_and_seeded():
    held, rest = selection_split(1000, 0.1, None, seed=42)
    assert len(held) == 100 and len(rest) == 900 and not set(held) & set(rest)
    assert sorted([*held, *rest]) == list(range(1000))
    again, _ = selection_split(1000, None, 100, seed=42)
    assert (again == held).all()  # fraction 0.1 of 1,000 rows = rows 100, same seed: the same rows
    assert not (selection_split(1000, None, 100, seed=43)[0] == held).all()
    with pytest.raises(InputError, match="data.selection: holds out 1,000 of the train split's 1,000 rows"):
        selection_split(1000, None, 1000, seed=42)


def test_selection_rows_never_trained_on(tiny_bert_dir):
    """train_limit draws (with the trial seed) from what the hold-out leaves; the hold-out uses the study seed."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    full = tokenized_splits(DataConfig(dataset=str(SST2_DIR), max_length=32), tok)[0]["train"]
    held, rest = selection_split(len(full), None, 300, seed=7)
    for trial_seed in (7, 8):
        data = TrialData.build(DataConfig(dataset=str(SST2_DIR), max_length=32, train_limit=96,
                                          selection=Selection(rows=300)), tok, trial_seed, selection_seed=7)
        assert data.sel["input_ids"] == full.select(held)["input_ids"]  # the same rows whatever the trial seed
        trained = rest[subset_indices(len(rest), 96, trial_seed)]
        assert data.train["input_ids"] == full.select(trained)["input_ids"] and not set(trained) & set(held)
        assert len(data.sel_lengths) == 300 and len(data.train_lengths) == 96


def test_selection_metrics_every_epoch(trial_cfg):
    cfg = dict(trial_cfg, selection_rows=200, selection_seed=7)
    history = run_trial(cfg)
    assert [m["epoch"] for m in history] == [1, 2]
    for m in history:
        assert 0 <= m["sel_accuracy"] <= 1 and m["sel_loss"] > 0 and 0 <= m["val_accuracy"] <= 1
    assert history[0]["sel_loss"] != history[0]["val_loss"]  # a different split from dev
    assert "sel_loss" not in run_trial(dict(trial_cfg, epochs=1))[0]  # no selection split, no sel_* metrics


def test_malformed_tsv_names_file_and_line(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood row \t1\nno label here\n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\ngood row \t1\n")
    with pytest.raises(InputError, match=r"train.tsv:3: malformed row"):
        check_data(DataConfig(dataset=str(tmp_path)))


@pytest.mark.parametrize("args,needle", [
    (["--data", "./no/such/data"], "data.dataset: local dataset directory not found"),
    (["--scenario", "nope"], "--scenario: no such scenario"),
    (["--resume-from", "/tmp"], "--resume-from: not a trial checkpoint"),
])
def test_trial_cli_bad_input(tmp_path, tiny_bert_dir, capsys, args, needle):
    spec = tiny_spec(tmp_path, tiny_bert_dir, SCEN)
    argv = ["trial", str(spec), "--scenario", "vup", *args]
    if "--scenario" in args:
        argv = ["trial", str(spec), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_unknown_model_alias(tmp_path, tiny_bert_dir, capsys):
    spec = tiny_spec(tmp_path, tiny_bert_dir, SCEN, model="./missing-model")
    assert main(["trial", str(spec), "--scenario", "vup"]) == 2
    assert "model: local model directory not found" in capsys.readouterr().err


def test_cli_prints_json_lines_and_keeps_checkpoint(tmp_path, tiny_bert_dir, capsys):
    spec = tiny_spec(tmp_path, tiny_bert_dir, SCEN)
    ckpt = tmp_path / "ck"
    assert main(["trial", str(spec), "--scenario", "head", "--epochs", "1", "--checkpoint-dir", str(ckpt)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(lines) == 1 and lines[0]["trial"] == "head-rep0" and 0 <= lines[0]["val_accuracy"] <= 1
    assert (ckpt / STATE_FILE).is_file()


@pytest.mark.slow
def test_real_minilm_on_real_sst2_learns():
    """The acceptance run, shortened: MiniLM, LoRA all r=8, 1,000 real SST-2 rows, 1 epoch, full dev set."""
    trial = select_trial(load_study(EXPERIMENTS / "final.yaml", "demo"), "lora_all", r=8)  # glue/sst2 from GLUE_DIR
    trial = with_overrides(trial, train_limit=1000, epochs=1)
    history = run_trial(trial.to_dict())
    assert history[0]["trainable_params"] == 480_386  # 6 layers x 6 components at r=8 + pooler + classifier
    assert history[0]["val_accuracy"] >= 0.75  # chance is 0.51 on the dev split


def test_local_parquet_dataset(tmp_path):
    import pandas as pd

    from tune_jobs.data.splits import load_splits

    for src, dst in (("train.tsv", "train.parquet"), ("dev.tsv", "validation.parquet")):
        df = pd.read_csv(SST2_DIR / src, sep="\t", quoting=3, nrows=50, keep_default_na=False)
        df.to_parquet(tmp_path / dst)
    ds = load_splits(DataConfig(dataset=str(tmp_path)))
    assert len(ds.train) == 50 and len(ds.eval) == 50 and ds.label_names == ("0", "1")
    assert ds.train.column_names == ["sentence", "labels"]


def test_tsv_loading_keeps_every_row():
    from tune_jobs.data.splits import load_splits

    ds = load_splits(DataConfig(dataset=str(SST2_DIR)))
    assert (len(ds.train), len(ds.eval)) == (67_349, 872)  # SOURCE.md counts; quotes are text
    assert sum(ds.eval["labels"]) == 444


def test_cpu_memory_meter_resets_between_trials():
    import mmap

    import torch

    from tune_jobs.train.meters import MemoryMeter

    first = MemoryMeter(torch.device("cpu"))
    # A fresh anonymous mapping, touched page by page: new resident memory whatever the allocator keeps cached.
    block = mmap.mmap(-1, 200 * 2**20)
    for offset in range(0, len(block), mmap.PAGESIZE):
        block[offset] = 1
    assert first.read()["peak_memory_mb"] >= 150
    block.close()
    first.start_epoch()  # the next epoch's peak is its own
    assert first.read()["peak_memory_mb"] < 50
    second = MemoryMeter(torch.device("cpu"))  # a reused Ray actor: the next trial must not inherit that peak
    assert second.read()["peak_memory_mb"] < 50
