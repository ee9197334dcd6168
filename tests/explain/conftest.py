"""Shared by the explain, class-map and HTML-report tests: a synthetic set whose class is decided by one
bright square alone, and a LeNet trained on it (a few seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SIZE, SIDE = 48, 10  # image and square sides in pixels


def noise(rng: np.random.Generator, h: int = SIZE, w: int = SIZE) -> np.ndarray:
    """The background of every image: grey noise, no structure."""
    return rng.normal(0.4, 0.08, (h, w))


def save(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(path)
    return path


def square_image(path: Path, y: int, x: int, *, seed: int) -> Path:
    """A test image: noise with a bright SIDE x SIDE square at (y, x)."""
    img = noise(np.random.default_rng(seed))
    img[y:y + SIDE, x:x + SIDE] = 0.95
    return save(path, img)


def make_squares(root: Path, per_class: int, *, seed: int = 0) -> Path:
    """Class 'square': a bright square somewhere on the noise; class 'plain': the noise alone."""
    rng = np.random.default_rng(seed)
    for cls in ("plain", "square"):
        for i in range(per_class):
            img = noise(rng)
            if cls == "square":
                y, x = rng.integers(2, SIZE - SIDE - 2, 2)
                img[y:y + SIDE, x:x + SIDE] = 0.95
            save(root / cls / f"{cls}_{i:03d}.png", img)
    return root


@pytest.fixture(scope="session")
def squares(tmp_path_factory) -> Path:
    return make_squares(tmp_path_factory.mktemp("squares") / "data", 40)


@pytest.fixture(scope="session")
def squares_result(squares, tmp_path_factory):
    """LeNet trained on the squares (48 px, 6 epochs): its TrainResult."""
    from microcli.train import TrainConfig, train_model

    out = tmp_path_factory.mktemp("squares-run") / "run"
    return train_model(TrainConfig(data=str(squares), out=str(out), arch="lenet", epochs=6, img_size=SIZE, workers=0))


@pytest.fixture(scope="session")
def squares_run(squares_result) -> Path:
    return squares_result.run_dir


def random_bundle(path: Path, arch: str, *, channels: int = 1, img_size: int = 64, fit: str = "resize",
                  classes=("a", "b", "c"), whole: int = 0) -> Path:
    """A real model file of a freshly initialised network (weights do not matter for shapes and speed)."""
    import torch

    from microcli.checkpoint import Bundle, save_bundle, versions
    from microcli.inputs import InputSpec
    from microcli.models import create_model

    torch.manual_seed(0)
    model = create_model(arch, len(classes), channels)
    spec = InputSpec(channels, img_size, fit, (), (0.45,) * channels, (0.2,) * channels, whole)
    bundle = Bundle(arch, list(classes), spec, model.state_dict(), {}, {}, {}, versions())
    return save_bundle(bundle, path)
