"""The model bundle: one file with everything predict needs, loadable with weights_only=True alone.

Only plain containers, numbers, strings and tensors go in, so `torch.load(..., weights_only=True)` reads
it and no pickle code ever runs. Writes go to a temporary file that is renamed into place.
"""

from __future__ import annotations

import pickle
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
        model = create_model(self.arch, len(self.classes), self.input.channels)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            raise CheckpointError(f"{self.path}: weights do not fit {self.arch}: {str(exc)[:200]}") from None
        return model.eval()

    def to_dict(self) -> dict[str, Any]:
        d = {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": self.arch, "classes": list(self.classes),
             "input": self.input.to_dict(), "state_dict": self.state_dict, "train_config": self.train_config,
             "metrics": self.metrics, "data_summary": self.data_summary, "versions": self.versions}
        if self.training_state is not None:
            d["training_state"] = self.training_state
        return d


def versions() -> dict[str, str]:
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
    """A bundle file, or a run folder (its best.pt)."""
    p = Path(model)
    if p.is_dir():
        p = p / "best.pt"
    if not p.is_file():
        raise CheckpointError(f"{model}: no such model file (give a .pt bundle or a run folder with best.pt)")
    return p


def load_bundle(model: str | Path) -> Bundle:
    path = resolve_model_path(model)
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
    if raw["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{path}: bundle format {raw['format_version']} is newer than this microcli "
                              f"understands ({FORMAT_VERSION}); upgrade microcli")
    if raw["arch"] not in REGISTRY:
        raise CheckpointError(f"{path}: unknown architecture {raw['arch']!r}")
    return Bundle(raw["arch"], list(raw["classes"]), InputSpec.from_dict(raw["input"]), raw["state_dict"],
                  raw.get("train_config", {}), raw.get("metrics", {}), raw.get("data_summary", {}),
                  raw.get("versions", {}), raw.get("training_state"), str(path))
