"""How well heat maps point at the evidence: Grad-CAM against Grad-CAM++, and the map's placement.

    python bench/bench_cam_pointing.py

A synthetic set whose class is decided by one bright 10 px square on 48 px noise (the tests' set): a
LeNet trained on 40 images per class (6 epochs, a few seconds), then 50 unseen images. For Grad-CAM and
Grad-CAM++: how many maps peak inside the square (1 px margin; the peak may be a plateau), and the mean
share of the map inside it (the square is 4.3 % of the image). Both with the maps placed on their cells'
receptive fields (microcli) and stretched over the image (what most Grad-CAM code does).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def pointing(tmp: Path) -> None:
    from tests.explain.conftest import SIDE, SIZE, make_squares, square_image

    from microcli import explain as ex_mod
    from microcli.checkpoint import load_bundle
    from microcli.explain import CamExplainer
    from microcli.inference import Predictor
    from microcli.inputs import prepare_array
    from microcli.train import TrainConfig, train_model

    make_squares(tmp / "squares", 40)
    train_model(TrainConfig(data=str(tmp / "squares"), out=str(tmp / "sq"), arch="lenet", epochs=6, img_size=SIZE,
                            workers=0))
    rng = np.random.default_rng(7)
    tests = []
    for i in range(50):
        y, x = (int(v) for v in rng.integers(2, SIZE - SIDE - 2, 2))
        tests.append((square_image(tmp / "unseen" / f"{i}.png", y, x, seed=1000 + i), y, x))
    print(f"pointing: LeNet on the bright-square set, {len(tests)} unseen images (the square: "
          f"{100 * SIDE * SIDE / SIZE**2:.1f} % of the image)")
    place = ex_mod.place_map
    for placement in ("receptive field", "stretched"):
        if placement == "stretched":  # what most Grad-CAM code does: resize the map over the whole image
            ex_mod.place_map = lambda cam, size, **_: ex_mod._upsample(cam, size)
        for method in ("gradcam", "gradcam++"):
            e = CamExplainer(Predictor(load_bundle(tmp / "sq")), method=method)
            got = e.explain_arrays([prepare_array(str(p), e.predictor.spec) for p, _, _ in tests])
            hits = sum(cam[max(0, y - 1):y + SIDE + 1, max(0, x - 1):x + SIDE + 1].max() == cam.max()
                       for (_, y, x), (_, _, cam, _) in zip(tests, got))
            share = np.mean([cam[y:y + SIDE, x:x + SIDE].sum() / cam.sum() for (_, y, x), (_, _, cam, _) in zip(tests, got)])
            print(f"  {method:10} {placement:16} peak inside the square: {hits:2d}/{len(tests)}   "
                  f"map inside the square: {100 * share:4.1f} %")
    ex_mod.place_map = place


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        pointing(Path(tmp))
