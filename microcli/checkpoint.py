"""The model bundle: one file with everything predict needs, loadable with weights_only=True alone.

Only plain containers, numbers, strings and tensors go in, so `torch.load(..., weights_only=True)` reads
it and no pickle code ever runs. Writes go to a temporary file that is renamed into place.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .inputs import InputSpec
from .errors import CheckpointError
from .io import atomic_open
from .models import REGISTRY, create_model

FORMAT = "microcli-model"
FORMAT_VERSION = 1
REQUIRED = ("format", "format_version", "arch", "classes", "input", "state_dict")


@dataclass
class Bundle:
    """A model bundle: the network's weights with everything predict needs (architecture, classes, input
    spec), the training config, metrics, data summary and versions; `training_state` in last.pt only."""
    arch: str
    classes: list[str]
    input: InputSpec
    state_dict: dict[str, torch.Tensor]
    train_config: dict[str, Any]
    metrics: dict[str, Any]
    data_summary: dict[str, Any]
    versions: dict[str, str]
    training_state: dict[str, Any] | None = None  # optimiser, scheduler, epoch...: last.pt only
    path: str = ""

    def build_model(self) -> nn.Module:
        """The network with these weights, in eval mode; a CheckpointError when they do not fit the architecture."""
        model = create_model(self.arch, len(self.classes), self.input.channels)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            raise CheckpointError(f"{self.path}: weights do not fit {self.arch}: {str(exc)[:200]}") from None
        return model.eval()

    def to_dict(self) -> dict[str, Any]:
        """The plain dict saved by `save_bundle` (readable with ``torch.load(weights_only=True)``)."""
        d = {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": self.arch, "classes": list(self.classes),
             "input": self.input.to_dict(), "state_dict": self.state_dict, "train_config": self.train_config,
             "metrics": self.metrics, "data_summary": self.data_summary, "versions": self.versions}
        if self.training_state is not None:
            d["training_state"] = self.training_state
        return d


def versions() -> dict[str, str]:
    """microcli, torch and torchvision versions as plain strings (recorded in every bundle and run)."""
    import torchvision

    # str(): torch.__version__ is a TorchVersion object, which weights_only loading refuses.
    return {"microcli": __version__, "torch": str(torch.__version__), "torchvision": str(torchvision.__version__)}


def save_bundle(bundle: Bundle, path: str | Path) -> Path:
    """Atomic: write path.tmp, flush to disk, rename. An interrupted save leaves the old file intact."""
    path = Path(path)
    with atomic_open(path, "wb", durable=True) as fh:
        torch.save(bundle.to_dict(), fh)
    return path


def resolve_model_path(model: str | Path) -> Path:
    """A bundle file, or a run folder (its best.pt): `modelfile.resolve_model_path`."""
    from .modelfile import resolve_model_path as resolve

    return resolve(model)


def load_bundle(model: str | Path) -> Bundle:
    """Read a bundle (a .pt file or a run folder's best.pt) with ``weights_only=True``.

    Raises
    ------
    CheckpointError : not a readable file, not a microcli bundle, a newer format, an unknown architecture,
        or a field that is missing or malformed (the message names it).
    """
    path = resolve_model_path(model)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    from .modelfile import sniff_kind  # modelfile imports this module's loader lazily, so no cycle

    kind = sniff_kind(path)
    if kind == "bioimageio":
        raise CheckpointError(f"{path}: a bioimage.io package, for bioimage.io tools (deepImageJ, ilastik...); "
                              "microcli reads the .pt bundle it was exported from (a run's best.pt)")
    if kind != "bundle":
        raise CheckpointError(f"{path}: an exported {'ONNX' if kind == 'onnx' else 'TorchScript'} model; this needs "
                              "a microcli .pt bundle (a run's best.pt), from which the export was made")
    if head.startswith(b"PK\x03\x04") and not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: a damaged model file: a zip archive without its directory (a copy cut "
                              "short?)")
    if not head.startswith((b"\x80", b"PK")):  # torch.save writes a zip archive, or before torch 1.6 a pickle
        raise CheckpointError(f"{path}: not a model file: neither a torch checkpoint (a zip archive) nor an older "
                              f"torch pickle ({f'it begins {head!r}' if head else 'it is empty'})")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = [ln.strip() for ln in str(exc).splitlines() if "global" in ln.lower()]
        if not refused:
            raise CheckpointError(f"{path}: not a readable model file (neither a torch zip nor a pickle)") from None
        raise CheckpointError(f"{path}: not a microcli model bundle; it holds objects that only unpickling "
                              f"arbitrary code could load, which microcli never does ({refused[0][:200]})") from None
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable model file ({type(exc).__name__}: {str(exc)[:160]})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a microcli model bundle (a bare state_dict? use --pretrained for those)")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise CheckpointError(f"{path}: bundle is missing {', '.join(missing)}")
    return _checked_bundle(raw, path)


def _checked_bundle(raw: dict, path: Path) -> Bundle:
    """Every field's type and range, so that a damaged or hand-edited file is one CheckpointError naming
    the field, never a KeyError or TypeError later."""
    def malformed(name: str, detail: str) -> CheckpointError:
        return CheckpointError(f"{path}: bundle field {name!r} is malformed ({detail})")

    version = raw["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise malformed("format_version", f"expected a whole number >= 1, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: bundle format {version} is newer than this microcli understands "
                              f"({FORMAT_VERSION}); upgrade microcli")
    arch = raw["arch"]
    if not isinstance(arch, str):
        raise malformed("arch", f"expected a name, got {type(arch).__name__}")
    if arch not in REGISTRY:
        raise CheckpointError(f"{path}: unknown architecture {arch!r}")
    classes = raw["classes"]
    if (not isinstance(classes, (list, tuple)) or not classes
            or not all(isinstance(c, str) and c for c in classes)):
        raise malformed("classes", "expected a non-empty list of class names")
    if len(set(classes)) != len(classes):
        raise malformed("classes", "a class name appears twice")
    try:
        spec = InputSpec.from_dict(raw["input"])
    except ValueError as exc:
        raise malformed("input", str(exc)) from None
    info = REGISTRY[arch]
    if spec.whole and (not info.any_size or spec.fit != "crop"):
        raise malformed("input", f"whole must be 0 for {arch} with fit={spec.fit}, got {spec.whole}")
    if spec.whole and not spec.img_size <= spec.whole <= info.max_size:
        raise malformed("input", f"whole must be 0 or {spec.img_size}-{info.max_size} px, got {spec.whole}")
    sd = raw["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise malformed("state_dict", "expected a dict of tensors")
    extras = {}
    for name in ("train_config", "metrics", "data_summary", "versions"):
        value = raw.get(name, {})
        if not isinstance(value, dict):
            raise malformed(name, f"expected a dict, got {type(value).__name__}")
        extras[name] = value
    state = raw.get("training_state")
    if state is not None and not isinstance(state, dict):
        raise malformed("training_state", f"expected a dict, got {type(state).__name__}")
    return Bundle(arch, list(classes), spec, sd, extras["train_config"], extras["metrics"], extras["data_summary"],
                  extras["versions"], state, str(path))
