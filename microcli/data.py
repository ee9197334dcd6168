"""Labelled data sets: discovery (class folders, split folders, CSV manifests) and split files.

How a file becomes network input lives in `inputs.py`; decoding a whole set once for training lives in
`dataset.py`.
"""

from __future__ import annotations

import csv
import io
import os
import unicodedata
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError
from .io import MicrocliWarning, is_image_name, walk_images

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Item:
    """One labelled image: its path, class label and group (specimen; None when unknown)."""
    path: str
    label: str
    group: str | None = None


@dataclass
class Discovered:
    """What a DATA argument holds: class names (sorted) and items, already split or not."""

    classes: list[str]
    splits: dict[str, list[Item]]  # "all" when DATA is not split; else some of train/val/test
    source: str  # "folders", "split-folders" or "manifest"

    @property
    def presplit(self) -> bool:
        """True when DATA came split (train/val/test folders or a split column)."""
        return "all" not in self.splits

    def items(self) -> list[Item]:
        """Every item of every part, in order."""
        return [it for items in self.splits.values() for it in items]


def _warn_loose_images(root: Path, folders: str) -> None:
    """A warning naming the images directly in `root`, where the layout has only `folders`."""
    loose = sorted(f.name for f in root.iterdir() if is_image_name(f.name) and not f.is_dir())
    if loose:
        more = f" and {len(loose) - 3} more" if len(loose) > 3 else ""
        warnings.warn(f"{root}: {len(loose)} image(s) lie outside the {folders} and are not used "
                      f"({', '.join(loose[:3])}{more}); the class is the name of the folder an image is in",
                      MicrocliWarning, 4)


def _class_folders(root: Path) -> dict[str, list[Item]]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes:  # without class folders, _check_classes explains the layout
        _warn_loose_images(root, "class folders")
    marked = [name for name in classes if os.path.isfile(root / name / "pipeline.json")]  # False if unreadable
    if marked:  # `microcli preprocess DATA -o DATA/out` would otherwise train a class 'out' of every class
        raise DataError(f"{root / marked[0]}: holds a pipeline.json, so it is the output of `microcli preprocess`, "
                        "not a class folder; move it out of the data set, or give it as the data set itself")
    out = {}
    for name in classes:
        out[class_name(name)] = [Item(f.path, class_name(name)) for f in walk_images(root / name)]
        _refuse_nested_outputs(root / name, {os.path.dirname(it.path) for it in out[class_name(name)]})
    _refuse_run_folders(p for items in out.values() for p in {os.path.dirname(it.path) for it in items})
    return out


def _refuse_nested_outputs(class_dir: Path, folders: set[str]) -> None:
    """`microcli preprocess DATA/cls -o DATA/cls/out` leaves filtered copies of the class's images inside it,
    which would train and validate on two versions of one image (a leak across the split)."""
    seen: set[str] = set()
    top = os.path.normpath(class_dir)
    for folder in sorted(folders):
        while folder not in seen and os.path.normpath(folder) != top and len(folder) > len(top):
            seen.add(folder)
            if os.path.isfile(os.path.join(folder, "pipeline.json")):
                raise DataError(f"{folder}: holds a pipeline.json, so it is the output of `microcli preprocess`, "
                                f"inside the class folder {str(class_dir)!r}; its filtered copies would be read as "
                                "more images of that class; move it out of the data set")
            folder = os.path.dirname(folder)


def _refuse_run_folders(folders) -> None:
    """A microcli run folder inside the data (from a version that let `--out` lie there) holds plots that
    would be read as images of a class."""
    for folder in folders:
        if os.path.isfile(os.path.join(folder, "metrics.csv")) and os.path.isfile(os.path.join(folder, "config.json")):
            raise DataError(f"{folder}: is a microcli run folder inside the data set, and its plots would be read "
                            "as images of a class; move it out of the data set")


def class_name(text: str) -> str:
    """A class name in Unicode's composed form (NFC): macOS spells 'é' in a folder name as 'e' and a combining
    accent (NFD), which looks the same and would otherwise be another class."""
    return unicodedata.normalize("NFC", text)


def discover(data: str | Path, *, min_classes: int = 2) -> Discovered:
    """Read a data set: `root/<class>/...`, `root/{train,val,test}/<class>/...`, or a CSV manifest.

    Parameters
    ----------
    data : the folder or the manifest (see `_read_manifest`).
    min_classes : fewer classes is a DataError: 2 to train a classifier, 1 to evaluate one on a batch of
        a single class.

    Raises
    ------
    DataError : no such path, no class folders, an empty class folder, too few classes, or a manifest that
        is not UTF-8, lacks the columns, or lists a path under two labels or splits.
    """
    data = Path(data)
    if data.is_file():
        return _read_manifest(data, min_classes=min_classes)
    if not data.is_dir():
        raise DataError(f"{data}: no such folder or manifest file")
    subdirs = {d.name for d in data.iterdir() if d.is_dir() and not d.name.startswith(".")}
    if "train" in subdirs and subdirs <= set(SPLIT_NAMES):
        _warn_loose_images(data, "train/val/test folders")
        splits = {s: _class_folders(data / s) for s in SPLIT_NAMES if s in subdirs}
        classes = sorted({c for per in splits.values() for c in per})
        _check_classes(data / "train", splits["train"], min_classes)
        for s in SPLIT_NAMES[1:]:
            if splits.get(s):  # an empty class folder there is a slip too (an empty val/ is said later)
                _check_classes(data / s, splits[s], min_classes=1)
        parts = {s: [it for c in sorted(per) for it in per[c]] for s, per in splits.items()}
        _check_one_file_one_place(parts)
        return Discovered(classes, parts, "split-folders")
    per_class = _class_folders(data)
    _check_classes(data, per_class, min_classes)
    parts = {"all": [it for c in sorted(per_class) for it in per_class[c]]}
    _check_one_file_one_place(parts)
    return Discovered(sorted(per_class), parts, "folders")


