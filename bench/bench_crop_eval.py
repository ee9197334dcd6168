"""How a `--fit crop` ResNet is evaluated: softmax averaged over native-scale tiles of the training crop,
against the whole image at native scale in one fully convolutional pass where neither side exceeds
twice the crop side (microcli's way), and against the whole image whatever its size.

    python bench/bench_crop_eval.py RUN MANIFEST [--split test] [--views 1.25,1.5,2]

RUN is a run folder (or a .pt bundle) of a ResNet trained with `--fit crop`; MANIFEST a manifest with a
`split` column, e.g. the one `bench/neu_det.py` or `bench/bench_defaults.py neu` writes. Prints the
accuracy of each way on that split, the network's time for each (this process, the machine's threads)
and the network inputs per image, whichever way the model itself was saved with. A ResNet ends in
global average pooling, so it takes inputs of any size; LeNet's fixed pooling grid does not, and this
bench refuses it. --views K,K...: also views of K crop sides, the fewest that cover each image
(overlapping where they do not fit), their softmax averaged."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from microcli.checkpoint import load_bundle
    from microcli.data import Item
    from microcli.dataset import decode_items
    from microcli.engines import Predictor, network_views, tile_origins
    from microcli.inputs import CROP_WHOLE
    from microcli.models import get_model_info

    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("manifest")
    ap.add_argument("--split", default="test")
    ap.add_argument("--views", default="", help="comma-separated multiples of the crop side, e.g. 1.25,1.5,2")
    args = ap.parse_args()
    bundle = load_bundle(args.run)
    if bundle.input.fit != "crop" or not get_model_info(bundle.arch).any_size:
        sys.exit(f"{args.run}: a --fit crop ResNet is needed (this is {bundle.arch}, fit {bundle.input.fit})")
    rows = [r for r in csv.DictReader(open(args.manifest)) if r.get("split") == args.split]
    here = Path(args.manifest).parent  # relative paths are relative to the manifest, as in microcli
    decoded = decode_items([Item(str(here / r["path"]), r["label"]) for r in rows], bundle.input, keep=True)
    arrays = decoded.arrays
    y = np.array([bundle.classes.index(it.label) for it in decoded.items])

    size = bundle.input.img_size
    largest = max(max(a.shape[-2:]) for a in arrays)
    print(f"{args.run}, {args.split}: {len(y)} images")
    for name, whole in ((f"tiles of {size} px averaged", 0),
                        (f"whole up to {CROP_WHOLE * size} px (microcli)", CROP_WHOLE * size),
                        ("whole image, any size", largest)):
        spec = dataclasses.replace(bundle.input, whole=whole)
        predictor = Predictor(dataclasses.replace(bundle, input=spec))
        t0 = time.perf_counter()
        probs = predictor.predict_arrays(arrays)  # what evaluate and predict do
        took = time.perf_counter() - t0
        n = len(network_views(arrays, spec))
        print(f"  {name:30} accuracy {100 * float((probs.argmax(1) == y).mean()):6.2f} %   {took:5.1f} s   "
              f"{n / len(y):4.1f} inputs an image")
    engine = Predictor(bundle).engine
    for k in (float(v) for v in args.views.split(",") if v):
        side = round(k * size)
        t0, n, probs = time.perf_counter(), 0, []
        for a in arrays:
            vh, vw = min(a.shape[-2], side), min(a.shape[-1], side)
            views = [a[:, y0:y0 + vh, x0:x0 + vw] for y0 in tile_origins(a.shape[-2], vh)
                     for x0 in tile_origins(a.shape[-1], vw)]
            probs.append(engine.probs(np.ascontiguousarray(np.stack(views))).mean(0))
            n += len(views)
        took = time.perf_counter() - t0
        print(f"  {f'views of {side} px ({k:g} crops)':30} accuracy "
              f"{100 * float((np.argmax(probs, 1) == y).mean()):6.2f} %   {took:5.1f} s   {n / len(y):4.1f} inputs an image")


if __name__ == "__main__":
    main()
