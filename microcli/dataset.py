"""A labelled set decoded once for training: arrays in RAM (or re-read on demand), labels, statistics.

Training on a CPU is fast when the expensive part happens once: each image is read, filtered and fitted
to the input once (in worker processes) and kept in RAM. `decode_items` does that pass and keeps, per
image, the channel sums that normalisation needs, so any subset (a fold of a cross-validation, say)
gets its own mean and standard deviation without reading a file again.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from .data import Item
from .errors import DataError
from .inputs import InputSpec, prepare_many, prepare_or_error


@dataclass
class DecodedSet:
    """The readable images of a list of items, in order.

    Attributes
    ----------
    items : list of Item
        The items that could be read (unreadable ones are in `failed`).
    spec : InputSpec
        How they were prepared (not yet normalised).
    arrays : list of ndarray or None
        (C, H, W) float32 arrays, or None when the set is not kept in RAM.
    sums : ndarray of float64, shape (n, 3, C)
        Per image: pixel count, sum and sum of squares per channel.
    failed : list of (str, str)
        (path, message) of the items that could not be read.
    """

    items: list[Item]
    spec: InputSpec
    arrays: list[np.ndarray] | None
    sums: np.ndarray
    failed: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def subset(self, idx: list[int] | np.ndarray) -> DecodedSet:
        """The images at positions `idx` (no file is read again).

        Parameters
        ----------
        idx : list of int or ndarray
            Positions in `items`.

        Returns
        -------
        DecodedSet
            Sharing the arrays with this set; its `failed` is empty.
        """
        idx = [int(i) for i in idx]
        arrays = None if self.arrays is None else [self.arrays[i] for i in idx]
        return DecodedSet([self.items[i] for i in idx], self.spec, arrays, self.sums[idx], [])

    def labels(self, classes: list[str]) -> list[int]:
        """The class index of every item, in order.

        Parameters
        ----------
        classes : list of str
            The class names; an item's label is looked up in it.

        Returns
        -------
        list of int

        Raises
        ------
        KeyError
            An item's label is not in `classes`.
        """
        index = {c: i for i, c in enumerate(classes)}
        return [index[it.label] for it in self.items]

    def normalised_spec(self) -> InputSpec:
        """`spec` with the per-channel mean and standard deviation of these images (std at least 1e-3).

        Computed from `sums`, over all pixels of all images together.

        Returns
        -------
        InputSpec
        """
        count, total, sq = self.sums.sum(0)
        mean = total / np.maximum(count, 1)
        std = np.sqrt(np.maximum(sq / np.maximum(count, 1) - mean**2, 1e-12))
        return dataclasses.replace(self.spec, mean=tuple(float(m) for m in mean),
                                   std=tuple(float(max(s, 1e-3)) for s in std))

    def arrays_or_decode(self, *, workers: int = 0, max_pixels: int | None = None) -> list[np.ndarray]:
        """The arrays, decoding them now when the set is not kept in RAM (validation needs them all).

        Parameters
        ----------
        workers : int, default 0
            Decoding processes when the files are read (0: in this process).
        max_pixels : int or None
            Decompression-bomb guard (None: the default limit; 0: none).

        Returns
        -------
        list of ndarray
            (C, H, W) float32 arrays. A file that became unreadable since is left out, so the list is then
            shorter than `items`.
        """
        if self.arrays is not None:
            return self.arrays
        return decode_items(self.items, self.spec, keep=True, workers=workers, max_pixels=max_pixels).arrays


def decode_items(items: list[Item], spec: InputSpec, *, keep: bool, workers: int = 0, max_pixels: int | None = None,
                 strict: bool = False, on_progress: Callable[[int, int], None] | None = None) -> DecodedSet:
    """Read and prepare every item once.

    Parameters
    ----------
    items : list of Item
        The images to read.
    spec : InputSpec
        Channels, size, fit and pipeline (see `microcli.inputs.prepare_array`).
    keep : bool
        Keep the arrays in RAM (else only the statistics are kept).
    workers : int, default 0
        Decoding processes (0: in this process).
    max_pixels : int or None
        Decompression-bomb guard (None: the default limit; 0: none).
    strict : bool, default False
        Raise at the first unreadable image instead of listing it in `failed`.
    on_progress : callable, optional
        Called with (done, total) after each image, readable or not.

    Returns
    -------
    DecodedSet
        The readable items in their original order, their arrays (if `keep`), sums and failures.

    Raises
    ------
    DataError
        With `strict`, the first unreadable image.
    """
    ok, arrays, failed, sums = [], [] if keep else None, [], []
    for i, got in enumerate(prepare_many([it.path for it in items], spec, workers=workers, max_pixels=max_pixels)):
        if isinstance(got, str):
            failed.append((items[i].path, got))
            if strict:
                raise DataError(f"{got} (--strict: stopping at the first unreadable image)")
        else:
            ok.append(items[i])
            if keep:
                arrays.append(got)
            flat = got.reshape(spec.channels, -1).astype(np.float64)
            sums.append([[flat.shape[1]] * spec.channels, flat.sum(1), (flat**2).sum(1)])
        if on_progress:
            on_progress(i + 1, len(items))
    sums_arr = np.asarray(sums, np.float64).reshape(len(ok), 3, spec.channels)
    return DecodedSet(ok, spec, arrays, sums_arr, failed)


def available_ram() -> int:
    """Free physical memory in bytes (4 GiB where the OS does not say)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def choose_cache(requested: str, n_images: int, spec: InputSpec) -> tuple[str, str]:
    """'ram' or 'none', and why. auto keeps the decoded set in RAM when it needs under half the free memory
    (crop-mode images are kept at native scale: counted as 4x the input size).

    Parameters
    ----------
    requested : str
        'auto', 'ram' or 'none'; anything but 'auto' is returned as it is.
    n_images : int
        How many images would be kept.
    spec : InputSpec
        Their channels, input size and fit, for the estimate (4 bytes per float32 value).

    Returns
    -------
    cache : str
        'ram' or 'none' (or `requested`).
    reason : str
        Why, with the estimate and the free memory in MiB.
    """
    if requested != "auto":
        return requested, "asked for"
    need = n_images * spec.channels * spec.img_size**2 * 4 * (4 if spec.fit == "crop" else 1)
    free = available_ram()
    if need < free // 2:
        return "ram", f"the decoded images need about {need >> 20} MiB, under half the free {free >> 20} MiB"
    return "none", f"the decoded images would need about {need >> 20} MiB, over half the free {free >> 20} MiB"


