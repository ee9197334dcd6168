"""Worker processes that keep order and memory in check."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor


def auto_workers(requested: int) -> int:
    """-1 (auto): one decoding process per core but one, and none on 1-2 cores, where measured
    in-process decoding of 200 px JPEGs was faster (the model needs both cores); else as requested."""
    if requested >= 0:
        return requested
    cores = os.cpu_count() or 1
    return cores - 1 if cores > 2 else 0


def _chunk_worker(args):
    fn, items = args
    return [fn(i) for i in items]


def bounded_map(fn: Callable, items: Iterable, *, workers: int, chunk: int = 8, ahead: int = 8) -> Iterator:
    """map(fn, items) in order, in `workers` processes (0: here), at most `ahead` chunks in flight.

    Unlike Executor.map, which submits every item at once, this consumes `items` lazily (a `find` pipe
    may still be running) and keeps memory flat however many files there are.
    """
    if workers <= 0:
        yield from map(fn, items)
        return
    with ProcessPoolExecutor(workers) as pool:
        queue: deque = deque()
        buf: list = []
        for it in items:
            buf.append(it)
            if len(buf) >= chunk:
                queue.append(pool.submit(_chunk_worker, (fn, buf)))
                buf = []
                while len(queue) >= ahead:
                    yield from queue.popleft().result()
        if buf:
            queue.append(pool.submit(_chunk_worker, (fn, buf)))
        while queue:
            yield from queue.popleft().result()
