"""How a `--fit crop` ResNet is evaluated: softmax averaged over native-scale tiles (what microcli does)
against the whole image at native scale in one fully convolutional pass.

    python bench/bench_crop_eval.py RUN MANIFEST [--split test]

RUN is a run folder (or a .pt bundle) of a ResNet trained with `--fit crop`; MANIFEST a manifest with a
`split` column, e.g. the one `bench/neu_det.py` or `bench/bench_defaults.py neu` writes. Prints the
accuracy of each way on that split, of their average, and the network's time for each (this process,
the machine's threads). A ResNet ends in global average pooling, so it accepts the whole image; LeNet's
fixed pooling grid does not, and this bench refuses it.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from microcli.checkpoint import load_bundle
    from microcli.data import Item
    from microcli.dataset import decode_items
    from microcli.engines import Predictor, tile_origins

    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("manifest")
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    bundle = load_bundle(args.run)
    if bundle.input.fit != "crop" or not bundle.arch.startswith("resnet"):
        sys.exit(f"{args.run}: a --fit crop ResNet is needed (this is {bundle.arch}, fit {bundle.input.fit})")
    predictor = Predictor(bundle)  # the torch engine: it takes inputs of any size, unlike the exports
    rows = [r for r in csv.DictReader(open(args.manifest)) if r.get("split") == args.split]
    here = Path(args.manifest).parent  # relative paths are relative to the manifest, as in microcli
    decoded = decode_items([Item(str(here / r["path"]), r["label"]) for r in rows], bundle.input, keep=True)
    arrays = decoded.arrays
    y = np.array([bundle.classes.index(it.label) for it in decoded.items])

    t0 = time.perf_counter()
    tiles = predictor.predict_arrays(arrays)  # what evaluate and predict do
    t_tiles = time.perf_counter() - t0
    t0 = time.perf_counter()
    step = 16 if len({a.shape for a in arrays}) == 1 else 1  # images of one size are batched
    whole = np.concatenate([predictor.probs(np.stack(arrays[i:i + step])) for i in range(0, len(arrays), step)])
    t_whole = time.perf_counter() - t0
    size = bundle.input.img_size
    n_tiles = sum(len(tile_origins(a.shape[-2], size)) * len(tile_origins(a.shape[-1], size)) for a in arrays)
    print(f"{args.run}, {args.split}: {len(y)} images, {n_tiles / len(y):.1f} tiles of {size} px each")
    for name, p, t in (("tiles averaged (microcli)", tiles, t_tiles), ("whole image", whole, t_whole),
                       ("both averaged", (tiles + whole) / 2, t_tiles + t_whole)):
        print(f"  {name:26} accuracy {100 * float((p.argmax(1) == y).mean()):6.2f} %   {t:5.1f} s")


if __name__ == "__main__":
    main()
