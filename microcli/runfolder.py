"""The run folder: the one writer of everything `microcli train` leaves on disk.

Only rank 0 of a distributed run writes; on the other ranks every method is a no-op, so the trainer
needs no rank checks of its own. Files are written atomically, and only the names in `RUN_FILES` are
ever replaced or removed: the user's other files in the folder are left alone.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from .checkpoint import Bundle, load_bundle, save_bundle
from .data import Item, write_split_csv
from .errors import OutputExistsError, UsageError
from .io import TMP_MARK, atomic_open

REPORT_FILES = tuple(f"val_{n}" for n in ("report.json", "report.txt", "per_class.csv", "confusion.csv",
                                          "misclassified.csv", "confusion.png"))  # report.REPORT_NAMES
# Written before the first epoch ends; a folder holding only these never trained and may be replaced.
START_FILES = ("config.json", "split.csv", "skipped.csv")
RUN_FILES = ("best.pt", "last.pt", "metrics.csv", "curves.png", "report.html", *START_FILES, *REPORT_FILES)
CV_FILES = ("config.json", "folds.csv", "cv_report.json", "cv_report.txt", "cv_report.html", "cv_predictions.csv")


def check_run_path(out: str | Path, data: str | Path) -> None:
    """Before anything is read: RUN can be a folder (no file there or above it), and it is not inside the data
    folder, where its plots and reports would be read as images of a class by the next run.

    Raises
    ------
    UsageError
    """
    from .errors import UsageError
    from .outputs import check_output_path

    check_output_path(out, "--out", folder=True)
    if Path(data).is_dir() and Path(out).resolve().is_relative_to(Path(data).resolve()):
        raise UsageError(f"--out {out}: lies inside the data folder {data}, where the run's plots and reports would "
                         "be read as images by the next run; put the run folder elsewhere")


def clear_previous_run(path: Path) -> None:
    """What an earlier run (plain or cross-validation) wrote in `path`, before `--force` puts a new one there:
    its files, and its fold-N/ and final/ folders (those holding a config.json, so microcli's). The user's own
    files stay."""
    import re
    import shutil

    for name in {*RUN_FILES, *CV_FILES}:
        (path / name).unlink(missing_ok=True)
    for sub in path.iterdir():
        if sub.is_dir() and not sub.is_symlink() and re.fullmatch(r"fold-\d+|final", sub.name) \
                and (sub / "config.json").is_file():
            shutil.rmtree(sub)


class RunFolder:
    """Rank 0's writer of a run folder (see the README for its files).

    Parameters
    ----------
    path : str or Path
        The folder.
    main : bool, default True
        False on the other ranks of a distributed run: nothing is written.

    Attributes
    ----------
    path : Path
    main : bool
    """

    def __init__(self, path: str | Path, *, main: bool = True):
        self.path = Path(path)
        self.main = main

    @classmethod
    def open(cls, path: str | Path, *, resume: bool, force: bool, main: bool = True) -> RunFolder:
        """Check the folder before any data is read.

        A new run needs an empty or missing folder, or `force`, or a folder left by a run that never
        finished an epoch (only config.json / split.csv / skipped.csv). `resume` needs last.pt. Stale
        temporary files of a killed run are removed in every case.

        With `force`, only the files in `RUN_FILES` are deleted; a folder left before the first epoch has its
        config.json, split.csv and skipped.csv deleted. Nothing is deleted on ranks other than `main`.

        Parameters
        ----------
        path : str or Path
            The run folder; it need not exist (it is made by `write_start`).
        resume : bool
            Continue the run in the folder (``--resume``).
        force : bool
            Replace a trained run (``--force``).
        main : bool, default True
            False on the other ranks of a distributed run.

        Returns
        -------
        RunFolder

        Raises
        ------
        OutputExistsError
            The folder holds a trained run (or any file that is not one of those three and does not start
            with '.', the user's own included) and `force` is not set.
        UsageError
            `resume` and no last.pt.
        """
        run = cls(path, main=main)
        if resume:
            if not (run.path / "last.pt").is_file():
                raise UsageError(f"--resume {run.path}: no last.pt there to resume from (the run never finished "
                                 "an epoch; start it again without --resume)")
        elif run.path.is_dir() and any(run.path.iterdir()):
            if not force and run._trained():
                raise OutputExistsError(f"{run.path}: run folder exists and is not empty; use --force to overwrite "
                                        f"it, or --resume {run.path} to continue it")
            if main:
                if force:
                    clear_previous_run(run.path)
                run._clear(START_FILES)
        if main and run.path.is_dir():
            run._clear(())
        return run

    def _trained(self) -> bool:
        """Anything beyond what a run writes before its first epoch ends (or the user's own files)."""
        return any(not p.name.startswith(".") and p.name not in START_FILES for p in self.path.iterdir())

    def _clear(self, names: tuple[str, ...]) -> None:
        """Remove `names` and the temporary files a killed writer left (.<run file>.tmp<pid>)."""
        for name in names:
            (self.path / name).unlink(missing_ok=True)
        for p in self.path.glob(f".*{TMP_MARK}*"):
            if any(p.name.startswith(f".{name}{TMP_MARK}") for name in RUN_FILES):
                p.unlink(missing_ok=True)

    def load_last(self) -> Bundle:
        """last.pt, for resuming; metrics.csv is trimmed to its epoch (a kill between the two writes
        must not make the resumed run write an epoch twice).

        Every rank reads the file; only the main rank trims metrics.csv.

        Returns
        -------
        Bundle

        Raises
        ------
        CheckpointError
            last.pt is missing, unreadable or not a microcli bundle.
        """
        bundle = load_bundle(self.path / "last.pt")
        if self.main and bundle.training_state:
            self._trim_metrics(int(bundle.training_state.get("epoch", 0)))
        return bundle

    def _trim_metrics(self, epoch: int) -> None:
        path = self.path / "metrics.csv"
        if not path.is_file():
            return
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        kept = [r for r in rows if int(r["epoch"]) <= epoch]
        if len(kept) != len(rows):
            with atomic_open(path) as fh:
                w = csv.DictWriter(fh, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(kept)

    def write_start(self, *, splits: dict[str, list[Item]], skipped: list[tuple[str, str]], config: dict) -> None:
        """split.csv, skipped.csv (if any image was unreadable) and config.json, as training starts.

        Creates the folder if needed.

        Parameters
        ----------
        splits : dict of str to list of Item
            The items of each split ('train', 'val' and any held-out part), for split.csv.
        skipped : list of (str, str)
            (path, error) of the unreadable images, for skipped.csv.
        config : dict
            JSON-ready content of config.json.
        """
        if not self.main:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        write_split_csv(self.path / "split.csv", splits)
        if skipped:
            with atomic_open(self.path / "skipped.csv") as fh:
                csv.writer(fh).writerows([("path", "error"), *((path, error.removeprefix(f"{path}: "))
                                                              for path, error in skipped)])
        with atomic_open(self.path / "config.json") as fh:
            json.dump(config, fh, indent=2)
            fh.write("\n")

    def write_epoch(self, row: dict, *, best: Bundle | None, last: Bundle) -> None:
        """One finished epoch: a metrics.csv row, best.pt when it improved, and last.pt.

        Parameters
        ----------
        row : dict
            Column name to value; the header is written with the first row, floats with 6 significant
            digits.
        best : Bundle or None
            The model when the validation score improved, else None.
        last : Bundle
            The resumable state after this epoch.
        """
        if not self.main:
            return
        path = self.path / "metrics.csv"
        new = not path.exists()
        with open(path, "a", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        if best is not None:
            save_bundle(best, self.path / "best.pt")
        save_bundle(last, self.path / "last.pt")

    def save_last(self, bundle: Bundle) -> None:
        """Write last.pt alone (after an interrupted epoch, say).

        Parameters
        ----------
        bundle : Bundle
            The resumable state.
        """
        if self.main:
            save_bundle(bundle, self.path / "last.pt")

    def write_curves(self, rows: list[dict]) -> None:
        """Plot curves.png (loss and accuracy per epoch, train and validation); nothing without rows.

        Parameters
        ----------
        rows : list of dict
            The metrics.csv rows, one per epoch.
        """
        if self.main and rows:
            from .report import plot_curves

            plot_curves(self.path / "curves.png", rows)

    @property
    def has_best(self) -> bool:
        """True when best.pt exists in the folder (checked on every rank)."""
        return (self.path / "best.pt").is_file()
