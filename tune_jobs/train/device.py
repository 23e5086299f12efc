"""Where a trial trains and in which precision: pure choices from what the device can do, tested per branch.

A trial whose resources ask for a GPU never trains on the CPU in silence: `choose_device` fails before anything
loads, with one line naming the node and what it saw. `choose_precision` maps `precision: auto` to bf16 only where
the hardware computes bf16 natively (not emulated: T4 and V100 would run it without tensor cores), to fp16 with a
GradScaler on older CUDA GPUs, else fp32.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch

from record.errors import InputError

BF16, FP16, FP32 = "bf16", "fp16", "fp32"
DTYPES = {BF16: torch.bfloat16, FP16: torch.float16, FP32: torch.float32}
FP16_TENSOR_CORES = (7, 0)  # Volta and newer: fp16 autocast runs on tensor cores


class DeviceUnavailable(InputError):
    """A trial asked for a GPU (resources.gpu > 0 or --device cuda) and this node has no usable CUDA device."""

    def __init__(self, saw: str, node: str | None = None):
        self.saw, self.node = saw, node or socket.gethostname()
        super().__init__("resources.gpu", f"the trial asks for a GPU but node {self.node} has none usable: {saw}",
                         allowed="fix the node's CUDA setup, or run on the CPU explicitly (lora-sweep trial "
                         "--device cpu, or resources: {gpu: 0})")

    def __reduce__(self):  # Ray pickles trial errors
        return (DeviceUnavailable, (self.saw, self.node))


def cuda_problem() -> str | None:
    """Why CUDA is not usable in this process (no CUDA build of torch, no device visible, driver too old or
    another initialisation error: its first line); None when it is."""
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return f"torch {torch.__version__} is not a CUDA build"
    try:
        if torch.cuda.is_available():
            return None
        torch.cuda.init()  # raises with the reason (e.g. "The NVIDIA driver on your system is too old")
    except (RuntimeError, AssertionError) as err:
        return f"CUDA did not initialise ({str(err).strip().splitlines()[0][:160]})"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    shown = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
    return f"no CUDA device visible{shown}"


def choose_device(resources: dict | None, device: str | None = None) -> torch.device:
    """The trial's device: `device` when given (cuda checked), CUDA when resources ask for a GPU (DeviceUnavailable
    if it is not usable), the CPU for `gpu: 0`, else CUDA if available."""
    if device is not None:
        chosen = torch.device(device)
    else:
        gpus = (resources or {}).get("gpu")
        if gpus is not None and float(gpus) == 0:
            return torch.device("cpu")
        wants_gpu = gpus is not None and float(gpus) > 0
        chosen = torch.device("cuda" if wants_gpu or torch.cuda.is_available() else "cpu")
    if chosen.type == "cuda":
        problem = cuda_problem()
        if problem is not None:
            raise DeviceUnavailable(problem)
    return chosen


@dataclass(frozen=True)
class Capability:
    """What a device can compute fast: the inputs of `choose_precision` (built by `capability_of`, or by hand in
    tests for every branch)."""

    kind: str  # "cuda", "cpu", ...
    bf16_native: bool  # bf16 matrix units, not emulation
    fp16_fast: bool  # fp16 tensor cores (CUDA compute capability >= 7.0)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16; Linux's /proc/cpuinfo flags)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def capability_of(device: torch.device) -> Capability:
    """Read the device's capability (CUDA: native bf16 without emulation, compute capability; CPU: cpuinfo flags)."""
    if device.type == "cuda":
        major_minor = torch.cuda.get_device_capability(device)
        return Capability("cuda", torch.cuda.is_bf16_supported(including_emulation=False),
                          major_minor >= FP16_TENSOR_CORES)
    return Capability(device.type, device.type == "cpu" and cpu_has_native_bf16(), False)


def choose_precision(precision: str, capability: Capability) -> str:
    """The compute dtype's name: the spec's `bf16`/`fp16`/`fp32` as asked; `auto` = bf16 on native bf16 hardware
    (BENCHMARKS.md: the demo final study's means stay within the fp32 run's seed noise on a bf16 CPU), else fp16 on
    a CUDA GPU with fp16 tensor cores, else fp32."""
    if precision != "auto":
        return precision
    if capability.bf16_native:
        return BF16
    if capability.kind == "cuda" and capability.fp16_fast:
        return FP16
    return FP32
