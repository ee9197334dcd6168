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
import torch
import torch.nn.functional as F


def main() -> None:
    from microcli.checkpoint import load_bundle
    from microcli.data import Item
    from microcli.dataset import decode_items
    from microcli.engines import average_views, network_views
    from microcli.inference import normalize

    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("manifest")
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    bundle = load_bundle(args.run)
    if bundle.input.fit != "crop" or not bundle.arch.startswith("resnet"):
        sys.exit(f"{args.run}: a --fit crop ResNet is needed (this is {bundle.arch}, fit {bundle.input.fit})")
    model = bundle.build_model().to(memory_format=torch.channels_last)
    rows = [r for r in csv.DictReader(open(args.manifest)) if r.get("split") == args.split]
    here = Path(args.manifest).parent  # relative paths are relative to the manifest, as in microcli
    decoded = decode_items([Item(str(here / r["path"]), r["label"]) for r in rows], bundle.input, keep=True)
    y = np.array([bundle.classes.index(it.label) for it in decoded.items])

    def softmax(arrays: np.ndarray, batch: int) -> np.ndarray:
        with torch.inference_mode():
            out = [F.softmax(model(normalize(torch.from_numpy(arrays[i:i + batch]), bundle.input)
                                   .contiguous(memory_format=torch.channels_last)), 1)
                   for i in range(0, len(arrays), batch)]
        return torch.cat(out).numpy()

    t0 = time.perf_counter()
    views, owner = network_views(decoded.arrays, bundle.input)
    tiles = average_views(softmax(views, 64), owner, len(y))
    t_tiles = time.perf_counter() - t0
    shapes = {a.shape for a in decoded.arrays}
    t0 = time.perf_counter()
    if len(shapes) == 1:
        whole = softmax(np.stack(decoded.arrays), 16)
    else:
        whole = np.concatenate([softmax(a[None], 1) for a in decoded.arrays])
    t_whole = time.perf_counter() - t0
    print(f"{args.run}, {args.split}: {len(y)} images, {len(views) / len(y):.1f} tiles of "
          f"{bundle.input.img_size} px each")
    for name, p, t in (("tiles averaged (microcli)", tiles, t_tiles), ("whole image", whole, t_whole),
                       ("both averaged", (tiles + whole) / 2, t_tiles + t_whole)):
        print(f"  {name:26} accuracy {100 * float((p.argmax(1) == y).mean()):6.2f} %   {t:5.1f} s")


if __name__ == "__main__":
    main()
