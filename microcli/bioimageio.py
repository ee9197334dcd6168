"""A bioimage.io model package: the zip that deepImageJ (Fiji), ilastik, bioimageio.core and the model zoo
read (model description format 0.5).

Contents: rdf.yaml, the network as ONNX and as TorchScript (the same `microcli.export.ExportNet`, both
checked against PyTorch), a test input and its expected output (.npy), a cover image, README.md and
classes.txt.

What the format says well: the output is a (batch, channel) tensor whose channel axis is named by the
class names: a classifier's softmax. What it cannot say: how a file becomes the input. The rdf's
preprocessing ops act on the tensor a consumer hands over; none scales by the file's bit depth (microcli
divides 8-bit by 255 and 16-bit by 65535, whatever the pixel values), and none expresses microcli's
classical pipeline (CLAHE, contrast stretch...) or its resize-and-centre-crop (or squash). So the input is
declared as the *prepared* image, float32 in [0, 1] of the trained size, and README.md and
``config.microcli`` say how to prepare it.
"""

from __future__ import annotations

import getpass
import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .io import atomic_open
from .modelfile import ModelFile

FORMAT_VERSION = "0.5.4"
NAMES = {"rdf": "rdf.yaml", "onnx": "weights.onnx", "torchscript": "weights_torchscript.pt",
         "input": "test_input.npy", "output": "test_output.npy", "sample_input": "sample_input.tif",
         "sample_output": "sample_output.tif", "cover": "cover.png", "readme": "README.md", "classes": "classes.txt"}
CITE = [{"text": "microcli: classify micrographs from the command line (this package was written by "
                 f"microcli {__version__})", "url": "https://bioimage.io"}]


