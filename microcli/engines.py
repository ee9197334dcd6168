"""Inference engines: what turns prepared arrays into softmax, and the `Predictor` that uses one.

Every engine takes the network inputs as float32 (N, C, S, S) arrays exactly as `prepare_array` makes
them (not normalised; fit=crop ResNets also whole images up to a bound, `Views`) and returns softmax
probabilities (N, K). Engines:

- ``torch``: eager PyTorch (fp32 on CPU, bf16/fp16 autocast on GPUs); always there, the reference. It
  runs bundles and TorchScript files.
- ``onnxruntime`` and ``openvino``: CPU runtimes from the optional extra (``pip install
  'microcli[fast]'``). They run ONNX files directly, and bundles after converting them to ONNX
  (`microcli.export`), kept in a cache so that the conversion is paid once per bundle.
- ``auto`` (the CLI's default): on a CPU, the fastest installed runtime (`AUTO_ORDER`, chosen by
  bench/bench_engines.py); on a GPU, or when none is installed, torch.

This module does not import torch: with an ONNX file (or a cached conversion) `microcli predict` never
loads it, which is a third of its start-up.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from . import __version__
from .errors import NotInstalledError, UsageError
from .inputs import InputSpec
from .metrics import average_views
from .modelfile import FAST_EXTRA, ModelFile

ENGINES = ("auto", "torch", "onnxruntime", "openvino")
RUNTIMES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}  # engine -> the module it needs
AUTO_ORDER = ("openvino", "onnxruntime")  # fastest first, measured by bench/bench_engines.py
CPU_MICRO_BATCH = 16
CACHE_ENV = "MICROCLI_CACHE_DIR"


class Engine(Protocol):
    """Prepared arrays in, softmax out."""

    name: str
    on_cpu: bool
    batch: int  # images per call on a CPU

    def probs(self, x: np.ndarray) -> np.ndarray:
        """float32 (N, C, H, W) -> float32 (N, K) softmax; H = W = S except for the whole images that fit=crop
        ResNets take (`view_boxes`)."""


# --- network inputs from prepared arrays (numpy only) ---------------------------------------------------

def tile_origins(length: int, size: int) -> list[int]:
    """Start positions of the fewest `size` tiles that cover `length`, spread evenly (edges included)."""
    if length <= size:
        return [0]
    n = -(-length // size)
    return [round(i * (length - size) / (n - 1)) for i in range(n)]


def view_boxes(h: int, w: int, spec: InputSpec) -> list[tuple[int, int, int, int]]:
    """(y, x, height, width) of the network inputs that cover a prepared (h, w) array, row by row.

    fit=resize or squash: the array itself (S x S). fit=crop: the whole array when neither side exceeds
    `spec.whole`, else the fewest S x S tiles at native scale that cover it, spread evenly (edges
    included).
    """
    if max(h, w) <= spec.whole:
        return [(0, 0, h, w)]
    size = spec.img_size
    return [(y, x, size, size) for y in tile_origins(h, size) for x in tile_origins(w, size)]


class Views:
    """The network inputs for prepared arrays, grouped by shape so that each group stacks into one
    (V, C, h, w) array: `groups` holds (inputs, owner: which array each belongs to, boxes: where each sits
    on its array as (y, x, height, width)). A fit=resize or squash model has one group of (N, C, S, S)."""

    def __init__(self, arrays: Sequence[np.ndarray], spec: InputSpec):
        by_shape: dict[tuple[int, int], tuple[list, list, list]] = {}
        for i, a in enumerate(arrays):
            for box in view_boxes(*a.shape[-2:], spec):
                y, x, vh, vw = box
                views, owner, boxes = by_shape.setdefault((vh, vw), ([], [], []))
                views.append(a[:, y:y + vh, x:x + vw])
                owner.append(i)
                boxes.append(box)
        self.groups = [(np.ascontiguousarray(np.stack(v), dtype=np.float32), np.asarray(o), b)
                       for v, o, b in by_shape.values()]

    def __len__(self) -> int:
        return sum(len(o) for _, o, _ in self.groups)

    @property
    def owner(self) -> np.ndarray:
        """Which array each view belongs to, in `batches` order (for `average_views`)."""
        return np.concatenate([o for _, o, _ in self.groups])

    def batches(self, step: int, *, side: int = 0):
        """(inputs, owner, boxes) of at most `step` views of one shape at a time, group after group. With
        `side`, `step` counts side x side inputs: a group of larger views (whole images) gets as many
        pixels per batch, so fewer of them (a GPU's memory is sized by pixels)."""
        for x, owner, boxes in self.groups:
            n = max(1, step * side * side // (x.shape[-2] * x.shape[-1])) if side else step
            for i in range(0, len(x), n):
                yield x[i:i + n], owner[i:i + n], boxes[i:i + n]


def network_views(arrays: Sequence[np.ndarray], spec: InputSpec) -> Views:
    """The network inputs for prepared arrays (`Views`); their softmax outputs are averaged per array
    (`average_views`)."""
    return Views(arrays, spec)


def tta_arrays(x: np.ndarray) -> list[np.ndarray]:
    """The 8 symmetries of the square (flips and 90-degree rotations). A non-square input (a whole image
    of a fit=crop ResNet, which takes any size) gets them too: its rotated views have height and width
    swapped."""
    t = x.swapaxes(-1, -2)
    views = [x, x[..., ::-1], x[..., ::-1, :], x[..., ::-1, ::-1], t, t[..., ::-1], t[..., ::-1, :], t[..., ::-1, ::-1]]
    return [np.ascontiguousarray(v) for v in views]


# --- engines ---------------------------------------------------------------------------------------------

_IMPORTABLE: dict[str, bool] = {}


def installed(engine: str) -> bool:
    """True when the runtime `engine` needs imports (torch: always). An import, not a look for the files:
    a runtime that is there but broken (a missing shared library) counts as absent."""
    if engine == "torch":
        return True
    if engine not in _IMPORTABLE:
        import importlib

        try:
            importlib.import_module(RUNTIMES[engine])
            _IMPORTABLE[engine] = True
        except Exception:
            _IMPORTABLE[engine] = False
    return _IMPORTABLE[engine]


def onnx_session(onnx_model: bytes | str, *, threads: int = 0):
    """An onnxruntime CPU session as microcli runs it: every graph optimisation, `threads` intra-op
    threads (0: one per core), one inter-op thread (the graph is a chain)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise NotInstalledError(f"onnxruntime is not installed: {FAST_EXTRA}") from None
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or (os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(onnx_model, so, providers=["CPUExecutionProvider"])


def openvino_compiled(onnx_model: bytes | str, *, threads: int = 0):
    """An OpenVINO CPU CompiledModel for an ONNX model (a path or bytes)."""
    try:
        import openvino as ov
    except ImportError:
        raise NotInstalledError(f"openvino is not installed: {FAST_EXTRA}") from None
    import io

    core = ov.Core()
    model = core.read_model(onnx_model if isinstance(onnx_model, str) else io.BytesIO(onnx_model))
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": threads or (os.cpu_count() or 1)}
    return core.compile_model(model, "CPU", config)


def first_runtime() -> str | None:
    """The first installed CPU runtime in `AUTO_ORDER` (only the ones tried are imported), or None."""
    return next((e for e in AUTO_ORDER if installed(e)), None)


class OnnxRuntimeEngine:
    """onnxruntime's CPU provider with every graph optimisation (`onnx_session`)."""

    name = "onnxruntime"
    on_cpu = True
    batch = CPU_MICRO_BATCH

    def __init__(self, onnx_model: bytes | str, *, threads: int = 0):
        self.session = onnx_session(onnx_model, threads=threads)
        self.input = self.session.get_inputs()[0].name

    def probs(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: np.ascontiguousarray(x, dtype=np.float32)})[0]


class OpenVinoEngine:
    """OpenVINO's CPU plugin, fp32 (INFERENCE_PRECISION_HINT f32: its bf16 default on CPUs with native
    bf16 would change predicted classes, as torch's bf16 did), latency mode, `threads` threads."""

    name = "openvino"
    on_cpu = True
    batch = CPU_MICRO_BATCH

    def __init__(self, onnx_model: bytes | str, *, threads: int = 0):
        self.compiled = openvino_compiled(onnx_model, threads=threads)
        self.request = self.compiled.create_infer_request()

    def probs(self, x: np.ndarray) -> np.ndarray:
        out = self.request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        return np.array(out[0], copy=True)  # the request's buffer is reused by the next call


def resolve_engine(engine: str, model: ModelFile, *, device: str = "auto", precision: str = "auto",
                   on_message: Callable[[str], None] | None = None) -> str:
    """The engine that will run `model`: 'auto' resolved, a missing runtime replaced by one that works.

    auto: a CPU runtime (`first_runtime`) when the network will run fp32 on the CPU, else torch. A named
    runtime that is not installed: the other runtime, else torch, with a message through `on_message`.

    Raises
    ------
    UsageError : an unknown engine, or one that cannot run this model (torch for an ONNX file, a CPU
        runtime with --device cuda or --precision bf16).
    NotInstalledError : an ONNX file and no ONNX runtime installed (the message names the extra).
    """
    say = on_message or warn_message
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r} (choices: {', '.join(ENGINES)})")
    fp32 = precision in ("auto", "fp32")
    if model.kind == "torchscript":
        if engine not in ("auto", "torch"):
            say(f"--engine {engine} runs ONNX; a TorchScript file runs with torch")
        return "torch"
    if model.kind == "onnx":
        if engine == "torch":
            raise UsageError(f"--engine torch cannot run an ONNX file ({model.path}); use onnxruntime or openvino, "
                             "or predict from the .pt bundle")
        if device not in ("auto", "cpu") or not fp32:
            raise UsageError(f"{model.path}: ONNX files run fp32 on the CPU here; for --device {device} "
                             f"--precision {precision} use the .pt bundle")
    elif engine == "torch" or (engine == "auto" and not (fp32 and _resolves_to_cpu(device))):
        return "torch"
    elif device not in ("auto", "cpu") or not fp32:
        raise UsageError(f"--engine {engine} runs fp32 on the CPU; for --device {device} --precision {precision} "
                         "use --engine torch")
    if engine != "auto" and installed(engine):
        return engine
    instead = first_runtime()
    if instead is None and model.kind == "onnx":
        raise NotInstalledError(f"{model.path}: running ONNX files needs onnxruntime or openvino: {FAST_EXTRA}")
    instead = instead or "torch"
    if engine != "auto":
        say(f"--engine {engine}: {RUNTIMES[engine]} is not installed ({FAST_EXTRA}); using {instead}")
    return instead


