"""Running a trained model: device and precision choice, normalisation, batching, TTA.

Training's final report, `evaluate` and `predict` all go through `Predictor`, so the same image gives the
same probabilities whichever command computed them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import Bundle
from .inputs import InputSpec
from .errors import UsageError


def pick_device(name: str = "auto") -> torch.device:
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
    torch.set_num_threads(threads or os.cpu_count() or 1)


def tile_origins(length: int, size: int) -> list[int]:
    """Start positions of the fewest `size` tiles that cover `length`, spread evenly (edges included)."""
    if length <= size:
        return [0]
    n = -(-length // size)
    return [round(i * (length - size) / (n - 1)) for i in range(n)]


def eval_views(arrays: Sequence[np.ndarray], spec: InputSpec) -> tuple[torch.Tensor, np.ndarray]:
    """The network inputs for evaluating prepared arrays, and which array each belongs to.

    fit=resize: the array itself (already size x size). fit=crop: tiles at native pixel scale that cover
    the whole image; their softmax outputs are averaged (`average_views`).
    """
    size = spec.img_size
    views, owner = [], []
    for i, a in enumerate(arrays):
        h, w = a.shape[-2:]
        for y in tile_origins(h, size):
            for x in tile_origins(w, size):
                views.append(a[:, y:y + size, x:x + size])
                owner.append(i)
    return torch.from_numpy(np.ascontiguousarray(np.stack(views))), np.asarray(owner)


def average_views(probs: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((n, probs.shape[1]), np.float64)
    np.add.at(out, owner, probs)
    return (out / np.bincount(owner, minlength=n)[:, None]).astype(np.float32)


def normalize(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
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


def tta_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 symmetries of the square (flips and 90-degree rotations); 4 flips for non-square inputs."""
    views = [x, x.flip(-1), x.flip(-2), x.flip(-1).flip(-2)]
    if x.shape[-1] == x.shape[-2]:
        t = x.transpose(-1, -2)
        views += [t, t.flip(-1), t.flip(-2), t.flip(-1).flip(-2)]
    return views


CPU_MICRO_BATCH = 16


class Predictor:
    """A loaded bundle ready to turn prepared arrays into softmax probabilities."""

    def __init__(self, bundle: Bundle, *, device: str = "auto", precision: str = "auto", tta: bool = False,
                 channels_last: bool | None = None):
        self.bundle = bundle
        self.spec = bundle.input
        self.device = pick_device(device)
        self.dtype = pick_dtype(precision, self.device)
        self.tta = tta
        self.model = bundle.build_model().to(self.device)
        # channels_last: measured 1.2-2.4x faster convolutions on CPU (oneDNN) for both LeNet and ResNet.
        self.channels_last = True if channels_last is None else channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    @property
    def classes(self) -> list[str]:
        return self.bundle.classes

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        def run(v: torch.Tensor) -> torch.Tensor:
            return model_logits(self.model, v, self.spec, self.device, self.dtype, self.channels_last)

        if not self.tta:
            return run(x)
        return torch.stack([F.softmax(run(v), 1) for v in tta_views(x)]).mean(0).log()

    def probs(self, x: torch.Tensor) -> np.ndarray:
        return F.softmax(self.logits(x), 1).cpu().numpy()

    def predict_arrays(self, arrays: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
        """Softmax (N, K) for prepared arrays (see `eval_views`).

        On a CPU the network sees 16 images at a time whatever `batch_size` is: the activations then
        stay in cache, measured 1.7x faster than 64 at a time for LeNet at 200 px (ResNet-18: 1.1x).
        """
        if not len(arrays):
            return np.zeros((0, len(self.classes)), np.float32)
        views, owner = eval_views(arrays, self.spec)
        step = min(batch_size, CPU_MICRO_BATCH) if self.device.type == "cpu" else batch_size
        probs = np.concatenate([self.probs(views[i:i + step]) for i in range(0, len(views), step)])
        return probs if len(views) == len(arrays) else average_views(probs, owner, len(arrays))