def write_package(model: ModelFile, output: Path, *, opset: int, authors: list[str] | None = None,
                  license: str | None = None) -> tuple[dict[str, dict], list[str]]:
    """Write the bioimage.io zip for a bundle to `output` (atomically) and return (checks, notes).

    Parameters
    ----------
    model : a bundle's `ModelFile`.
    output : the zip to write.
    opset : ONNX opset of the ONNX weights.
    authors : names for the rdf's authors (default: the user's login name, with a note).
    license : SPDX licence id of the package (default CC-BY-4.0, with a note).

    Raises
    ------
    ExportError : an exported network disagrees with the bundle.
    NotInstalledError : onnx is missing.
    """
    from .export import _reference, check_arrays, checked_onnx, checked_torchscript, export_net

    notes = []
    if not authors:
        authors = [getpass.getuser()]
        notes.append(f"authors set to {authors[0]!r} (the user name); give --author NAME for the model zoo")
    license = license or "CC-BY-4.0"
    x, source = check_arrays(model)
    onnx_data, onnx_check = checked_onnx(model, opset=opset, x=x, source=source)
    ts_data, ts_check = checked_torchscript(model, x=x, source=source)
    test_in = x[:1]
    test_out = _reference(export_net(model), test_in)
    files = {
        NAMES["onnx"]: onnx_data,
        NAMES["torchscript"]: ts_data,
        NAMES["input"]: _npy(test_in),
        NAMES["output"]: _npy(test_out),
        NAMES["sample_input"]: _tif(test_in[0]),
        NAMES["sample_output"]: _tif(test_out),
        NAMES["cover"]: cover_png(test_in[0], test_out[0], model.classes),
        NAMES["readme"]: readme(model, onnx_check).encode("utf-8"),
        NAMES["classes"]: ("\n".join(model.classes) + "\n").encode("utf-8"),
    }
    rdf = describe_rdf(model, files, opset=opset, authors=authors, license=license)
    files = {NAMES["rdf"]: to_yaml(rdf).encode("utf-8"), **files}
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(output, "wb", durable=True) as fh:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in files.items():  # our own fixed names: nothing can point outside the zip
                zf.writestr(name, data)
    return {"onnx": onnx_check, "torchscript": ts_check}, notes


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def _tif(a: np.ndarray) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.ascontiguousarray(a.squeeze(), dtype=np.float32))
    return buf.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def describe_rdf(model: ModelFile, files: dict[str, bytes], *, opset: int, authors: list[str],
                 license: str) -> dict[str, Any]:
    """The rdf.yaml content (bioimage.io model description, format 0.5)."""
    import torch

    spec = model.input
    channels = ["gray"] if spec.channels == 1 else ["red", "green", "blue"]
    size = spec.img_size
    meta = model.to_metadata({"format": "bioimageio", "opset": opset})
    meta.pop("export")
    return {
        "format_version": FORMAT_VERSION,
        "type": "model",
        "name": f"microcli {model.arch} {len(model.classes)}-class classifier",
        "description": f"{model.arch} image classifier trained with microcli: {', '.join(model.classes)}"[:1024],
        "authors": [{"name": a} for a in authors],
        "cite": CITE,
        "license": license,
        "tags": ["classification", "microscopy", "2d", "microcli", model.arch],
        "documentation": NAMES["readme"],
        "covers": [NAMES["cover"]],
        "attachments": [{"source": NAMES["classes"], "sha256": _sha256(files[NAMES["classes"]])}],
        "inputs": [{
            "id": "image",
            "description": "the prepared image: see README.md",
            "axes": [{"type": "batch"},
                     {"type": "channel", "channel_names": channels},
                     {"type": "space", "id": "y", "size": size},
                     {"type": "space", "id": "x", "size": size}],
            "test_tensor": {"source": NAMES["input"], "sha256": _sha256(files[NAMES["input"]])},
            "sample_tensor": {"source": NAMES["sample_input"], "sha256": _sha256(files[NAMES["sample_input"]])},
            "data": {"type": "float32", "range": [0.0, 1.0]},
        }],
        "outputs": [{
            "id": "probabilities",
            "description": "softmax over the classes, in the channel_names order",
            "axes": [{"type": "batch"}, {"type": "channel", "channel_names": list(model.classes)}],
            "test_tensor": {"source": NAMES["output"], "sha256": _sha256(files[NAMES["output"]])},
            "sample_tensor": {"source": NAMES["sample_output"], "sha256": _sha256(files[NAMES["sample_output"]])},
            "data": {"type": "float32", "range": [0.0, 1.0]},
        }],
        # One entry must be the "original", the others name their parent. torch's ONNX exporter (the
        # TorchScript-based one) converts the module through a TorchScript graph, so TorchScript it is.
        "weights": {
            "torchscript": {"source": NAMES["torchscript"], "sha256": _sha256(files[NAMES["torchscript"]]),
                            "pytorch_version": str(torch.__version__).split("+")[0]},
            "onnx": {"source": NAMES["onnx"], "sha256": _sha256(files[NAMES["onnx"]]), "opset_version": opset,
                     "parent": "torchscript"},
        },
        "config": {"microcli": meta},
    }