def _resolves_to_cpu(device: str) -> bool:
    """Will `device` be the CPU? For 'auto' torch is asked only where a GPU could exist (an NVIDIA or AMD
    driver, an Apple-silicon Mac): on a CPU-only machine that question alone would import torch."""
    if device == "cpu":
        return True
    if device != "auto":
        return False
    import platform

    gpu_possible = (any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidia0", "/dev/kfd"))
                    or (platform.system() == "Darwin" and platform.machine() == "arm64"))
    if not gpu_possible:
        return True
    from .inference import pick_device

    return pick_device("auto").type == "cpu"


def make_engine(model: ModelFile, *, engine: str = "torch", device: str = "auto", precision: str = "auto",
                threads: int = 0, channels_last: bool | None = None,
                on_message: Callable[[str], None] | None = None) -> Engine:
    """An engine running `model` (see `resolve_engine` for how the name is chosen).

    Parameters
    ----------
    model : from `microcli.modelfile.load_model`.
    engine : 'auto', 'torch', 'onnxruntime' or 'openvino'.
    device, precision, channels_last : torch engine only (see `microcli.inference`); the CPU runtimes
        run fp32 (precision 'auto' or 'fp32', else UsageError).
    threads : intra-op threads (0: one per core).
    on_message : receives one line for each fallback (a runtime that is not installed...); default: a
        Python warning.
    """
    name = resolve_engine(engine, model, device=device, precision=precision, on_message=on_message)
    if name == "torch":
        from .inference import TorchEngine

        return TorchEngine(model, device=device, precision=precision, channels_last=channels_last, threads=threads)
    source: bytes | str = model.path if model.kind == "onnx" else cached_onnx(model)
    return (OnnxRuntimeEngine if name == "onnxruntime" else OpenVinoEngine)(source, threads=threads)


