"""The self-contained HTML report: what it claims, what it lists, and what a real browser renders."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from microcli.cli.app import app

runner = CliRunner()
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "headless_shell")


class Page(HTMLParser):
    """What the page shows: cards (kind, path), the misclassified section's claims, listed rows, sources."""

    def __init__(self, text: str):
        super().__init__()
        self.cards: list[tuple[str, str]] = []
        self.claims: dict[str, int] = {}
        self.listed: list[str] = []
        self.sources: list[str] = []
        self._in_list = self._cell = False
        self._row: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        if tag == "figure" and "card" in cls:
            self.cards.append(("miss" if "miss" in cls else "correct", a["data-path"]))
        if tag == "section" and a.get("id") == "misclassified" and "data-total" in a:
            self.claims = {"total": int(a["data-total"]), "shown": int(a["data-shown"])}
        if tag == "table" and "list" in cls:
            self._in_list = True
        if self._in_list and tag == "td":
            self._cell = True
        for key in ("src", "href"):
            if a.get(key):
                self.sources.append(a[key])

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_list = False
        if tag == "td":
            self._cell = False
        if tag == "tr" and self._row:
            self.listed.append(self._row[0])
            self._row = []

    def handle_data(self, data):
        if self._cell:
            self._row.append(data)


@pytest.fixture(scope="module")
def eval_set(squares, tmp_path_factory):
    """The training images plus five deliberately mislabelled copies: at least five certain errors."""
    root = tmp_path_factory.mktemp("evalset")
    for cls in ("plain", "square"):
        shutil.copytree(squares / cls, root / cls)
    for i in range(3):
        shutil.copy(squares / "plain" / f"plain_{i:03d}.png", root / "square" / f"wrong_plain_{i}.png")
    for i in range(2):
        shutil.copy(squares / "square" / f"square_{i:03d}.png", root / "plain" / f"wrong_square_{i}.png")
    return root


@pytest.fixture(scope="module")
def evaluated(squares_run, eval_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("html")
    r = runner.invoke(app, ["evaluate", str(squares_run), str(eval_set), "--html", str(out / "report.html"),
                            "--json", str(out / "report.json"), "--workers", "0", "-q"])
    assert r.exit_code == 0, r.stderr
    return out / "report.html", json.loads((out / "report.json").read_text())


def test_the_page_lists_every_misclassified_image_it_claims(evaluated):
    path, report = evaluated
    page = Page(path.read_text())
    wrong = [m["path"] for m in report["misclassified"]]
    assert page.claims["total"] == len(wrong) >= 5
    miss_cards = [p for kind, p in page.cards if kind == "miss"]
    assert len(miss_cards) == page.claims["shown"] == len(wrong)  # few errors: all shown
    assert miss_cards == wrong  # worst first, the report's order
    assert {f"wrong_plain_{i}.png" for i in range(3)} <= {Path(p).name for p in miss_cards}
    assert f"{len(wrong)} image(s) misclassified; all {len(wrong)} shown" in path.read_text()


def test_the_page_is_self_contained(evaluated):
    path, _ = evaluated
    text = path.read_text()
    page = Page(text)
    assert page.sources and all(s.startswith(("data:image/", "#")) for s in page.sources)
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", text)  # no CDN, no server
    assert "Training curves" in text and "data:image/png" in text  # the run's metrics.csv, drawn inline
    correct = [p for kind, p in page.cards if kind == "correct"]
    assert 1 <= len(correct) <= 2 * 3  # a few per class for contrast


def test_caps_are_stated_and_kept(squares_run, eval_set, tmp_path):
    from microcli.evaluate import evaluate
    from microcli.html_report import write_html_report

    result = evaluate(squares_run, eval_set)
    n = len(result.report["misclassified"])
    out = write_html_report(tmp_path / "r.html", result, model=squares_run, max_misclassified=2, table_rows=1,
                            correct_per_class=1)
    text = out.read_text()
    page = Page(text)
    assert page.claims == {"total": n, "shown": 2}
    assert [p for k, p in page.cards if k == "miss"] == [m["path"] for m in result.report["misclassified"][:2]]
    assert page.listed == [result.report["misclassified"][2]["path"]]
    assert "the worst 2 shown" in text and f"{n - 3} more left out" in text
    assert len([p for k, p in page.cards if k == "correct"]) == 2


def test_train_writes_report_html(squares_run):
    page = Page((squares_run / "report.html").read_text())
    assert page.claims == {} or page.claims["shown"] <= page.claims["total"]
    assert len([k for k, _ in page.cards if k == "correct"]) >= 1


def test_cross_validation_writes_cv_report_html(squares, tmp_path):
    from microcli.config import TrainConfig
    from microcli.crossval import cross_validate

    result = cross_validate(TrainConfig(data=str(squares), out=str(tmp_path / "cv"), arch="lenet", epochs=2,
                                        img_size=48, workers=0, folds=2))
    text = (result.run_dir / "cv_report.html").read_text()
    page = Page(text)
    assert "cross-validation: 2 folds" in text
    assert len(page.cards) >= 2 and all(Path(p).exists() for _, p in page.cards)
    assert "data:image/png" in text  # the folds' curves


# --- a real browser ------------------------------------------------------------------------------------

def _browser() -> str | None:
    found = os.environ.get("MICROCLI_BROWSER") or next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    return found


needs_browser = pytest.mark.skipif(_browser() is None, reason="no headless Chromium or Chrome on PATH (Debian: "
                                                              "apt-get install chromium; or set MICROCLI_BROWSER)")


def _chromium(*args: str) -> subprocess.CompletedProcess:
    cmd = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
           "--no-first-run", "--user-data-dir=" + os.environ.get("TMPDIR", "/tmp") + f"/microcli-chromium-{os.getpid()}",
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@needs_browser
def test_the_browser_renders_every_picture_and_the_page_script_runs(evaluated):
    path, report = evaluated
    r = _chromium("--virtual-time-budget=10000", "--dump-dom", path.resolve().as_uri())
    assert r.returncode == 0, r.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", r.stdout).group(1)
    attrs = dict(re.findall(r'data-([\w-]+)="([^"]*)"', body))
    assert attrs.get("checked") == "yes", "the page's own script did not run"
    n_cards = len(Page(path.read_text()).cards)
    assert int(attrs["images"]) == 2 * n_cards + 1  # micrograph + heat map per card, and the curves
    assert attrs["broken-images"] == "0"
    assert int(attrs["miss-cards"]) == len(report["misclassified"])
    assert "pictures inline" in r.stdout  # the header line the script rewrote


@needs_browser
def test_the_rendered_page_shows_the_report(evaluated, tmp_path):
    path, _ = evaluated
    shot = tmp_path / "shot.png"
    r = _chromium(f"--screenshot={shot}", "--window-size=1280,2000", path.resolve().as_uri())
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    px = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert px.shape[:2] == (2000, 1280)
    assert (px.sum(-1) < 600).mean() > 0.02  # not a blank page: text, tables and pictures
    blue = (np.abs(px - [0, 114, 178]).sum(-1) < 30).sum()  # the Okabe-Ito blue rules under the headings
    dark_cells = ((px[..., 2] > px[..., 0] + 60) & (px[..., 0] < 60)).sum()  # the matrices' dark diagonals
    assert blue > 500 and dark_cells > 1000
