"""Grouped, stratified splits: hold out whole specimens, never part of one.

Images of one specimen (a *group*: one sample, one tile, one patient) look more alike than images of
two specimens of the same class. A split that scatters a specimen over train and test lets a model
recognise the specimen instead of the class, and its test figures overstate what it does on a new
specimen. Every function here keeps each group on one side, also groups whose images span classes.

scikit-learn's `StratifiedGroupKFold` makes the first assignment: it is the well-kept reference for
balancing class proportions across folds of whole groups. It promises proportions, not coverage, so a
deterministic repair step follows: it moves the smallest groups it can (or exchanges two, where groups
holding several classes leave no single move) until every class that has enough groups is on every
held-out side (or in every fold), and training keeps every class. What it
cannot do is said in `warnings`, naming the class; no class is ever dropped.

numpy and scikit-learn only (no torch), so `microcli split` starts fast.
"""

from __future__ import annotations

import csv
import os
import re
import warnings as _warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .data import Item, discover
from .errors import DataError, OutputExistsError, UsageError

SIDES = ("train", "val", "test")
_TRAIN, _VAL, _TEST = range(3)
# Finest fold grid tried for the asked fractions (0.3 -> 3 folds of 10, 0.15 -> 1 of 7). StratifiedGroupKFold
# costs O(groups x folds) in Python: 2000 groups take 0.4 s at 5 folds and 2.3 s at 20.
_MAX_FOLDS = 10


@dataclass(frozen=True)
class SplitResult:
    """Items on each side of a split, each in input order, and what could not be done as asked."""

    train: list[Item]
    val: list[Item]
    test: list[Item]
    warnings: tuple[str, ...] = ()

    def splits(self) -> dict[str, list[Item]]:
        """The non-empty sides by name, train first (the shape of `Discovered.splits`)."""
        return {name: items for name, items in zip(SIDES, (self.train, self.val, self.test)) if items}