# --- bundles converted once ------------------------------------------------------------------------------

def cache_dir() -> Path | None:
    """Where converted bundles are kept: $MICROCLI_CACHE_DIR, else $XDG_CACHE_HOME/microcli, else
    ~/.cache/microcli. MICROCLI_CACHE_DIR=off (or empty) turns the cache off."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "none") else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "microcli"


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_key(path: str | Path) -> str:
    """A bundle's cache name: its content's sha256 and microcli's version (a new exporter, a new file)."""
    return f"{file_digest(path)[:40]}-microcli{__version__}"


def cached_onnx(model: ModelFile) -> bytes | str:
    """The bundle converted to ONNX and checked (`microcli.export.checked_onnx`): the cached file's path
    when there is one, else the bytes (written to the cache when it is writable)."""
    folder = cache_dir()
    path = folder / "onnx" / f"{cache_key(model.path)}.onnx" if folder is not None else None
    if path is not None and path.is_file():
        return str(path)
    from .export import checked_onnx

    data, _ = checked_onnx(model)
    if path is not None:
        try:
            from .io import atomic_open

            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(path, "wb") as fh:
                fh.write(data)
        except OSError:
            pass  # a read-only home: convert again next time
    return data


def cached_model(model: str | Path) -> ModelFile | None:
    """The cached conversion of the bundle `model` as an ONNX ModelFile, or None.

    Lets a bundle whose conversion is cached start without torch: the cached file carries the bundle's
    metadata (its `export["cached_from"]` names the bundle, its path is the cached file's).
    """
    folder = cache_dir()
    if folder is None:
        return None
    from .modelfile import load_model, resolve_model_path, sniff_kind

    path = resolve_model_path(model)
    if sniff_kind(path) != "bundle":
        return None
    hit = folder / "onnx" / f"{cache_key(path)}.onnx"
    if not hit.is_file():
        return None
    try:
        mf = load_model(hit)
    except Exception:
        return None
    mf.export = {**mf.export, "cached_from": str(path)}
    return mf