class Source:
    """Training batches by index: from RAM, or decoded again on each request (cache none).

    Parameters
    ----------
    data : DecodedSet
        The training set; its arrays are used when it kept them.
    workers : int, default 0
        Processes that decode a batch when the set is not in RAM (0: in this process).
    max_pixels : int or None
        Decompression-bomb guard for those reads.

    Attributes
    ----------
    paths : list of str
        The files, by index.
    spec : InputSpec
    arrays : list of ndarray or None
        The decoded (C, H, W) float32 arrays, or None (cache none).
    workers, max_pixels
        As given.
    stacked : Tensor or None
        All arrays as one (N, C, S, S) tensor when they share a shape, else None.
    """

    def __init__(self, data: DecodedSet, *, workers: int = 0, max_pixels: int | None = None):
        self.paths = [it.path for it in data.items]
        self.spec, self.arrays, self.workers, self.max_pixels = data.spec, data.arrays, workers, max_pixels
        self.stacked = None
        if self.arrays is not None and len({a.shape for a in self.arrays}) == 1:
            self.stacked = torch.from_numpy(np.stack(self.arrays))
        self._pool = None

    def __len__(self) -> int:
        return len(self.paths)

    def _get(self, idx: list[int]) -> list[np.ndarray]:
        if self.arrays is not None:
            return [self.arrays[i] for i in idx]
        args = [(self.paths[i], self.spec, self.max_pixels) for i in idx]
        if self.workers > 0:
            self._pool = self._pool or ProcessPoolExecutor(self.workers)
            got = list(self._pool.map(prepare_or_error, args, chunksize=max(1, len(args) // (2 * self.workers))))
        else:
            got = [prepare_or_error(a) for a in args]
        for g in got:
            if isinstance(g, str):
                raise DataError(f"{g} (it was readable when the run started)")
        return got

    def batch(self, idx: list[int], g: torch.Generator) -> torch.Tensor:
        """A training batch: the images (fit=resize or squash), or random crops at native scale (fit=crop).

        Parameters
        ----------
        idx : list of int
            The images' indices.
        g : torch.Generator
            The CPU generator that places the crops.

        Returns
        -------
        Tensor of float32, shape (len(idx), C, S, S)
            S is ``spec.img_size``; on the CPU, not normalised.

        Raises
        ------
        DataError
            A file re-read for this batch (cache none) has become unreadable.
        """
        size = self.spec.img_size
        if self.stacked is not None and self.spec.fit != "crop":
            return self.stacked[idx]
        arrays = self._get(idx)
        if self.spec.fit != "crop":
            return torch.from_numpy(np.stack(arrays))
        crops = []
        for a in arrays:
            h, w = a.shape[-2:]
            top = int(torch.randint(0, h - size + 1, (1,), generator=g))
            left = int(torch.randint(0, w - size + 1, (1,), generator=g))
            crops.append(a[:, top:top + size, left:left + size])
        return torch.from_numpy(np.ascontiguousarray(np.stack(crops)))

    def close(self) -> None:
        """Shut down the decoding processes, if any were started (pending work is cancelled)."""
        if self._pool:
            self._pool.shutdown(cancel_futures=True)