def _check_one_file_one_place(parts: dict[str, list[Item]]) -> None:
    """One file reached through two folders (a symlinked folder) must not be under two labels or in two parts."""
    seen: dict[str, tuple[str, Item]] = {}
    for part, items in parts.items():
        for it in items:
            first = seen.setdefault(os.path.realpath(it.path), (part, it))
            if first[1] is not it and (first[1].label, first[0]) != (it.label, part):
                where = "under two classes" if first[1].label != it.label else f"in the {first[0]} and {part} parts"
                raise DataError(f"{first[1].path} and {it.path} are one file (through a symlink), {where}: an "
                                "image has one label and one part; remove the link")


def _check_classes(root: Path, per_class: dict[str, list[Item]], min_classes: int = 2) -> None:
    if not per_class:
        raise DataError(f"{root}: no class folders; expected {root}/<class name>/<images> "
                        "(extensions .png .jpg .jpeg .bmp .tif .tiff)")
    empty = [c for c, items in per_class.items() if not items]
    if empty:
        raise DataError(f"{root}: empty class folder(s): {', '.join(repr(c) for c in empty)} "
                        "(no .png .jpg .jpeg .bmp .tif .tiff files)")
    if len(per_class) < min_classes:
        raise DataError(f"{root}: only one class ({next(iter(per_class))!r}); a classifier needs at least two")


def _read_text(path: Path) -> str:
    """A manifest's text: UTF-8 (with or without Excel's BOM), or a DataError that says how to convert it."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}; Excel's plain 'CSV' "
                        f"is Windows-1252); save it as 'CSV UTF-8' or convert it: iconv -f cp1252 -t utf-8 "
                        f"{path.name} > utf8-{path.name}") from None


def _read_manifest(path: Path, *, min_classes: int = 2) -> Discovered:
    """CSV with a header `path,label[,group][,split]`; relative paths are relative to the CSV's folder.

    A path listed twice with the same label and split is used once, with a warning; one listed under two
    labels (or two splits) is a DataError naming both lines.
    """
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    cols = [c.strip().lower() for c in reader.fieldnames or []]
    if "path" not in cols or "label" not in cols:
        raise DataError(f"{path}: a manifest needs a header with 'path' and 'label' columns, got {cols}")
    rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    for row in rows:
        row["label"] = class_name(row.get("label", ""))
    items: dict[str, list[Item]] = defaultdict(list)
    first: dict[str, tuple[int, str, str]] = {}  # normalised path -> (line, label, split) where first listed
    repeated: list[tuple[str, int, int]] = []
    for n, row in enumerate(rows, start=2):
        if not row["path"] or not row["label"]:
            raise DataError(f"{path}:{n}: empty 'path' or 'label'")
        p = row["path"] if os.path.isabs(row["path"]) else str(path.parent / row["path"])
        split = row.get("split") or "all"
        if split not in (*SPLIT_NAMES, "all"):
            raise DataError(f"{path}:{n}: split must be train, val or test, got {split!r}")
        key = os.path.normcase(os.path.abspath(p))
        if key in first:
            line, label, where = first[key]
            if label != row["label"]:
                raise DataError(f"{path}: {row['path']} is labelled {label!r} on line {line} and {row['label']!r} on "
                                f"line {n}; an image has one label")
            if where != split:
                raise DataError(f"{path}: {row['path']} is in split {where!r} on line {line} and {split!r} on line "
                                f"{n}; an image in two splits leaks between training and testing")
            repeated.append((row["path"], line, n))
            continue
        first[key] = (n, row["label"], split)
        items[split].append(Item(p, row["label"], row.get("group") or None))
    if repeated:
        name, a, b = repeated[0]
        more = f" and {len(repeated) - 1} more" if len(repeated) > 1 else ""
        warnings.warn(f"{path}: {name} is listed twice (lines {a} and {b}){more}; each image is used once",
                      MicrocliWarning, 2)
    per_class = Counter(it.label for its in items.values() for it in its)
    if not per_class:
        raise DataError(f"{path}: the manifest lists no images")
    if len(per_class) < min_classes:
        raise DataError(f"{path}: only one class ({next(iter(per_class))!r}); a classifier needs at least two")
    if "all" in items and len(items) > 1:
        raise DataError(f"{path}: either every row has a split or none does")
    return Discovered(sorted(per_class), dict(items), "manifest")


def write_split_csv(path: str | Path, splits: dict[str, list[Item]]) -> None:
    """Write `split.csv` (path,label,group,split) for the parts of a split, with absolute paths, so that the
    run folder's split.csv reads the same from any working folder."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "group", "split"])
        for split, items in splits.items():
            for it in items:
                w.writerow([os.path.abspath(it.path), it.label, it.group or "", split])


def read_split_csv(path: str | Path) -> dict[str, list[Item]]:
    """The parts of a `split.csv`, by split name."""
    out: dict[str, list[Item]] = defaultdict(list)
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            out[row["split"]].append(Item(row["path"], class_name(row["label"]), row["group"] or None))
    return dict(out)
