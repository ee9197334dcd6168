"""Taking a model out of microcli: ONNX and TorchScript files that carry the bundle's metadata.

An exported network maps the *prepared* image to class probabilities:

    image (N, C, S, S) float32  ->  normalise (mean, std)  ->  network  ->  softmax  ->  (N, K)

"Prepared" is what `microcli.inputs.prepare_array` makes of a file: pixels scaled to [0, 1] by the
file's bit depth, the classical pipeline applied, fitted to S x S. Normalisation and softmax are inside
the graph, so a program outside microcli only has to reproduce the preparation. The batch size is
dynamic; the spatial size is S, as in training, except for fit=crop ResNets, which evaluate images of
up to `InputSpec.whole` pixels whole: their height and width are dynamic, and the check runs at both
sizes.

Every export is checked before anything is written: the exported model, run the way microcli runs it
(ONNX: by every installed runtime), must give the PyTorch model's softmax within `TOLERANCE` on a few
of the training run's own images, at two batch sizes; else `ExportError` and no file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from itertools import chain, zip_longest
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import __version__
from .errors import CheckpointError, ExportError, NotInstalledError, OutputExistsError, UsageError
from .inputs import InputSpec, prepare_array
from .io import atomic_open
from .engines import OnnxRuntimeEngine, OpenVinoEngine, installed
from .modelfile import FAST_EXTRA, METADATA_KEY, TORCHSCRIPT_EXTRA, ModelFile, load_model, resolve_model_path

FORMATS = ("onnx", "torchscript", "bioimageio")
SUFFIXES = {".onnx": "onnx", ".zip": "bioimageio", ".ts": "torchscript", ".torchscript": "torchscript"}
# Opset 17 (ONNX 1.12, 2022): read by onnxruntime >= 1.12, OpenVINO >= 2022.3, deepImageJ's ONNX engine
# and DJL; nothing in these networks needs a newer one.
DEFAULT_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "image", "probabilities"
# Largest |p_exported - p_torch| allowed on the check images. fp32 engines measured 1e-7 to 2e-6 here
# (LeNet to ResNet-50: different kernels, fused batch norm, another summation order), so 1e-4 leaves room
# for other CPUs while still catching a wrong graph, which is off by 1e-2 or more.
TOLERANCE = 1e-4
CHECK_IMAGES = 8


class ExportNet(nn.Module):
    """The network as exported: prepared image in, softmax out (normalisation inside)."""

    def __init__(self, net: nn.Module, spec: InputSpec):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net((image - self.mean) / self.std), dim=1)


class FixedAdaptiveAvgPool(nn.Module):
    """`AdaptiveAvgPool2d` for one known input size, as two matrix products: the same averages.

    ONNX has no adaptive pooling, and torch's exporter refuses output sizes that do not divide the input
    (LeNet at 200 px pools 47 x 47 to 5 x 5). For a fixed input each output cell averages a fixed window
    (torch's rule: rows floor(i*h/o) to ceil((i+1)*h/o)), which is P_h @ x @ P_w^T.
    """

    def __init__(self, in_hw: tuple[int, int], out_hw: tuple[int, int]):
        super().__init__()
        self.register_buffer("rows", _pool_matrix(in_hw[0], out_hw[0]))
        self.register_buffer("cols", _pool_matrix(in_hw[1], out_hw[1]).T.contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(torch.matmul(self.rows, x), self.cols)


def _pool_matrix(n_in: int, n_out: int) -> torch.Tensor:
    m = torch.zeros(n_out, n_in)
    for i in range(n_out):
        lo, hi = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def _onnx_ready(net: nn.Module, spec: InputSpec) -> nn.Module:
    """`net` with every adaptive average pooling whose output does not divide its input replaced by
    `FixedAdaptiveAvgPool` (exact for the S x S input the export is made for)."""
    shapes: dict[str, tuple[int, int]] = {}
    hooks = [m.register_forward_hook(lambda mod, args, out, name=name: shapes.__setitem__(name, args[0].shape[-2:]))
             for name, m in net.named_modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    with torch.no_grad():
        net(torch.zeros(1, spec.channels, spec.img_size, spec.img_size))
    for h in hooks:
        h.remove()
    for name, (h, w) in shapes.items():
        pool = net.get_submodule(name)
        oh, ow = (pool.output_size, pool.output_size) if isinstance(pool.output_size, int) else pool.output_size
        oh, ow = oh or h, ow or w
        if h % oh or w % ow:
            parent, _, attr = name.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, attr, FixedAdaptiveAvgPool((h, w), (oh, ow)))
    return net


def export_net(model: ModelFile) -> ExportNet:
    """The bundle's network wrapped for export (fp32, CPU, eval mode)."""
    if model.bundle is None:
        raise CheckpointError(f"{model.path}: already an exported {model.kind} file; export from the .pt bundle")
    return ExportNet(model.bundle.build_model().float(), model.input).eval()


# --- the check -------------------------------------------------------------------------------------------

def check_arrays(model: ModelFile, n: int = CHECK_IMAGES) -> tuple[np.ndarray, str]:
    """Up to `n` network inputs (n, C, S, S) for checking an export, and where they came from (fit=crop:
    S x S tiles of them; `larger_inputs` makes the whole images of models that take them).

    The training run's own images (split.csv beside the bundle, one class after another) prepared as
    predict prepares them; when those files are gone (a bundle copied to another machine), seeded
    uniform noise in [0, 1], and the source says so.
    """
    from .data import read_split_csv
    from .engines import network_views

    spec = model.input
    split_csv = Path(model.path).parent / "split.csv"
    arrays: list[np.ndarray] = []
    if split_csv.is_file():
        try:
            items = [it for part in read_split_csv(split_csv).values() for it in part]
        except Exception:
            items = []
        by_class: dict[str, list] = {}
        for it in items:
            by_class.setdefault(it.label, []).append(it)
        for it in chain.from_iterable(zip_longest(*by_class.values())):  # one class after another
            if it is None:
                continue
            try:
                arrays.append(prepare_array(it.path, spec))
            except Exception:  # moved or unreadable: the next one
                continue
            if len(arrays) >= n:
                break
    if arrays:
        views = network_views(arrays, dataclasses.replace(spec, whole=0)).groups[0][0][:n]
        return views, f"{len(views)} images of the training run ({split_csv.name})"
    rng = np.random.default_rng(0)
    x = rng.random((n, spec.channels, spec.img_size, spec.img_size), dtype=np.float32)
    return x, f"{n} random images (the training run's images were not found)"


def larger_inputs(model: ModelFile, x: np.ndarray) -> np.ndarray | None:
    """The check inputs (N, C, S, S) mirrored out to the model's largest input (`InputSpec.largest_input`),
    or None for a model that only takes S x S."""
    spec = model.input
    pad = spec.largest_input - spec.img_size
    if pad <= 0:
        return None
    return np.pad(x[:2], ((0, 0), (0, 0), (0, pad), (0, pad)), mode="symmetric")


def _spatial(spec: InputSpec) -> list:
    """The input's height and width as stored in metadata: S, or 'height'/'width' when dynamic."""
    return ["height", "width"] if spec.largest_input > spec.img_size else [spec.img_size, spec.img_size]


def compare(reference: np.ndarray, got: np.ndarray, what: str, tolerance: float = TOLERANCE) -> float:
    """Largest absolute softmax difference; ExportError when above `tolerance` (or not finite)."""
    diff = float(np.abs(reference - got).max()) if reference.size else 0.0
    if not np.isfinite(diff) or diff > tolerance:
        raise ExportError(f"{what}: softmax differs from the PyTorch model by {diff:.3g} (tolerance {tolerance:g}); "
                          "nothing written")
    return diff


def _reference(net: ExportNet, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return net(torch.from_numpy(x)).numpy()


# --- ONNX ------------------------------------------------------------------------------------------------

def _versions(**extra: str) -> dict[str, str]:
    return {"microcli": __version__, "torch": str(torch.__version__), **extra}


def onnx_proto(model: ModelFile, *, opset: int = DEFAULT_OPSET):
    """The bundle's `ExportNet` as an ONNX ModelProto, without metadata and not yet checked.

    Exporter: torch.onnx's TorchScript-based exporter (``dynamo=False``). The torch.export-based one,
    torch's default since 2.9, also works here but needs the onnxscript package, took 2 to 6x longer
    (ResNet-18: 7.4 s against 1.5 to 3.5 s) and prints progress on stdout; this one needs only torch.
    """
    try:
        import onnx
    except ImportError:
        raise NotInstalledError(f"ONNX export needs the onnx package: {FAST_EXTRA}") from None
    net = export_net(model)
    net.net = _onnx_ready(net.net, model.input)
    spec = model.input
    example = torch.zeros(2, spec.channels, spec.img_size, spec.img_size)
    axes = {0: "batch", **({2: "height", 3: "width"} if spec.largest_input > spec.img_size else {})}
    buf = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        # the TorchScript-based exporter warns that it is deprecated: true, and not the user's business
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(net, (example,), buf, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: {0: "batch"}},
                              opset_version=opset, do_constant_folding=True, dynamo=False)
        except Exception as exc:
            raise ExportError(f"{model.path}: torch.onnx.export failed ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200]})") from None
    proto = onnx.load_model_from_string(buf.getvalue())
    proto.producer_name, proto.producer_version = "microcli", __version__
    proto.doc_string = describe(model)
    return proto


def _onnx_with_metadata(proto, model: ModelFile, opset: int, check: dict) -> bytes:
    import onnx

    spec = model.input
    info = {"format": "onnx", "opset": opset, "exporter": "torch.onnx (TorchScript-based, dynamo=False)",
            "input": {"name": INPUT_NAME, "shape": ["batch", spec.channels, *_spatial(spec)], "dtype": "float32"},
            "output": {"name": OUTPUT_NAME, "shape": ["batch", len(model.classes)], "meaning": "softmax"},
            "versions": _versions(onnx=onnx.__version__), "check": check}
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(model.to_metadata(info))
    return proto.SerializeToString()


def describe(model: ModelFile) -> str:
    """One paragraph on what the exported network expects and returns (ONNX doc_string, model cards)."""
    spec = model.input
    pipe = str(spec.get_pipeline()) or "none"
    return (f"microcli {model.arch} classifier, {len(model.classes)} classes: {', '.join(model.classes)}. "
            f"Input '{INPUT_NAME}': float32 (batch, {spec.channels}, {', '.join(map(str, _spatial(spec)))}), pixels "
            f"scaled to [0, 1] by the file's bit depth (8-bit / 255, 16-bit / 65535), read as "
            f"{'grayscale' if spec.channels == 1 else 'RGB'}, classical pipeline '{pipe}' applied, then "
            + ("shorter side resized (bilinear, antialiased) to the input size and centre-cropped"
               if spec.fit == "resize" else
               "the whole image resized (bilinear, antialiased) to the input size, aspect ratio not kept"
               if spec.fit == "squash" else "tiles of the input size at native pixel scale"
               if spec.largest_input == spec.img_size else
               f"at native pixel scale, the whole image when neither side exceeds {spec.whole} px (any size from "
               f"{spec.img_size} px on), else tiles of the input size, their softmax averaged")
            + f". Normalisation is inside the graph. Output '{OUTPUT_NAME}': softmax (batch, {len(model.classes)}), "
            "columns in the class order above.")


def checked_onnx(model: ModelFile, *, opset: int = DEFAULT_OPSET, n_check: int = CHECK_IMAGES,
                 x: np.ndarray | None = None, source: str = "") -> tuple[bytes, dict]:
    """ONNX bytes that passed the check, and the check's figures (also stored in the file's metadata).
    `x` replaces the check images (`check_arrays`)."""
    if x is None:
        x, source = check_arrays(model, n_check)
    runtimes = [e for e in ("onnxruntime", "openvino") if installed(e)]
    if not runtimes:
        raise NotInstalledError(f"checking an ONNX export needs onnxruntime or openvino: {FAST_EXTRA}")
    net = export_net(model)
    ref = _reference(net, x)
    big = larger_inputs(model, x)
    ref_big = None if big is None else _reference(net, big)
    proto = onnx_proto(model, opset=opset)
    check: dict[str, Any] = {"images": source, "tolerance": TOLERANCE, "runtimes": runtimes}
    data = _onnx_with_metadata(proto, model, opset, check)
    diffs = []
    for name in runtimes:  # every runtime that may run it here: each has its own graph rewrites and kernels
        engine = OnnxRuntimeEngine(data) if name == "onnxruntime" else OpenVinoEngine(data)
        diffs.append(compare(ref, engine.probs(x), f"ONNX export ({name})"))
        # a second batch size: the batch axis must be dynamic
        diffs.append(compare(ref[:1], engine.probs(x[:1]), f"ONNX export ({name}, batch of 1)"))
        if big is not None:
            diffs.append(compare(ref_big, engine.probs(big), f"ONNX export ({name}, {big.shape[-1]} px input)"))
    check["max_abs_diff"] = max(diffs)
    return _onnx_with_metadata(proto, model, opset, check), check


# --- TorchScript -----------------------------------------------------------------------------------------

@contextlib.contextmanager
def quiet_jit():
    """torch 2.10+ warns that torch.jit is deprecated in favour of torch.export. TorchScript is still what
    deepImageJ and C++/Java (libtorch, DJL) load, and it works; the warning is not the user's to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        yield


def checked_torchscript(model: ModelFile, *, n_check: int = CHECK_IMAGES, x: np.ndarray | None = None,
                        source: str = "") -> tuple[bytes, dict]:
    """TorchScript archive bytes (torch.jit.script of `ExportNet`, metadata as an extra file) that
    passed the check, and the check's figures. `x` replaces the check images (`check_arrays`)."""
    if x is None:
        x, source = check_arrays(model, n_check)
    net = export_net(model)
    ref = _reference(net, x)
    try:
        with quiet_jit():
            scripted = torch.jit.script(net)
    except Exception as exc:
        raise ExportError(f"{model.path}: torch.jit.script failed ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200]})") from None
    check: dict[str, Any] = {"images": source, "tolerance": TOLERANCE}

    def archive() -> bytes:
        info = {"format": "torchscript", "exporter": "torch.jit.script",
                "input": {"name": INPUT_NAME, "shape": ["batch", model.input.channels, *_spatial(model.input)],
                          "dtype": "float32"},
                "output": {"name": OUTPUT_NAME, "shape": ["batch", len(model.classes)], "meaning": "softmax"},
                "versions": _versions(), "check": check}
        buf = io.BytesIO()
        with quiet_jit():
            torch.jit.save(scripted, buf, _extra_files={TORCHSCRIPT_EXTRA: json.dumps(model.to_metadata(info))})
        return buf.getvalue()

    with quiet_jit():
        loaded = torch.jit.load(io.BytesIO(archive()), map_location="cpu")
    with torch.inference_mode():
        got, one = loaded(torch.from_numpy(x)).numpy(), loaded(torch.from_numpy(x[:1])).numpy()
    diffs = [compare(ref, got, "TorchScript export"), compare(ref[:1], one, "TorchScript export (batch of 1)")]
    big = larger_inputs(model, x)
    if big is not None:
        with torch.inference_mode():
            diffs.append(compare(_reference(net, big), loaded(torch.from_numpy(big)).numpy(),
                                 f"TorchScript export ({big.shape[-1]} px input)"))
    check["max_abs_diff"] = max(diffs)
    return archive(), check


# --- the command -----------------------------------------------------------------------------------------

@dataclass
class ExportResult:
    """What `export_model` wrote.

    Attributes
    ----------
    path : the file written.
    format : 'onnx', 'torchscript' or 'bioimageio'.
    size : bytes written.
    checks : per exported network, the check's figures (images, tolerance, max_abs_diff).
    seconds : wall time of the export.
    notes : things the user should know (defaults filled in, for example).
    """

    path: Path
    format: str
    size: int
    checks: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def format_for(output: str | Path, fmt: str | None) -> str:
    """The export format: `fmt` if given, else from the output's suffix (.onnx, .zip, .ts)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise UsageError(f"unknown export format {fmt!r} (choices: {', '.join(FORMATS)})")
        return fmt
    suffix = Path(output).suffix.lower()
    if suffix not in SUFFIXES:
        raise UsageError(f"--format is needed: cannot tell the format from {Path(output).name!r} "
                         f"(known suffixes: {', '.join(f'{s} ({f})' for s, f in SUFFIXES.items())})")
    return SUFFIXES[suffix]


def check_output(output: str | Path, *, source: Path, force: bool) -> Path:
    """The output path after the file rules: never the model read, never a folder, an existing file only
    with `force`. Nothing is created here: the folder only when the checked file is written."""
    out = Path(output)
    if out.is_dir():
        raise UsageError(f"-o {output}: is a folder; give a file name")
    from .outputs import check_output_path

    check_output_path(output, "-o")
    if out.exists() and os.path.samefile(out, source):
        raise OutputExistsError(f"-o {output}: is the model being exported; choose another name")
    if out.exists() and not force:
        raise OutputExistsError(f"{output}: exists; use --force to overwrite")
    return out


def export_model(model: str | Path, output: str | Path, *, fmt: str | None = None, force: bool = False,
                 opset: int = DEFAULT_OPSET, authors: list[str] | None = None,
                 license: str | None = None) -> ExportResult:
    """Export a model bundle: `microcli export` as a function.

    Parameters
    ----------
    model : a bundle (.pt) or a run folder (its best.pt).
    output : the file to write (atomically; nothing is written when any check fails).
    fmt : 'onnx', 'torchscript' or 'bioimageio'; None: from the output's suffix.
    force : overwrite an existing output (never the model itself).
    opset : ONNX opset (onnx and bioimageio).
    authors, license : bioimageio only; see `microcli.bioimageio.write_package`.

    Returns
    -------
    ExportResult

    Raises
    ------
    CheckpointError : `model` is not a bundle (an exported file cannot be exported again).
    UsageError : unknown format, or an output that is a folder.
    OutputExistsError : the output exists (without `force`) or is the model itself.
    NotInstalledError : the format needs a package that is not installed (the message names the extra).
    ExportError : the exporter failed, or the exported model disagrees with the bundle.
    """
    t0 = time.perf_counter()
    fmt = format_for(output, fmt)
    source = resolve_model_path(model)
    out = check_output(output, source=source, force=force)
    mf = load_model(source)
    if mf.bundle is None:
        raise CheckpointError(f"{source}: already an exported {mf.kind} file; export from the .pt bundle")
    if fmt == "bioimageio":
        from .bioimageio import write_package

        checks, notes = write_package(mf, out, opset=opset, authors=authors, license=license)
        return ExportResult(out, fmt, out.stat().st_size, checks, time.perf_counter() - t0, notes)
    data, check = checked_onnx(mf, opset=opset) if fmt == "onnx" else checked_torchscript(mf)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out, "wb", durable=True) as fh:
        fh.write(data)
    return ExportResult(out, fmt, len(data), {fmt: check}, time.perf_counter() - t0)