def readme(model: ModelFile, check: dict) -> str:
    from .export import describe

    spec = model.input
    pipe = str(spec.get_pipeline()) or "none"
    metrics = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in model.metrics.items())
    return f"""# microcli {model.arch} classifier

{describe(model)}

Classes (output channel order): {', '.join(model.classes)}.

## Preparing the input

1. Read the image as {'grayscale' if spec.channels == 1 else 'RGB'} and scale it to [0, 1] by its bit depth:
   8-bit / 255, 16-bit / 65535 (float images as they are).
2. Classical pipeline (microcli ops, scikit-image): `{pipe}`.
3. {'Resize the shorter side to ' + str(spec.img_size) + ' px (bilinear, antialiased) and crop the centre '
    + str(spec.img_size) + ' x ' + str(spec.img_size) + ' px.' if spec.fit == 'resize' else
    'Resize the whole image to ' + str(spec.img_size) + ' x ' + str(spec.img_size) + ' px (bilinear, '
    'antialiased; the aspect ratio is not kept).' if spec.fit == 'squash' else
    'Cut tiles of ' + str(spec.img_size) + ' x ' + str(spec.img_size) + ' px at native scale and average '
    'their probabilities' + ('.' if spec.largest_input == spec.img_size else ' (this package declares the '
    'training size; the network takes any size, and microcli gives it an image of up to ' + str(spec.whole)
    + ' x ' + str(spec.whole) + ' px whole, in one pass).')}
4. Shape (1, {spec.channels}, {spec.img_size}, {spec.img_size}), float32. Normalisation (mean
   {', '.join(f'{m:.6g}' for m in spec.mean)}, std {', '.join(f'{s:.6g}' for s in spec.std)}) is inside the network.

`microcli predict` does all of this; `config.microcli` in rdf.yaml holds the same facts as data.

## Validation

Training run's validation metrics: {metrics or 'not recorded'}.
The ONNX and TorchScript weights were checked against the PyTorch model at export: largest softmax
difference {check.get('max_abs_diff', float('nan')):.2g} (tolerance {check.get('tolerance')}) on {check.get('images')}.
Validate on your own labelled images with `microcli evaluate MODEL DATA`.
"""


def cover_png(image: np.ndarray, probs: np.ndarray, classes: list[str]) -> bytes:
    """A 2:1 cover: the test input on the left, its class probabilities as bars on the right."""
    from PIL import Image, ImageDraw

    h = 256
    img = np.clip(image.transpose(1, 2, 0) if image.shape[0] == 3 else image[0], 0, 1)
    tile = Image.fromarray((img * 255).astype(np.uint8)).convert("RGB").resize((h, h), Image.BILINEAR)
    cover = Image.new("RGB", (2 * h, h), "white")
    cover.paste(tile, (0, 0))
    draw = ImageDraw.Draw(cover)
    n = len(classes)
    row = max(8, (h - 16) // max(n, 1))
    for i, (c, p) in enumerate(zip(classes, probs)):
        y = 8 + i * row
        if y + row > h:
            break
        draw.rectangle([h + 8, y + 2, h + 8 + int((h - 16) * float(p)), y + row - 2],
                       fill=(70, 130, 180) if i != int(np.argmax(probs)) else (220, 90, 40))
        draw.text((h + 12, y + 2), f"{c[:28]} {float(p):.2f}", fill="black")
    buf = io.BytesIO()
    cover.save(buf, format="PNG")
    return buf.getvalue()


# --- a small YAML writer: rdf.yaml needs mappings, lists and scalars only ------------------------------

def to_yaml(obj: Any) -> str:
    """Block-style YAML; strings are written as JSON strings (valid YAML double-quoted scalars)."""
    return "\n".join(_yaml_lines(obj, 0)) + "\n"


def _scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return json.dumps(v)
    return json.dumps(str(v), ensure_ascii=False)


def _key(k: Any) -> str:
    k = str(k)
    return k if k.replace("_", "").isalnum() and k.isascii() and not k[0].isdigit() else json.dumps(k)


def _yaml_lines(obj: Any, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(obj, dict):
        if not obj:
            return [pad + "{}"]
        lines = []
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{_key(k)}:")
                lines.extend(_yaml_lines(v, indent + 2))
            else:
                lines.append(f"{pad}{_key(k)}: {_inline(v)}")
        return lines
    if isinstance(obj, list):
        if not obj:
            return [pad + "[]"]
        lines = []
        for v in obj:
            if isinstance(v, (dict, list)) and v:
                sub = _yaml_lines(v, indent + 2)
                lines.append(f"{pad}- {sub[0].lstrip()}")
                lines.extend(sub[1:])
            else:
                lines.append(f"{pad}- {_inline(v)}")
        return lines
    return [pad + _scalar(obj)]


def _inline(v: Any) -> str:
    if isinstance(v, dict):
        return "{}"
    if isinstance(v, list):
        return "[]"
    return _scalar(v)
