"""The preprocessing pipeline: an ordered, validated list of ops, a value that travels inside models."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import PipelineError
from ..io import to_gray
from .ops import OPS


@dataclass(frozen=True)
class Step:
    """One op with its fully resolved parameters (defaults filled in), kept as sorted pairs."""

    op: str
    items: tuple[tuple[str, Any], ...] = ()

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.items)

    @classmethod
    def make(cls, op: str, raw: dict[str, Any] | None = None) -> Step:
        if op not in OPS:
            raise PipelineError(f"unknown op '{op}' (ops: {', '.join(sorted(OPS))}; see 'microcli preprocess --list')")
        return cls(op, tuple(sorted(OPS[op].validate(raw or {}).items())))

    @classmethod
    def parse(cls, text: str) -> Step:
        """'name' or 'name:key=value,key=value'."""
        name, _, args = text.strip().partition(":")
        raw: dict[str, str] = {}
        for pair in filter(None, (a.strip() for a in args.split(","))):
            key, eq, value = pair.partition("=")
            if not eq or not key.strip():
                raise PipelineError(f"op '{name}': expected key=value, got '{pair}' (example: gaussian:sigma=2)")
            raw[key.strip()] = value.strip()
        return cls.make(name.strip().lower(), raw)

    def __str__(self) -> str:
        defaults = {p.name: p.default for p in OPS[self.op].params}
        args = ",".join(f"{k}={_fmt(v)}" for k, v in self.items if v != defaults[k])
        return f"{self.op}:{args}" if args else self.op

    def apply(self, image: np.ndarray) -> np.ndarray:
        spec = OPS[self.op]
        if image.dtype == bool:
            image = image.astype(np.float32)
        if spec.gray_only and image.ndim == 3:
            image = to_gray(image)
        return spec.func(image, **self.params)


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if v is None:
        return "auto"
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclass(frozen=True)
class Pipeline:
    steps: tuple[Step, ...] = ()

    @classmethod
    def parse(cls, specs: str | Iterable[str] | None) -> Pipeline:
        """From CLI text: one string with steps joined by '|', or several strings (repeated --op)."""
        if specs is None:
            return cls()
        if isinstance(specs, str):
            specs = [specs]
        texts = [t for s in specs for t in s.split("|") if t.strip()]
        return cls(tuple(Step.parse(t) for t in texts))

    def to_list(self) -> list[dict[str, Any]]:
        return [{"op": s.op, "params": s.params} for s in self.steps]

    @classmethod
    def from_list(cls, items: list[dict[str, Any]]) -> Pipeline:
        try:
            return cls(tuple(Step.make(d["op"], d.get("params", {})) for d in items))
        except (TypeError, KeyError) as exc:
            raise PipelineError(f"pipeline JSON must be a list of {{'op': name, 'params': {{...}}}}: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_list(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Pipeline:
        try:
            return cls.from_list(json.loads(text))
        except json.JSONDecodeError as exc:
            raise PipelineError(f"pipeline JSON cannot be parsed: {exc}") from None

    def __str__(self) -> str:
        return "|".join(str(s) for s in self.steps)

    def __bool__(self) -> bool:
        return bool(self.steps)

    @property
    def binary_output(self) -> bool:
        return bool(self.steps) and OPS[self.steps[-1].op].binary

    def clipping_step(self) -> Step | None:
        """The first step that clips its input to [0, 1] (clahe, gamma, invert) before any step has
        brought the values into that range (stretch, equalize, a binary op); None if there is none.
        A float image in raw units (0..1000, say) must not reach it: it would come out flat."""
        for step in self.steps:
            spec = OPS[step.op]
            if spec.unit_range:
                return step
            if spec.normalises or spec.binary:
                return None
        return None

    def apply(self, image: np.ndarray) -> np.ndarray:
        for step in self.steps:
            image = step.apply(image)
        return image
