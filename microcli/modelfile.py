"""Any model file microcli reads, behind one loader: a bundle (.pt), or an ONNX or TorchScript export.

`load_model` returns a `ModelFile`: the metadata predict needs (classes, input spec...) whatever the
file's kind, and where the network lives. Running it is the engines' job (`microcli.engines`). This
module does not import torch, and reads an ONNX file's metadata without even the onnx package, so
`microcli predict model.onnx` starts without loading either.

Exported files carry the bundle's metadata as one JSON document (`METADATA_KEY`): an ONNX metadata
property, or a TorchScript extra file. Its schema is `ModelFile.to_metadata`.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CheckpointError
from .inputs import InputSpec

if TYPE_CHECKING:
    from .checkpoint import Bundle

METADATA_KEY = "microcli"  # ONNX metadata_props key; TorchScript extra file "microcli.json"
TORCHSCRIPT_EXTRA = "microcli.json"
EXPORT_FORMAT = "microcli-export"
EXPORT_FORMAT_VERSION = 1
KINDS = ("bundle", "onnx", "torchscript")
FAST_EXTRA = "pip install 'microcli[fast]'"


@dataclass
class ModelFile:
    """A loaded model file's metadata: what predict, evaluate and info need, whatever the file's kind.

    Attributes
    ----------
    path : the file that was read (a run folder resolves to its best.pt).
    kind : 'bundle', 'onnx' or 'torchscript'.
    arch, classes, input : architecture name, class names, the input contract (`InputSpec`).
    parameters : trainable parameter count of the network.
    metrics, data_summary, train_config, versions : as in the bundle it came from.
    export : how an exported file was made (format, opset, exporter, versions, check); {} for bundles.
    resumable : a bundle with training state (last.pt).
    bundle : the `Bundle` itself for kind 'bundle' (weights included), else None.
    """

    path: str
    kind: str
    arch: str
    classes: list[str]
    input: InputSpec
    parameters: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    data_summary: dict[str, Any] = field(default_factory=dict)
    train_config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    resumable: bool = False
    bundle: Bundle | None = None

    @property
    def spec(self) -> InputSpec:
        return self.input

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> ModelFile:
        params = sum(int(t.numel()) for k, t in bundle.state_dict.items()
                     if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
        return cls(bundle.path, "bundle", bundle.arch, list(bundle.classes), bundle.input, params, bundle.metrics,
                   bundle.data_summary, bundle.train_config, bundle.versions, {}, bundle.training_state is not None,
                   bundle)

    def to_metadata(self, export: dict[str, Any]) -> dict[str, Any]:
        """The JSON document an exported file carries (everything but the weights and training state)."""
        return {"format": EXPORT_FORMAT, "format_version": EXPORT_FORMAT_VERSION, "arch": self.arch,
                "classes": list(self.classes), "input": self.input.to_dict(), "parameters": self.parameters,
                "metrics": self.metrics, "data_summary": self.data_summary, "train_config": self.train_config,
                "versions": self.versions, "export": export}

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], path: str, kind: str) -> ModelFile:
        if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
            raise CheckpointError(f"{path}: {kind} file without microcli metadata (was it made by 'microcli export'?)")
        if meta.get("format_version", 0) > EXPORT_FORMAT_VERSION:
            raise CheckpointError(f"{path}: export format {meta['format_version']} is newer than this microcli "
                                  f"understands ({EXPORT_FORMAT_VERSION}); upgrade microcli")
        try:
            return cls(path, kind, str(meta["arch"]), [str(c) for c in meta["classes"]],
                       InputSpec.from_dict(meta["input"]), int(meta.get("parameters", 0)), meta.get("metrics", {}),
                       meta.get("data_summary", {}), meta.get("train_config", {}), meta.get("versions", {}),
                       meta.get("export", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: damaged microcli metadata ({type(exc).__name__}: {exc})") from None


def resolve_model_path(model: str | Path) -> Path:
    """A model file (bundle, .onnx, TorchScript), or a run folder (its best.pt)."""
    p = Path(model)
    if p.is_dir():
        if not (p / "best.pt").is_file() and (p / "folds.csv").is_file():
            where = "final/ (the --refit model) and fold-N/" if (p / "final" / "best.pt").is_file() else "fold-N/"
            raise CheckpointError(f"{model}: is a cross-validation folder; its models are in {where}")
        if not (p / "best.pt").is_file():
            raise CheckpointError(f"{model}: a folder without best.pt (give a run folder, a .pt bundle, or an "
                                  "exported .onnx or TorchScript file)")
        p = p / "best.pt"
    if not p.is_file():
        raise CheckpointError(f"{model}: no such model file (give a .pt bundle, an exported .onnx or TorchScript "
                              "file, or a run folder with best.pt)")
    return p


def sniff_kind(path: str | Path) -> str:
    """'bundle', 'torchscript', 'onnx' or 'bioimageio', from the file's content (not its name).

    torch.save and torch.jit.save both write zip archives; only TorchScript's has a code/ folder, and a
    bioimage.io package (also a zip) has an rdf.yaml at its top.
    Anything that is not a zip is taken for ONNX (a protobuf has no magic number) when it ends in .onnx
    or starts like a ModelProto (field 1, ir_version, as a varint: byte 0x08); everything else goes to
    the bundle loader, which says what is wrong with it.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError):
            return "bundle"
        if "rdf.yaml" in names:
            return "bioimageio"
        return "torchscript" if any("/code/" in n or n.endswith("constants.pkl") for n in names) else "bundle"
    with open(path, "rb") as fh:
        head = fh.read(1)
    return "onnx" if path.suffix.lower() == ".onnx" or head == b"\x08" else "bundle"


