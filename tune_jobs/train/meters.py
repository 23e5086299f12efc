"""What a trial measures besides its metrics: memory per epoch (what fractional GPU packing competes for) and the
exact bytes autograd saves for backward."""

from __future__ import annotations

import contextlib
import os
import resource

import numpy as np
import torch


def process_device_mb(device: torch.device) -> float | None:
    """Device memory this process holds on `device` (its CUDA context, allocator reserve and any other library's
    allocations), read from NVML; None where NVML (the nvidia-ml-py package) or its per-process listing is not
    available (e.g. another PID namespace)."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        uuid = str(torch.cuda.get_device_properties(device).uuid)
        handle = pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
                return proc.usedGpuMemory / 2**20
    except (pynvml.NVMLError, AttributeError, RuntimeError):
        return None
    return None


class MemoryMeter:
    """Peak memory per epoch (`start_epoch` resets it). On CUDA: allocated peak (tensors), reserved peak (what the
    caching allocator holds, which neighbours on a shared GPU cannot use) and the process's total from NVML. On CPU:
    growth of the process's peak RSS over its RSS when the trial started (the high-water mark reset through
    /proc/self/clear_refs, so a reused Ray actor does not inherit the trial before)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda_allocated" if device.type == "cuda" else "cpu_rss"
        self.start_kb = 0 if device.type == "cuda" else self._status_kb("VmRSS")
        self.start_epoch()

    @staticmethod
    def _status_kb(key: str) -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def start_epoch(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        with contextlib.suppress(OSError):  # else VmHWM is the process's lifetime peak: an over-estimate
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # reset VmHWM (peak RSS) to the current RSS

    def read(self) -> dict:
        """peak_memory_mb (allocated on CUDA, RSS growth on CPU), memory_kind; on CUDA also peak_reserved_mb and
        process_device_mb (None where NVML cannot tell)."""
        if self.device.type != "cuda":
            return {"peak_memory_mb": max(self._status_kb("VmHWM") - self.start_kb, 0) / 1024, "memory_kind": self.kind}
        return {"peak_memory_mb": torch.cuda.max_memory_allocated(self.device) / 2**20, "memory_kind": self.kind,
                "peak_reserved_mb": torch.cuda.max_memory_reserved(self.device) / 2**20,
                "process_device_mb": process_device_mb(self.device)}


class SavedTensorMeter:
    """Bytes of tensors autograd saves for backward in one forward pass (peak over steps), device-independent.

    Counted through `torch.autograd.graph.saved_tensors_hooks`, each storage once, parameters excluded (saving a
    weight costs no memory; frozen weights kept in the compute dtype are parameters too, so no weight copy is
    counted). Adapting a lower layer keeps activations from that layer up, so this is the figure that shows the
    layer-memory trend on a CPU, where process RSS mostly measures the allocator. Tensors that gradient
    checkpointing recomputes during backward are not counted (they are not kept through the forward). Only the
    steps that can hold the peak are hooked (`peak_steps`): the others pay no per-tensor Python call.
    """

    def __init__(self, model: torch.nn.Module):
        self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.peak_bytes = 0
        self._seen: set[int] = set()
        self._bytes = 0

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self.params and ptr not in self._seen:
            self._seen.add(ptr)
            self._bytes += storage.nbytes()
        return tensor

    def step(self, measured: bool = True):
        """Context for one forward pass (a no-op when not `measured`)."""
        if not measured:
            return contextlib.nullcontext()
        self._seen, self._bytes = set(), 0
        return torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def end_step(self, measured: bool = True) -> None:
        if measured:
            self.peak_bytes = max(self.peak_bytes, self._bytes)
            self._seen = set()


def peak_steps(batches: list[np.ndarray], lengths: np.ndarray) -> set[int]:
    """Indexes of the batches whose (rows, longest row) no other batch exceeds in both: what a step saves for
    backward grows with both, so the peak is among these (usually one or two steps of an epoch)."""
    shapes = [(len(b), int(lengths[b].max())) for b in batches]
    best: dict[tuple[int, int], int] = {}
    for i, shape in enumerate(shapes):
        best.setdefault(shape, i)
    front = [s for s in best if not any(o != s and o[0] >= s[0] and o[1] >= s[1] for o in best)]
    return {best[s] for s in front}



def trainable_state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of what training adds per trainable parameter: the weights, their gradients and AdamW's moments."""
    params = [p for p in model.parameters() if p.requires_grad]
    weights = sum(p.numel() * p.element_size() for p in params)
    moments = sum(v.numel() * v.element_size() for st in optimizer.state.values() for v in st.values()
                  if torch.is_tensor(v) and v.dim() > 0)
    return 2 * weights + moments
