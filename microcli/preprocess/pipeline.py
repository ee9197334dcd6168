"""The preprocessing pipeline: an ordered, validated list of ops, a value that travels inside models."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PipelineError
from ..io import to_gray
from .ops import OPS


@dataclass(frozen=True)
class Step:
    """One op with its fully resolved parameters (defaults filled in), kept as sorted pairs.

    Attributes
    ----------
    op : str
        The op's name, a key of `OPS`.
    items : tuple of (str, Any)
        Every parameter of the op with its checked value, sorted by name (hashable, unlike a dict).

    Examples
    --------
    >>> str(Step.parse("gaussian:sigma=2"))
    'gaussian:sigma=2'
    >>> Step.parse("gaussian").params
    {'sigma': 1.0}
    """

    op: str
    items: tuple[tuple[str, Any], ...] = ()

    @property
    def params(self) -> dict[str, Any]:
        """The parameters as a dict, name to value."""
        return dict(self.items)

    @classmethod
    def make(cls, op: str, raw: dict[str, Any] | None = None) -> Step:
        """A step from an op name and raw parameter values, checked and completed with the defaults.

        Parameters
        ----------
        op : str
            The op's name (case-sensitive here; `parse` lower-cases it).
        raw : dict, optional
            Parameter name to a CLI string or JSON value; None or missing keys take the defaults.

        Returns
        -------
        Step

        Raises
        ------
        PipelineError
            An unknown op or parameter, or a value that breaks its rule.
        """
        if op not in OPS:
            raise PipelineError(f"unknown op '{op}' (ops: {', '.join(sorted(OPS))}; see 'microcli preprocess --list')")
        return cls(op, tuple(sorted(OPS[op].validate(raw or {}).items())))

    @classmethod
    def parse(cls, text: str) -> Step:
        """A step from CLI text: 'name' or 'name:key=value,key=value'.

        Parameters
        ----------
        text : str
            One step; spaces around names, keys and values are ignored, and the op name is lower-cased.

        Returns
        -------
        Step

        Raises
        ------
        PipelineError
            A pair that is not key=value, a key given twice, or anything `make` refuses.
        """
        name, _, args = text.strip().partition(":")
        raw: dict[str, str] = {}
        for pair in filter(None, (a.strip() for a in args.split(","))):
            key, eq, value = pair.partition("=")
            if not eq or not key.strip():
                raise PipelineError(f"op '{name}': expected key=value, got '{pair}' (example: gaussian:sigma=2)")
            if key.strip() in raw:
                raise PipelineError(f"op '{name}': {key.strip()} is given twice ({raw[key.strip()]} and "
                                    f"{value.strip()}); give it once")
            raw[key.strip()] = value.strip()
        return cls.make(name.strip().lower(), raw)

    def __str__(self) -> str:
        defaults = {p.name: p.default for p in OPS[self.op].params}
        args = ",".join(f"{k}={_fmt(v)}" for k, v in self.items if v != defaults[k])
        return f"{self.op}:{args}" if args else self.op

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Run the op on one image.

        A bool mask (the output of a binary op) becomes float32 0/1 first, and a colour image becomes luma
        (ITU-R 601 weights) for an op that works on grayscale only.

        Parameters
        ----------
        image : ndarray, shape (H, W) or (H, W, 3)
            float32 intensities scaled from the file's own range, or a bool mask.

        Returns
        -------
        ndarray
            What the op returns: float32, or bool for a binary op; the shape may change (resize, crop...).

        Raises
        ------
        OpError
            The op cannot be applied to this image (crop larger than the image).
        """
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
    """An ordered list of checked steps, applied one after the other; empty means no preprocessing.

    Stored in model bundles (as `to_list`), so a model applies the same filters everywhere. str() gives
    the CLI form, with only the parameters that differ from their defaults.

    Attributes
    ----------
    steps : tuple of Step

    Examples
    --------
    >>> p = Pipeline.parse("median:radius=2|stretch:low=0.5")
    >>> str(p)
    'median:radius=2|stretch:low=0.5'
    >>> Pipeline.from_json(p.to_json()) == p
    True
    """

    steps: tuple[Step, ...] = ()

    @classmethod
    def parse(cls, specs: str | Iterable[str] | None) -> Pipeline:
        """From CLI text: one string with steps joined by '|', or several strings (repeated --op).

        Parameters
        ----------
        specs : str, iterable of str or None
            The steps (see `Step.parse`); blank steps are skipped, None gives an empty pipeline.

        Returns
        -------
        Pipeline

        Raises
        ------
        PipelineError
            A step that is not valid.
        """
        if specs is None:
            return cls()
        if isinstance(specs, str):
            specs = [specs]
        texts = [t for s in specs for t in s.split("|") if t.strip()]
        return cls(tuple(Step.parse(t) for t in texts))

    def to_list(self) -> list[dict[str, Any]]:
        """JSON-ready: ``[{"op": name, "params": {...}}, ...]`` with every parameter, defaults included."""
        return [{"op": s.op, "params": s.params} for s in self.steps]

    @classmethod
    def from_list(cls, items: list[dict[str, Any]]) -> Pipeline:
        """The inverse of `to_list`; a missing "params" means all defaults.

        Parameters
        ----------
        items : list of dict
            ``{"op": name, "params": {...}}`` per step, values as JSON or CLI strings.

        Returns
        -------
        Pipeline

        Raises
        ------
        PipelineError
            Not a list of such dicts, or a step that is not valid.
        """
        try:
            return cls(tuple(Step.make(d["op"], d.get("params", {})) for d in items))
        except (TypeError, KeyError) as exc:
            raise PipelineError(f"pipeline JSON must be a list of {{'op': name, 'params': {{...}}}}: {exc}") from None

    def to_json(self) -> str:
        """`to_list` as indented JSON text."""
        return json.dumps(self.to_list(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Pipeline:
        """The inverse of `to_json`.

        Parameters
        ----------
        text : str
            JSON text of a list as `from_list` takes.

        Returns
        -------
        Pipeline

        Raises
        ------
        PipelineError
            The text is not JSON, or `from_list` refuses it.
        """
        try:
            return cls.from_list(json.loads(text))
        except json.JSONDecodeError as exc:
            raise PipelineError(f"pipeline JSON cannot be parsed: {exc}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> Pipeline:
        """The pipeline a `pipeline.json` holds (as `microcli preprocess` writes it).

        Raises
        ------
        PipelineError
            The file cannot be read, or `from_json` refuses its text; the message names the file.
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PipelineError(f"{path}: cannot read the pipeline file ({getattr(exc, 'strerror', None) or exc})"
                                ) from None
        try:
            return cls.from_json(text)
        except PipelineError as exc:
            raise PipelineError(f"{path}: {exc}") from None

    def __str__(self) -> str:
        return "|".join(str(s) for s in self.steps)

    def __bool__(self) -> bool:
        return bool(self.steps)

    @property
    def binary_output(self) -> bool:
        """True when the last step makes a mask (canny, threshold), written as 8-bit 0/255."""
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
        """Run every step in order (see `Step.apply`); an empty pipeline returns `image` itself.

        Parameters
        ----------
        image : ndarray of float32, shape (H, W) or (H, W, 3)
            Intensities scaled from the file's own range.

        Returns
        -------
        ndarray
            float32, or bool when `binary_output`; the shape may change (resize, rescale, crop, gray-only ops).

        Raises
        ------
        OpError
            A step cannot be applied to this image.
        """
        for step in self.steps:
            image = step.apply(image)
        return image