def load_for_engine(model: str | Path, *, engine: str = "auto", device: str = "auto",
                    precision: str = "auto") -> ModelFile:
    """`load_model`, except that a bundle that a CPU runtime will run and whose conversion is cached comes
    back as the cached ONNX file: same metadata, no torch needed."""
    from .modelfile import load_model

    runtime = first_runtime() if engine == "auto" else engine if engine in RUNTIMES and installed(engine) else None
    if runtime is not None and precision in ("auto", "fp32") and _resolves_to_cpu(device):
        hit = cached_model(model)
        if hit is not None:
            return hit
    return load_model(model)


# --- the predictor ---------------------------------------------------------------------------------------

class Predictor:
    """A loaded model and an engine, ready to turn prepared arrays into softmax probabilities.

    Parameters
    ----------
    model : a `ModelFile` (`microcli.modelfile.load_model`) or a `Bundle`.
    device, precision, channels_last, threads : see `make_engine`.
    tta : average the softmax over flips and 90-degree rotations.
    engine : 'torch' (the default here; the CLI defaults to 'auto'), 'auto', 'onnxruntime', 'openvino'.
    on_message : receives one line for each engine fallback (default: a Python warning).
    """

    def __init__(self, model: Any, *, device: str = "auto", precision: str = "auto", tta: bool = False,
                 channels_last: bool | None = None, engine: str = "torch", threads: int = 0,
                 on_message: Callable[[str], None] | None = None):
        if not isinstance(model, ModelFile):  # a Bundle
            model = ModelFile.from_bundle(model)
        self.model = model
        self.bundle = model.bundle
        self.spec = model.input
        self.tta = tta
        self.engine = make_engine(model, engine=engine, device=device, precision=precision, threads=threads,
                                  channels_last=channels_last, on_message=on_message)

    @property
    def classes(self) -> list[str]:
        return self.model.classes

    @property
    def engine_name(self) -> str:
        return self.engine.name

    def probs(self, x: Any) -> np.ndarray:
        """Softmax (N, K) for network inputs (N, C, H, W) of one shape (numpy, or a torch tensor)."""
        x = x.numpy() if hasattr(x, "numpy") and not isinstance(x, np.ndarray) else np.asarray(x)
        if not self.tta:
            return self.engine.probs(x)
        return np.mean([self.engine.probs(v) for v in tta_arrays(x)], axis=0, dtype=np.float64).astype(np.float32)

    def logits(self, x):
        """Logits as a torch tensor: the torch engine's own; with TTA or another engine, log-softmax."""
        import torch

        if not self.tta and hasattr(self.engine, "logits"):
            return self.engine.logits(x)
        return torch.from_numpy(self.probs(x)).log()

    def predict_arrays(self, arrays: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
        """Softmax (N, K) for prepared arrays (see `network_views`).

        On a CPU the network sees 16 images at a time whatever `batch_size` is: the activations then
        stay in cache, measured 1.7x faster than 64 at a time for LeNet at 200 px (ResNet-18: 1.1x).
        """
        if not len(arrays):
            return np.zeros((0, len(self.classes)), np.float32)
        cpu = self.engine.on_cpu
        views = network_views(arrays, self.spec)
        step = min(batch_size, self.engine.batch) if cpu else batch_size
        probs = [self.probs(x) for x, _, _ in views.batches(step, side=0 if cpu else self.spec.img_size)]
        return average_views(np.concatenate(probs), views.owner, len(arrays))


def warn_message(text: str) -> None:
    """The default `on_message` for library users: a Python warning."""
    warnings.warn(text, stacklevel=3)
