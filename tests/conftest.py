from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
NEU = REPO.parent / "shared" / "datasets" / "neu-det"


def save_png(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def engine_cache(tmp_path_factory) -> Path:
    """Bundles converted for the ONNX engines are cached here, never in the user's ~/.cache."""
    import os

    path = tmp_path_factory.mktemp("engine-cache")
    old = os.environ.get("MICROCLI_CACHE_DIR")
    os.environ["MICROCLI_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("MICROCLI_CACHE_DIR", None)
    else:
        os.environ["MICROCLI_CACHE_DIR"] = old


@pytest.fixture
def gray8() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (40, 50), dtype=np.uint8)


@pytest.fixture
def gray16() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 65536, (40, 50), dtype=np.uint16)


@pytest.fixture
def truncated_png(tmp_path, gray8) -> Path:
    good = save_png(tmp_path / "src.png", gray8)
    bad = tmp_path / "truncated.png"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    good.unlink()
    return bad


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A small labelled synthetic data set (6 classes x 12 images, 64 px), made once per session."""
    from microcli.synth import SynthSpec, write_dataset

    out = tmp_path_factory.mktemp("synth")
    list(write_dataset(out, SynthSpec(per_class=12, size=64, seed=3)))
    return out


@pytest.fixture(scope="session")
def trained_result(tmp_path_factory):
    """The one LeNet run on sample_images (12 epochs, a few seconds) that every test reading a trained run
    shares: its TrainResult."""
    from microcli.train import TrainConfig, train_model

    out = tmp_path_factory.mktemp("trained") / "run"
    return train_model(TrainConfig(data=str(REPO / "sample_images"), out=str(out), arch="lenet", epochs=12,
                                   workers=0))


@pytest.fixture(scope="session")
def trained_run(trained_result) -> Path:
    """The shared LeNet run's folder."""
    return trained_result.run_dir


def free_port() -> int:
    """A TCP port nobody listens on now (for torchrun's rendezvous), so parallel runs never collide."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


neu = pytest.mark.skipif(not NEU.is_dir(), reason="../shared/datasets/neu-det is not present")


def pytest_collection_modifyitems(items):
    """A test that needs the shared trained run is slow (it trains once per session)."""
    for item in items:
        if "trained_result" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