@dataclass(frozen=True)
class FoldResult:
    """A k-fold partition: `fold[i]` is the fold that tests item `i`."""

    fold: np.ndarray
    k: int
    warnings: tuple[str, ...] = ()

    def indices(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(train_idx, test_idx) for each fold, as scikit-learn's `split` yields them."""
        return [(np.flatnonzero(self.fold != f), np.flatnonzero(self.fold == f)) for f in range(self.k)]


@dataclass(frozen=True)
class _Groups:
    """Items indexed by group. An item without a group is a group of its own."""

    of_item: np.ndarray  # (N,) group index of each item
    names: list[str | None]  # group name, None for an ungrouped item
    sizes: np.ndarray  # (G,) images per group
    member: np.ndarray  # (G, C) bool: the group holds images of class c
    classes: list[str]
    grouped: bool  # some item has a group name

    @property
    def unit(self) -> str:
        return "groups" if self.grouped else "images"

    def of_class(self, c: int) -> np.ndarray:
        return np.flatnonzero(self.member[:, c])


def _index_groups(items: Sequence[Item]) -> _Groups:
    classes = sorted({it.label for it in items})
    cls = {c: i for i, c in enumerate(classes)}
    index: dict[tuple, int] = {}
    of_item = np.empty(len(items), dtype=int)
    names: list[str | None] = []
    for i, it in enumerate(items):
        key = ("g", it.group) if it.group is not None else ("i", i)
        if key not in index:
            index[key] = len(names)
            names.append(it.group)
        of_item[i] = index[key]
    labels = np.array([cls[it.label] for it in items], dtype=int)
    member = np.zeros((len(names), len(classes)), dtype=bool)
    member[of_item, labels] = True
    sizes = np.bincount(of_item, minlength=len(names))
    return _Groups(of_item, names, sizes, member, classes, any(n is not None for n in names))


def _initial_folds(items: Sequence[Item], groups: _Groups, n: int, seed: int) -> np.ndarray:
    """Fold (0..n-1) of each group from StratifiedGroupKFold(shuffle=True, random_state=seed).

    Without any group name every image is its own group, and StratifiedKFold gives the same kind of
    answer vectorised (10,000 images: 0.02 s against 2 s). Both refuse when every class has fewer images
    than n; a seeded round robin over the groups, largest first, stands in then (the repair step does
    the balancing that matters for such tiny data)."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    labels = np.array([it.label for it in items])
    fold_of_group = np.zeros(len(groups.names), dtype=int)
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore", UserWarning)  # "least populated class has only ... members"
            cv = (StratifiedGroupKFold if groups.grouped else StratifiedKFold)(n_splits=n, shuffle=True,
                                                                                random_state=seed)
            for f, (_, test_idx) in enumerate(cv.split(np.zeros(len(items)), labels, groups.of_item)):
                fold_of_group[groups.of_item[test_idx]] = f
    except ValueError:
        order = np.random.default_rng(seed).permutation(len(groups.names))
        order = order[np.argsort(-groups.sizes[order], kind="stable")]
        fold_of_group[order] = np.arange(len(order)) % n
    return fold_of_group


def _presence(groups: _Groups, assign: np.ndarray, bins: int) -> np.ndarray:
    """(C, bins): how many groups of each class sit in each bin (side or fold)."""
    onehot = np.zeros((len(assign), bins), dtype=int)
    onehot[np.arange(len(assign)), assign] = 1
    return groups.member.T.astype(int) @ onehot


def _repair(groups: _Groups, assign: np.ndarray, need: np.ndarray, pinned: np.ndarray) -> None:
    """Move groups (in place) until every class c has at least need[c, b] groups in bin b, where it can.

    A move takes the smallest movable group of the class from the bin with the most to spare, and only
    when no class in that group falls below its own need there, so every move shrinks the total
    shortfall and the loop ends. Ties go to the lower group index: deterministic for a given input."""
    bins = need.shape[1]
    while True:
        have = _presence(groups, assign, bins)
        moved = False
        for c, b in np.argwhere(have < need):
            spare = have[c] - need[c]
            for d in sorted((d for d in range(bins) if d != b and spare[d] > 0), key=lambda d: (-spare[d], d)):
                cand = [g for g in groups.of_class(c) if assign[g] == d and not pinned[g]
                        and np.all(have[groups.member[g], d] > need[groups.member[g], d])]
                if cand:
                    g = min(cand, key=lambda g: (groups.sizes[g], g))
                    assign[g] = b
                    moved = True
                    break
            if moved:
                break  # recount before the next move
        if not moved:
            return


def _shortfall(have: np.ndarray, need: np.ndarray, weight: np.ndarray) -> int:
    return int((np.maximum(need - have, 0) * weight).sum())


def _settle(groups: _Groups, assign: np.ndarray, need: np.ndarray, pinned: np.ndarray,
            weight: np.ndarray) -> None:
    """`_repair`, then, while a need is still short, the move or swap of two groups that lowers the
    weighted shortfall most for the first shortfall that one can lower, and `_repair` again.

    The greedy repair moves one group at a time and never takes a class's last group from its side, so
    it stalls where only an exchange helps: specimens s0 {c0, c1}, s1 {c0}, s2 {c0, c1} with s0 in val
    and s2 in test leave c1 out of train, although s0 -> train, s1 -> val keeps every class wherever it
    is needed. `weight` (per bin) says which needs count more: a class missing from train is worse than
    one missing from a held-out side, since no model can learn it. Ties go to the smallest groups moved,
    then the lower indices. Every accepted step lowers the shortfall, so the loop ends."""
    bins = need.shape[1]
    member = groups.member.astype(int)
    while True:
        _repair(groups, assign, need, pinned)
        have = _presence(groups, assign, bins)
        cost = _shortfall(have, need, weight)
        if cost == 0:
            return
        step = None
        for c, b in np.argwhere(have < need):  # the first shortfall that some step lowers gets it
            in_b = np.flatnonzero((assign == b) & ~pinned)
            hs = np.concatenate([[-1], in_b])  # -1: g moves alone
            m_h = np.vstack([np.zeros((1, member.shape[1]), int), member[in_b]])
            h_sizes = np.concatenate([[0], groups.sizes[in_b]])
            best = None
            for g in groups.of_class(c):
                d = assign[g]
                if d == b or pinned[g]:
                    continue
                # g moves d -> b, and the candidate h in b (or none) moves b -> d.
                new_b = have[:, b] + member[g] - m_h
                new_d = have[:, d] - member[g] + m_h
                rest = cost - _shortfall(have[:, [b, d]], need[:, [b, d]], weight[[b, d]])
                after = (rest + (np.maximum(need[:, b] - new_b, 0) * weight[b]).sum(1)
                         + (np.maximum(need[:, d] - new_d, 0) * weight[d]).sum(1))
                sizes = groups.sizes[g] + h_sizes
                i = np.lexsort((hs, sizes, after))[0]
                key = (int(after[i]), int(sizes[i]), int(g), int(hs[i]))
                if after[i] < cost and (best is None or key < best[0]):
                    best = (key, g, int(hs[i]), d)
            if best is not None:
                step = (best[1], b, best[2], best[3])
                break
        if step is None:
            return
        g, b, h, d = step
        assign[g] = b
        if h >= 0:
            assign[h] = d


def _check_fractions(val: float, test: float) -> None:
    for name, f in (("val", val), ("test", test)):
        if not 0 <= f < 1:
            raise UsageError(f"--{name} must be in [0, 1), got {f}")
    if val + test >= 1:
        raise UsageError(f"--val + --test must leave something to train on, got {val} + {test} = {val + test:g}")
    if val == 0 and test == 0:
        raise UsageError("nothing to hold out: give --val or --test above 0")


def _fold_plan(val: float, test: float, n_max: int) -> tuple[int, int, int] | None:
    """(n folds, folds for test, folds for val) whose shares come nearest to the fractions asked;
    the fewest folds among equals. None when there are too few groups for a fold per side."""
    best, best_key = None, None
    for n in range(2, min(n_max, _MAX_FOLDS) + 1):
        for mt in (range(1, n) if test > 0 else [0]):
            for mv in (range(1, n) if val > 0 else [0]):
                if mt + mv >= n:
                    continue
                key = (round(abs(mt / n - test) + abs(mv / n - val), 9), n)
                if best_key is None or key < best_key:
                    best, best_key = (n, mt, mv), key
    return best


def _split_sides(items: Sequence[Item], *, val: float, test: float, seed: int) -> tuple[np.ndarray, list[str]]:
    """Side (0 train, 1 val, 2 test) of each item, and the warnings."""
    _check_fractions(val, test)
    if not items:
        raise DataError("no items to split")
    groups = _index_groups(items)
    n_groups, n_classes = len(groups.names), len(groups.classes)
    assign = np.full(n_groups, _TRAIN)  # side of each group
    item_class = np.searchsorted(groups.classes, [it.label for it in items])
    class_sizes = np.bincount(item_class, minlength=n_classes)
    plan = _fold_plan(val, test, min(n_groups, int(class_sizes.max())))
    if plan is not None:
        n, mt, mv = plan
        fold = _initial_folds(items, groups, n, seed)
        assign[fold < mt] = _TEST
        assign[(fold >= mt) & (fold < mt + mv)] = _VAL

    held_out = [s for s, f in ((_VAL, val), (_TEST, test)) if f > 0]
    need = np.zeros((n_classes, 3), dtype=int)
    pinned = np.zeros(n_groups, dtype=bool)
    messages = []
    for c, name in enumerate(groups.classes):
        mine = groups.of_class(c)
        if len(mine) == 1:
            g = mine[0]
            pinned[g] = True
            assign[g] = _TRAIN
            n = int(np.count_nonzero((groups.of_item == g) & (item_class == c)))  # the class's, not the group's
            what = (f"a single group ({groups.names[g]!r}, {n} image{'s' if n != 1 else ''})"
                    if groups.names[g] is not None else "a single image")
            messages.append(f"class {name!r} has {what}: it cannot be held out and stays in train")
            continue
        need[c, _TRAIN] = 1
        if len(mine) == 2 and len(held_out) == 2:
            # Train must see the class; of val and test, test gives the figures people quote.
            need[c, _TEST] = 1
            messages.append(f"class {name!r} has only 2 {groups.unit}: one stays in train, the other goes to "
                            "test; val has none of it")
        else:
            need[c, held_out] = 1
    # Training must see every class it can; that outweighs any number of held-out gaps.
    _settle(groups, assign, need, pinned, np.array([int(need.sum()) + 1, 1, 1]))
    have = _presence(groups, assign, 3)
    for c, s in np.argwhere(have < need):
        messages.append(f"class {groups.classes[c]!r} has no {groups.unit[:-1]} in {SIDES[s]}: none could be moved "
                        "there without taking the last one of another class from its side")
    return assign[groups.of_item], messages


def stratified_group_split(items: Sequence[Item], *, val: float = 0.2, test: float = 0.0,
                           seed: int = 0) -> SplitResult:
    """Split items into train, val and test, keeping every group (specimen) on one side.

    Parameters
    ----------
    items : sequence of Item
        Labelled images; ``Item.group`` names the specimen an image came from (None: the image is a
        group of its own). A group whose images carry several labels still goes to one side.
    val, test : float, keyword-only
        Fractions to hold out, each in [0, 1), together below 1, not both 0. They are met per class
        as closely as whole groups allow.
    seed : int, keyword-only
        Same items, same seed, same split.

    Returns
    -------
    SplitResult
        ``train``, ``val``, ``test`` (each in input order) and ``warnings``.

    Raises
    ------
    UsageError
        A fraction out of range.
    DataError
        No items.

    Notes
    -----
    Rules, per class, counting groups that hold at least one image of the class:

    - 1 group: it stays in train and a warning names the class (it cannot be held out).
    - 2 groups, one held-out side asked: one in train, one held out.
    - 2 groups, val and test asked: one in train, one in test, none in val (warned).
    - 3 groups or more: at least one on each held-out side and one in train.

    The first assignment comes from ``StratifiedGroupKFold(shuffle=True, random_state=seed)`` over
    ``n`` folds, of which whole folds go to test and to val so that their shares come nearest to the
    fractions (0.2 -> 1 fold of 5, 0.3 -> 3 of 10). The repair then moves the smallest groups, and only
    as many as the rules need; where no single move helps, it exchanges two groups. A class missing from
    train weighs more than any gap in val or test.
    """
    sides, messages = _split_sides(items, val=val, test=test, seed=seed)
    parts = [[it for it, s in zip(items, sides) if s == side] for side in range(3)]
    return SplitResult(*parts, warnings=tuple(messages))


def stratified_group_kfold(items: Sequence[Item], *, k: int = 5, seed: int = 0) -> FoldResult:
    """Partition items into k folds of whole groups, stratified by class, for cross-validation.

    Parameters
    ----------
    items : sequence of Item
        Labelled images, grouped as in `stratified_group_split`.
    k : int, keyword-only
        Number of folds, from 2 to the number of groups.
    seed : int, keyword-only
        Same items, same seed, same folds.

    Returns
    -------
    FoldResult
        ``fold`` (the fold that tests each item; every item is tested exactly once), ``k``, ``warnings``
        and ``indices()`` for (train_idx, test_idx) pairs.

    Raises
    ------
    DataError
        ``k < 2``, or more folds than groups.

    Notes
    -----
    A class with at least k groups is in the test part of every fold. A class with fewer groups has
    them in different folds, so that training always sees it when it has 2 or more; a warning says how
    many folds test without it (and, for a single group, that the fold testing it trains without it).
    """
    if k < 2:
        raise DataError(f"k-fold cross-validation needs k >= 2 folds, got k={k}")
    if not items:
        raise DataError("no items to split")
    groups = _index_groups(items)
    n_groups = len(groups.names)
    if k > n_groups:
        raise DataError(f"k={k} folds need at least {k} {groups.unit} to hold out; the data has {n_groups}")
    assign = _initial_folds(items, groups, k, seed)
    need = np.zeros((len(groups.classes), k), dtype=int)
    have = _presence(groups, assign, k)
    fold_sizes = np.bincount(assign, weights=groups.sizes, minlength=k)
    for c in range(len(groups.classes)):
        n_c = len(groups.of_class(c))
        if n_c >= k:
            need[c] = 1
        else:  # spread: keep the folds that hold it, add the emptiest others until n_c folds are asked
            extra = sorted(np.flatnonzero(have[c] == 0), key=lambda f: (fold_sizes[f], f))
            need[c, have[c] > 0] = 1
            need[c, extra[: n_c - int((have[c] > 0).sum())]] = 1
    _settle(groups, assign, need, np.zeros(n_groups, dtype=bool), np.ones(k, dtype=int))
    have = _presence(groups, assign, k)
    messages = []
    for c, name in enumerate(groups.classes):
        n_c = len(groups.of_class(c))
        missing = int((have[c] == 0).sum())
        if n_c < k:
            msg = f"class {name!r} has {n_c} {groups.unit if n_c > 1 else groups.unit[:-1]} for k={k} folds: " \
                  f"{missing} fold(s) test without it"
            if n_c == 1:
                msg += ", and the fold that tests it trains without it"
            messages.append(msg)
        elif missing:
            messages.append(f"class {name!r} is missing from the test part of {missing} fold(s): no group could be "
                            "moved there without taking the last one of another class from its fold")
    return FoldResult(assign[groups.of_item], k, tuple(messages))


def compile_group_regex(regex: str | re.Pattern) -> re.Pattern:
    """The `--group-by` pattern, compiled; an invalid one is a UsageError (exit 2)."""
    if isinstance(regex, re.Pattern):
        return regex
    try:
        return re.compile(regex)
    except re.error as exc:
        raise UsageError(f"--group-by '{regex}' is not a valid regular expression: {exc}") from None


def groups_from_names(items: Sequence[Item], regex: str | re.Pattern) -> list[Item]:
    """Items with their group taken from the file name (`--group-by REGEX`).

    Parameters
    ----------
    items : sequence of Item
        Labelled images; an existing group is replaced.
    regex : str or re.Pattern
        Searched (``re.search``) in the base name of each path. The group is the first capture group
        when the pattern has one, else the whole match: ``r"^(\\w+?)_\\d+\\.png$"`` or ``r"specimen\\d+"``.

    Returns
    -------
    list of Item
        The same items in the same order, each with its group.

    Raises
    ------
    UsageError
        An invalid regular expression.
    DataError
        A file name the pattern does not match, or where its capture group is empty. Such a file is not
        made a group of its own: a silent one-image group could put a specimen's sibling on the other
        side of the split. The message names the files (the first three) and the pattern.
    """
    pattern = compile_group_regex(regex)
    out, unmatched = [], []
    for it in items:
        m = pattern.search(os.path.basename(it.path))
        key = (m.group(1) if pattern.groups else m.group(0)) if m else None
        if not key:
            unmatched.append(it.path)
        else:
            out.append(replace(it, group=key))
    if unmatched:
        more = f" and {len(unmatched) - 3} more" if len(unmatched) > 3 else ""
        raise DataError(f"--group-by '{pattern.pattern}' finds no group in {len(unmatched)} file name(s): "
                        f"{', '.join(unmatched[:3])}{more}")
    return out


def per_class_counts(splits: Mapping[str, Sequence[Item]], classes: Sequence[str], *,
                     groups: bool = False) -> dict[str, dict[str, int]]:
    """``counts[split][class]``: images (or, with ``groups=True``, distinct groups) of each class on each
    side. Every class is listed on every side, 0 included; an ungrouped image counts as its own group."""
    out = {}
    for name, items in splits.items():
        if groups:
            seen: dict[str, set] = {c: set() for c in classes}
            for i, it in enumerate(items):
                seen.setdefault(it.label, set()).add(it.group if it.group is not None else ("\0", i))
            out[name] = {c: len(seen[c]) for c in classes}
        else:
            counts = {c: 0 for c in classes}
            for it in items:
                counts[it.label] = counts.get(it.label, 0) + 1
            out[name] = {c: counts[c] for c in classes}
    return out


# --- the manifest `microcli split` writes --------------------------------------------------------------

@dataclass(frozen=True)
class SplitManifest:
    """What `write_split_manifest` wrote: the file, the classes, the split and whether groups were known."""

    path: Path
    classes: list[str]
    result: SplitResult
    grouped: bool


def _manifest_path(path: str, folder: str) -> str:
    """Relative to the manifest's folder when the image lies under it (the tree can move as a whole),
    else absolute. `discover` reads both back."""
    full = os.path.abspath(path)
    rel = os.path.relpath(full, folder)
    outside = rel == os.pardir or rel.startswith(os.pardir + os.sep)
    return full if outside else Path(rel).as_posix()


def write_split_manifest(data: str | Path, output: str | Path, *, val: float = 0.2, test: float = 0.0,
                         seed: int = 0, group_by: str | None = None, force: bool = False) -> SplitManifest:
    """Split a data set and write it as a CSV manifest ``path,label,group,split``.

    Parameters
    ----------
    data : str or Path
        Class folders or a CSV manifest (``path,label[,group]``), as `microcli.data.discover` reads them;
        not already split.
    output : str or Path
        The manifest to write, atomically (a temporary file renamed into place). Rows keep the order
        of `data`; paths are relative to the manifest's folder when the images lie under it.
    val, test, seed
        As in `stratified_group_split`.
    group_by : str, optional
        A regular expression for `groups_from_names`; it replaces any group column of a manifest.
    force : bool
        Replace an existing output. An input is never overwritten.

    Raises
    ------
    UsageError
        A fraction out of range or an invalid regular expression (checked before anything is read).
    OutputExistsError
        The output exists (without ``force``), is a folder, or is one of the inputs.
    DataError
        Data that cannot be read, is already split, or does not match ``group_by``.
    """
    output = Path(output)
    _check_fractions(val, test)
    pattern = compile_group_regex(group_by) if group_by is not None else None
    if output.is_dir():
        raise OutputExistsError(f"{output}: is a folder; give a file name for the manifest")
    from .outputs import check_output_path

    check_output_path(output, "--output")
    if output.exists() and not force:
        raise OutputExistsError(f"{output}: exists (use --force to overwrite)")
    found = discover(data)
    if found.presplit:
        parts = ", ".join(s for s in SIDES if s in found.splits)
        raise DataError(f"{data}: already split ({parts}); give unsplit class folders or a "
                        "manifest without a 'split' column")
    items = found.items()
    target = output.resolve()
    if target == Path(data).resolve() or any(Path(it.path).resolve() == target for it in items):
        raise OutputExistsError(f"{output}: is an input; write the manifest elsewhere")
    if pattern is not None:
        items = groups_from_names(items, pattern)
    sides, messages = _split_sides(items, val=val, test=test, seed=seed)

    folder = os.path.abspath(output.parent)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "label", "group", "split"])
            for it, s in zip(items, sides):
                w.writerow([_manifest_path(it.path, folder), it.label, it.group or "", SIDES[s]])
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    parts = [[it for it, s in zip(items, sides) if s == side] for side in range(3)]
    return SplitManifest(output, found.classes, SplitResult(*parts, warnings=tuple(messages)),
                         any(it.group is not None for it in items))