def load_model(model: str | Path) -> ModelFile:
    """Read a model file's metadata (and, for a bundle, its weights).

    Parameters
    ----------
    model : a bundle (.pt), a run folder (its best.pt), an ONNX file or a TorchScript file made by
        `microcli export`.

    Returns
    -------
    ModelFile

    Raises
    ------
    CheckpointError : no such file, or a file that is not one of those (or lacks microcli's metadata).
    """
    path = resolve_model_path(model)
    kind = sniff_kind(path)
    if kind == "onnx":
        return ModelFile.from_metadata(read_onnx_metadata(path), str(path), "onnx")
    if kind == "torchscript":
        return ModelFile.from_metadata(read_torchscript_metadata(path), str(path), "torchscript")
    from .checkpoint import load_bundle

    return ModelFile.from_bundle(load_bundle(path))


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """microcli's JSON document from an ONNX file's metadata properties ({} when it has none)."""
    try:
        props = onnx_metadata_props(path)
    except (ValueError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable ONNX file ({exc})") from None
    return _parse_json(props.get(METADATA_KEY), path)


def onnx_metadata_props(path: str | Path) -> dict[str, str]:
    """An ONNX file's metadata_props, read from the protobuf wire format without the onnx package.

    Only the top-level fields of the ModelProto are walked and the graph (the weights) is skipped with a
    seek, so this costs microseconds even for a 100 MB model, and `microcli info/predict model.onnx`
    need only a runtime, not onnx. Raises ValueError for a file that is not a ModelProto.
    """
    props: dict[str, str] = {}
    size = os.path.getsize(path)
    seen_graph = False
    with open(path, "rb") as fh:
        while True:
            tag = _varint(fh)
            if tag is None:
                break
            number, wire = tag >> 3, tag & 7
            if wire == 0:
                _varint(fh, required=True)
            elif wire in (1, 5):
                fh.seek(8 if wire == 1 else 4, os.SEEK_CUR)
            elif wire == 2:
                n = _varint(fh, required=True)
                if fh.tell() + n > size:
                    raise ValueError("truncated protobuf")
                if number == 14:  # ModelProto.metadata_props: StringStringEntryProto {1: key, 2: value}
                    entry = _fields(fh.read(n))
                    props[entry.get(1, b"").decode("utf-8", "replace")] = entry.get(2, b"").decode("utf-8", "replace")
                else:
                    seen_graph |= number == 7
                    fh.seek(n, os.SEEK_CUR)
            else:
                raise ValueError(f"unexpected protobuf wire type {wire}")
    if not seen_graph:
        raise ValueError("no graph in it")
    return props


def _varint(fh, required: bool = False) -> int | None:
    result = shift = 0
    while True:
        b = fh.read(1)
        if not b:
            if shift or required:
                raise ValueError("truncated protobuf")
            return None
        result |= (b[0] & 0x7F) << shift
        if b[0] < 0x80:
            return result
        shift += 7
        if shift > 63:
            raise ValueError("bad protobuf varint")


def _fields(data: bytes) -> dict[int, bytes]:
    """The length-delimited fields of a small message (the last of each number wins)."""
    import io

    out: dict[int, bytes] = {}
    fh = io.BytesIO(data)
    while (tag := _varint(fh)) is not None:
        number, wire = tag >> 3, tag & 7
        if wire != 2:
            raise ValueError("unexpected field in a metadata entry")
        n = _varint(fh, required=True)
        out[number] = fh.read(n)
    return out


def read_torchscript_metadata(path: str | Path) -> dict[str, Any]:
    """microcli's JSON document from a TorchScript archive's extra file ({} when it has none).

    Read from the zip directly: the metadata is plain JSON, so no TorchScript code is loaded for it."""
    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if n.endswith(f"/extra/{TORCHSCRIPT_EXTRA}")]
        text = zf.read(names[0]).decode("utf-8") if names else None
    return _parse_json(text, path)


def _parse_json(text: str | None, path) -> dict[str, Any]:
    if not text:
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: damaged microcli metadata (not JSON: {exc})") from None
