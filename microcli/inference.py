"""Running a network with PyTorch: device and precision choice, normalisation, the torch engine.

Training's final report, `evaluate` and `predict` all go through `Predictor` (`microcli.engines`, re-exported
here), so the same image gives the same probabilities whichever command computed them. `TorchEngine` is
the engine that always works: bundles and TorchScript files, on a CPU or a GPU.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from .engines import CPU_MICRO_BATCH, Predictor, average_views, network_views, tile_origins  # noqa: F401
from .inputs import InputSpec
from .errors import UsageError
from .modelfile import ModelFile


def pick_device(name: str = "auto") -> torch.device:
    """The torch device for 'auto' (CUDA, then MPS, then CPU) or a named one; UsageError when absent."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is available (torch.cuda.is_available() is False)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps: Apple MPS is not available")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic (AVX512-BF16 or AMX). Elsewhere oneDNN emulates it, slower than fp32."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(precision: str, device: torch.device, *, training: bool = False) -> torch.dtype | None:
    """The autocast dtype, or None for fp32.

    auto: bf16 on CUDA GPUs that support it (else fp16). On CPUs with native bf16, training uses bf16
    (1.6-2.9x faster than fp32 for LeNet and ResNet-18 here) but inference stays fp32: on the NEU-DET
    bench bf16 changed the predicted class of 2 in 1800 images (bench/bench_predict.py).
    """
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if training and device.type == "cpu" and cpu_has_bf16() else None
    if precision == "bf16":
        if device.type == "cpu" and not cpu_has_bf16():
            raise UsageError("--precision bf16: this CPU has no bf16 support; use fp32")
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise UsageError("--precision fp16 needs a CUDA GPU; use bf16 or fp32 on this device")
        return torch.float16
    raise UsageError(f"unknown precision {precision!r}")


def set_threads(threads: int = 0) -> None:
    """torch's intra-op threads: `threads`, or every core for 0."""
    torch.set_num_threads(threads or os.cpu_count() or 1)


def normalize(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """(x - mean) / std per channel, with the training split's statistics from `spec`."""
    mean = torch.tensor(spec.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def model_logits(model: torch.nn.Module, x: torch.Tensor, spec: InputSpec, device: torch.device,
                 dtype: torch.dtype | None, channels_last: bool) -> torch.Tensor:
    """One forward pass as every command does it: normalise, memory layout, autocast; fp32 logits.
    The caller chooses no_grad / inference_mode."""
    x = normalize(x.to(device, non_blocking=True), spec)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        return model(x).float()


class TorchEngine:
    """Eager PyTorch: a bundle's network (normalised here, autocast, channels_last) or a TorchScript
    export (normalisation and softmax inside it). Prepared arrays in, softmax out."""

    name = "torch"
    batch = CPU_MICRO_BATCH

    def __init__(self, model: ModelFile, *, device: str = "auto", precision: str = "auto",
                 channels_last: bool | None = None, threads: int = 0):
        self.spec = model.input
        self.device = pick_device(device)
        self.dtype = pick_dtype(precision, self.device)
        self.on_cpu = self.device.type == "cpu"
        if threads:
            set_threads(threads)
        self.exported = model.kind == "torchscript"
        if self.exported:
            from .export import quiet_jit

            # TorchScript is code, not pickle: torch.jit.load runs no Python from the file
            with quiet_jit():
                self.model = torch.jit.load(model.path, map_location=self.device).eval()
        else:
            self.model = model.bundle.build_model().to(self.device)
        # channels_last: measured 1.2-2.4x faster convolutions on CPU (oneDNN) for both LeNet and ResNet.
        self.channels_last = True if channels_last is None else channels_last
        if self.channels_last and not self.exported:
            self.model = self.model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.exported:
            return self._exported(x).log()
        return model_logits(self.model, x, self.spec, self.device, self.dtype, self.channels_last)

    def _exported(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None):
            return self.model(x).float()

    @torch.inference_mode()
    def probs(self, x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        p = self._exported(t) if self.exported else F.softmax(self.logits(t), 1)
        return p.cpu().numpy()
