"""The GPU path checked on a CPU: no silent fallback, precision per device capability (every branch), fp16 with a
loss scaler, frozen weights in the compute dtype, batches padded once, the deferred finiteness check."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from record.errors import EXIT_INPUT
from tests.conftest import REPO, SST2_DIR, tiny_spec
from tune_jobs.data.splits import PaddedSplit, TrialData
from tune_jobs.study.data_section import DataConfig
from tune_jobs.study.grid import select_trial, with_overrides
from tune_jobs.study.spec import load_study
from tune_jobs.train.device import (
    BF16,
    FP16,
    FP32,
    Capability,
    DeviceUnavailable,
    capability_of,
    choose_device,
    choose_precision,
    cuda_problem,
)
from tune_jobs.train.loop import run_trial, train_epoch
from tune_jobs.train.meters import SavedTensorMeter, peak_steps
from tune_jobs.train.prepare import frozen_linears_to, prepare

SCEN = ("scenarios:\n  - {name: vup, layers: all, components: v+up}\n  - {name: head, baseline: classifier_only}\n"
        "  - {name: full, baseline: full}\n  - {name: dora, layers: all, components: all, method: dora}\n")
NO_CUDA = not torch.cuda.is_available()


def _trial(tmp_path, model_dir, scenario="vup", **overrides) -> dict:
    study = load_study(tiny_spec(tmp_path, model_dir, SCEN))
    return with_overrides(select_trial(study, scenario), **overrides).to_dict()


# ---------------------------------------------------------------- precision: a pure function of the capability

@pytest.mark.parametrize("capability, expected", [
    (Capability("cuda", bf16_native=True, fp16_fast=True), BF16),  # A100, H100, A10G: native bf16
    (Capability("cuda", bf16_native=False, fp16_fast=True), FP16),  # T4, V100: bf16 only emulated -> fp16 + scaler
    (Capability("cuda", bf16_native=False, fp16_fast=False), FP32),  # Pascal and older: no tensor cores
    (Capability("cpu", bf16_native=True, fp16_fast=False), BF16),  # AVX512-BF16 / AMX
    (Capability("cpu", bf16_native=False, fp16_fast=False), FP32),
    (Capability("mps", bf16_native=False, fp16_fast=False), FP32),
])
def test_auto_precision_per_capability(capability, expected):
    assert choose_precision("auto", capability) == expected


@pytest.mark.parametrize("asked", [BF16, FP16, FP32])
def test_an_explicit_precision_is_kept_on_any_device(asked):
    for capability in (Capability("cuda", True, True), Capability("cpu", False, False)):
        assert choose_precision(asked, capability) == asked


def test_this_cpus_capability_is_read_not_assumed():
    cap = capability_of(torch.device("cpu"))
    assert cap.kind == "cpu" and not cap.fp16_fast
    if not NO_CUDA:
        cuda = capability_of(torch.device("cuda"))
        assert cuda.bf16_native == torch.cuda.is_bf16_supported(including_emulation=False)


# ---------------------------------------------------------------- never a silent CPU fallback

@pytest.mark.skipif(not NO_CUDA, reason="checks the machine without CUDA")
def test_a_gpu_request_without_cuda_fails_naming_node_and_cause():
    with pytest.raises(DeviceUnavailable) as err:
        choose_device({"cpu": 1, "gpu": 1})
    line = str(err.value)
    assert "\n" not in line and line.startswith("resources.gpu: ") and "node " in line
    assert cuda_problem() in line and "--device cpu" in line
    with pytest.raises(DeviceUnavailable):
        choose_device({"cpu": 1}, "cuda")  # asking for CUDA by name is checked too
    assert choose_device({"cpu": 1, "gpu": 1}, "cpu").type == "cpu"  # the explicit way round
    assert choose_device({"cpu": 1, "gpu": 0}).type == "cpu"
    assert choose_device({"cpu": 1}).type == "cpu"  # no GPU asked: CUDA if there is one, else the CPU


def test_device_unavailable_survives_pickling_as_rays_errors_do():
    import pickle

    err = DeviceUnavailable("no CUDA device visible", node="gpu-node-7")
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is DeviceUnavailable and str(again) == str(err) and "gpu-node-7" in str(again)


@pytest.mark.skipif(not NO_CUDA, reason="checks the machine without CUDA")
def test_trial_of_a_gpu_spec_on_a_cpu_is_one_line_exit_2_and_runs_with_device_cpu(tmp_path, tiny_bert_dir):
    spec = tiny_spec(tmp_path, tiny_bert_dir, SCEN, resources={"cpu": 1, "gpu": 1})
    cmd = [sys.executable, "-m", "tune_jobs.cli", "trial", str(spec), "--scenario", "vup", "--epochs", "1"]
    failed = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    errors = [line for line in failed.stderr.splitlines() if not line.startswith("#")]
    assert failed.returncode == EXIT_INPUT and failed.stdout == "", failed.stderr
    assert len(errors) == 1 and errors[0].startswith("error: resources.gpu: the trial asks for a GPU but node ")
    ran = subprocess.run([*cmd, "--device", "cpu"], capture_output=True, text=True, cwd=REPO)
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout.splitlines()[-1])
    assert report["epoch"] == 1 and report["compute_dtype"] in (FP32, BF16) and report["memory_kind"] == "cpu_rss"


# ---------------------------------------------------------------- fp16 with a GradScaler, on the CPU

def test_fp16_trains_with_a_loss_scaler_and_counts_skipped_steps(tmp_path, tiny_bert_dir):
    cfg = _trial(tmp_path, tiny_bert_dir, precision="fp16", epochs=2)
    p = prepare(cfg, "cpu")
    assert p.compute_dtype == FP16 and p.scaler is not None and p.scaler.is_enabled()
    history = run_trial(cfg, device="cpu")
    assert [m["compute_dtype"] for m in history] == [FP16, FP16]
    assert all(np.isfinite(m["train_loss"]) and 0 <= m["skipped_steps"] < 6 for m in history)
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert "skipped_steps" not in run_trial(_trial(tmp_path, tiny_bert_dir, precision="fp32", epochs=1))[0]


def test_an_overflowing_fp16_step_is_skipped_and_counted(tmp_path, tiny_bert_dir):
    """A loss scale of 2^126 overflows every gradient: the scaler skips each step (AdamW does not count it)."""
    p = prepare(_trial(tmp_path, tiny_bert_dir, precision="fp16", epochs=1), "cpu")
    p.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**126, growth_interval=10**6)
    before = {n: q.detach().clone() for n, q in p.model.named_parameters() if q.requires_grad}
    result = train_epoch(p, 1, SavedTensorMeter(p.model), batches=[np.arange(8), np.arange(8, 16)])
    assert result.skipped_steps == 2 and np.isfinite(result.loss_sum)
    assert all(torch.equal(before[n], q) for n, q in p.model.named_parameters() if q.requires_grad)


# ---------------------------------------------------------------- frozen weights in the compute dtype

def _one_step(model, batch, dtype):
    model.zero_grad(set_to_none=True)
    meter = SavedTensorMeter(model)
    with torch.autocast("cpu", dtype=dtype), meter.step():
        out = model(**batch)
    meter.end_step()
    out.loss.backward()
    grads = {n: q.grad.clone() for n, q in model.named_parameters() if q.grad is not None}
    return out.logits.detach(), grads, meter.peak_bytes


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_frozen_weights_in_the_compute_dtype_change_no_arithmetic_and_no_weight_copies_are_saved(
        tmp_path, tiny_bert_dir, dtype):
    p = prepare(_trial(tmp_path, tiny_bert_dir, precision="fp32"), "cpu")  # fp32: nothing cast yet
    model = p.model.eval()  # no dropout: one step computed twice must agree bit for bit
    cast = copy.deepcopy(model)
    saved = frozen_linears_to(cast, dtype)
    assert saved > 0
    assert all(q.dtype == torch.float32 for q in cast.parameters() if q.requires_grad)  # LoRA and the head
    assert {m.weight.dtype for m in cast.modules() if isinstance(m, torch.nn.LayerNorm)} == {torch.float32}
    batch = p.data.padded["train"].batch(np.arange(16))
    logits, grads, saved_bytes = _one_step(model, batch, dtype)
    logits_cast, grads_cast, saved_bytes_cast = _one_step(cast, batch, dtype)
    assert torch.equal(logits, logits_cast)
    assert grads.keys() == grads_cast.keys() and all(torch.equal(grads[n], grads_cast[n]) for n in grads)
    assert saved_bytes_cast < saved_bytes  # the fp32 path kept a cast copy of every frozen weight for backward


@pytest.mark.parametrize("scenario, cast", [("vup", True), ("head", True), ("full", False), ("dora", False)])
def test_which_trials_keep_fp32_base_weights(tmp_path, tiny_bert_dir, scenario, cast):
    p = prepare(_trial(tmp_path, tiny_bert_dir, scenario, precision="bf16"), "cpu")
    linear = {m.weight.dtype for m in p.model.modules() if isinstance(m, torch.nn.Linear)
              and not m.weight.requires_grad}
    assert (torch.bfloat16 in linear) is cast
    assert all(q.dtype == torch.float32 for q in p.model.parameters() if q.requires_grad)


# ---------------------------------------------------------------- less host work per step

@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("task", ["sst2", "mrpc"])
def test_padded_batches_equal_the_collators(tiny_bert_dir, side, task):
    from transformers import AutoTokenizer, DataCollatorWithPadding

    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    tok.padding_side = side  # decoder classifiers pad on the left
    data = DataConfig(dataset=str(SST2_DIR), max_length=48, train_limit=300) if task == "sst2" else \
        DataConfig(dataset=str(SST2_DIR.parent / "mrpc"), text=("#1 String", "#2 String"), label="Quality",
                   max_length=48, train_limit=300)
    trial = TrialData.build(data, tok, 0)
    collator = DataCollatorWithPadding(tok)
    for rows in (np.array([3, 17, 250, 299, 8]), np.arange(300)):
        expected = TrialData.batch(trial.train, rows, collator)
        got = trial.padded["train"].batch(rows)
        assert expected.keys() == got.keys()
        for key in expected:
            assert expected[key].dtype == got[key].dtype and torch.equal(expected[key], got[key]), key
    assert isinstance(trial.padded["eval"], PaddedSplit) and len(trial.padded["eval"].lengths) == len(trial.eval)


def test_the_peak_steps_hold_the_peak_of_every_step(tmp_path, tiny_bert_dir):
    p = prepare(_trial(tmp_path, tiny_bert_dir), "cpu")
    split = p.data.padded["train"]
    batches = [np.arange(i, min(i + 16, 96)) for i in range(0, 96, 16)] + [np.array([0, 1, 2])]
    every = SavedTensorMeter(p.model)
    for rows in batches:
        with p.autocast(), every.step():
            p.model(**split.batch(rows)).loss.backward()
        every.end_step()
    probed = SavedTensorMeter(p.model)
    train_epoch(p, 1, probed, batches=batches)
    assert probed.peak_bytes == every.peak_bytes > 0
    assert len(peak_steps(batches, split.lengths)) < len(batches)


@pytest.mark.parametrize("check_every", [1, 3, 1000])
def test_a_non_finite_loss_is_found_at_its_exact_step_whenever_checked(tmp_path, tiny_bert_dir, check_every):
    from tune_jobs.train.loop import TrialDiverged

    p = prepare(_trial(tmp_path, tiny_bert_dir, learning_rate=1e12), "cpu")
    batches = [np.arange(i, i + 8) for i in range(0, 96, 8)]
    with pytest.raises(TrialDiverged) as err:
        train_epoch(p, 1, SavedTensorMeter(p.model), batches=batches, check_every=check_every)
    first = prepare(_trial(tmp_path, tiny_bert_dir, learning_rate=1e12), "cpu")
    with pytest.raises(TrialDiverged) as reference:
        train_epoch(first, 1, SavedTensorMeter(first.model), batches=batches, check_every=1)
    assert str(err.value) == str(reference.value)
    assert "at epoch 1 step " in str(err.value)


# ---------------------------------------------------------------- the offline GPU check, on this CPU

@pytest.mark.slow
def test_gpu_bench_smoke_prints_its_three_tables_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu.py"), "--smoke", "--json-out", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    for heading in ("## 1. Training step", "## 2. K trial processes", "## 3. Memory by adapted layer"):
        assert heading in done.stdout
    results = json.loads(out.read_text())
    assert "torch " in results["environment"] and "peft " in results["environment"]
    steps = {(r["scenario"], r["batch"]): r for r in results["steps"]}
    assert set(steps) == {(s, b) for s in ("lora_all_r8", "full_ft", "classifier_only") for b in (8, 32)}
    assert all(r["samples_per_s"] > 0 and r["compute_dtype"] in (FP32, BF16) for r in steps.values())
    # the exact figures: full fine-tuning trains every weight, classifier-only saves (almost) nothing for backward
    assert steps["full_ft", 32]["trainable_params"] > steps["lora_all_r8", 32]["trainable_params"] \
        > steps["classifier_only", 32]["trainable_params"]
    assert [r["k"] for r in results["concurrent"]] == [1, 2]
    layers = {(r["layer"], r["gradient_checkpointing"]): r["saved_activations_mb"] for r in results["layers"]}
    assert layers[0, False] > layers[3, False] and layers[0, True] < layers[0, False]


def test_plan_accepts_fp16_and_refuses_an_unknown_precision(tmp_path, tiny_bert_dir):
    from tune_jobs.cli import main

    good = tiny_spec(tmp_path, tiny_bert_dir, SCEN, train={"precision": "fp16"})
    assert main(["plan", str(good)]) == 0
    bad = tiny_spec(tmp_path, tiny_bert_dir, SCEN, train={"precision": "fp8"})
    done = subprocess.run([sys.executable, "-m", "tune_jobs.cli", "plan", str(bad)], capture_output=True, text=True,
                          cwd=REPO)
    assert done.returncode == EXIT_INPUT and "train.precision" in done.stderr and "fp16" in done.stderr


@pytest.mark.slow
def test_gpu_bench_verify_passes_on_the_cpu():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu.py"), "--smoke", "--verify"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert len(lines) == 4 and all(line.startswith("PASS") for line in lines)
