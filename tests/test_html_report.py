"""The HTML report page: escaped, offline, and drawn by a real headless Chromium."""

from __future__ import annotations

import json
import re
import struct
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from browser import open_page

from pytest_dspy_local.core.results import GateSettings, PromptResult, RunReport, short_digest
from pytest_dspy_local.report.html import render_html

if TYPE_CHECKING:
    from playwright.sync_api import Locator
    from playwright.sync_api import Page as BrowserPage

SAMPLE = Path(__file__).parent / "data" / "report_sample.json"
ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "p", "b", "i", "span", "a",
    "table", "colgroup", "col", "tr", "th", "td", "section", "div", "ul", "li", "dl", "dt", "dd", "pre",
    "svg", "rect", "line", "path", "text", "polyline", "circle", "g",
}
URL_ATTRIBUTE = re.compile(r"""\b(?:src|href|srcset|action|poster|data)\s*=\s*["']?([^"'\s>]*)""", re.IGNORECASE)


class Page(HTMLParser):
    """The parsed page: every tag with its attributes, the text, and each history plot's marks."""

    def __init__(self, markup: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.plots: list[dict[str, Any]] = []
        self._plot: dict[str, Any] | None = None
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Record the tag; open or fill a history plot."""
        attributes = {k: v or "" for k, v in attrs}
        self.tags.append((tag, attributes))
        if tag == "svg" and "history-plot" in attributes.get("class", "").split():
            self._plot = {"circles": 0, "polylines": []}
            self.plots.append(self._plot)
        elif self._plot is not None and tag == "circle":
            self._plot["circles"] += 1
        elif self._plot is not None and tag == "polyline":
            self._plot["polylines"].append(len(attributes.get("points", "").split()))

    def handle_endtag(self, tag: str) -> None:
        """Close the history plot at its ``</svg>``."""
        if tag == "svg":
            self._plot = None

    def handle_data(self, data: str) -> None:
        """Keep the text as a browser would show it."""
        self.text.append(data)

    def with_class(self, css: str) -> list[dict[str, str]]:
        """Attributes of every tag carrying the CSS class."""
        return [a for _, a in self.tags if css in a.get("class", "").split()]


@pytest.fixture
def sample() -> dict[str, Any]:
    """A fresh copy of the sample report document, each prompt and stored baseline given the run's model."""
    document: dict[str, Any] = json.loads(SAMPLE.read_text(encoding="utf-8"))
    for prompt in document["prompts"]:  # the sample records the model once, for the run
        prompt.setdefault("model", dict(document["model"]))
        for point in prompt["history"]:
            point.setdefault("model", short_digest(document["model"]["digest"]))
    return document


def _html(document: dict[str, Any]) -> str:
    """The page for a report document, read back as the typed report the renderer takes."""
    return render_html(RunReport.from_json(document))


def _prompt(document: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(p for p in document["prompts"] if p["name"] == name)
    return found


def test_untrusted_text_is_escaped(sample: dict[str, Any]) -> None:
    evil = '<script>alert("x")</script>" onmouseover="steal()'
    triage = _prompt(sample, "triage")
    triage["name"] = triage["nodeid"] = evil
    triage["reasons"], triage["notes"] = [evil], [evil]
    triage["examples"][0].update(inputs={"ticket": evil, evil: 1}, expected={"team": evil}, got={"team": evil})
    triage["examples"][1].update(error=evil, got=None)
    triage["history"][0]["label"] = evil
    triage["baseline"]["test"] = evil
    triage["baseline"]["flipped_to_wrong"].append(evil)
    triage["prompt"] = {"current": evil, "baseline": evil + "\nold line"}
    for prompt in sample["prompts"]:
        prompt["model"]["model"] = evil
    markup = _html(sample)
    page = Page(markup)
    assert "<script" not in markup.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in markup
    assert {tag for tag, _ in page.tags} <= ALLOWED_TAGS
    assert not [name for _, attrs in page.tags for name in attrs if name.startswith("on")]
    assert "".join(page.text).count('<script>alert("x")</script>') >= 10  # shown as text, everywhere it occurs


def test_page_fetches_nothing(sample: dict[str, Any]) -> None:
    markup = _html(sample)
    assert "http://" not in markup and "https://" not in markup
    assert "@import" not in markup and "url(" not in markup
    targets = URL_ATTRIBUTE.findall(markup)
    assert targets and all(t.startswith("#") for t in targets), targets


def test_links_in_the_data_stay_text(sample: dict[str, Any]) -> None:
    links = '<a href="https://evil.example/x">x</a> <img src="//evil.example/p.png"> url(https://evil.example/f)'
    _prompt(sample, "sentiment")["examples"][0]["inputs"]["review"] = links
    page = Page(_html(sample))
    targets = [v for _, a in page.tags for k, v in a.items() if k in ("src", "href", "srcset", "style")]
    assert all(t.startswith("#") or ("url(" not in t and "//" not in t) for t in targets), targets
    assert links in "".join(page.text)


def test_summary_links_reach_sections(sample: dict[str, Any]) -> None:
    page = Page(_html(sample))
    ids = {a["id"] for _, a in page.tags if "id" in a}
    hrefs = [a["href"] for tag, a in page.tags if tag == "a"]
    assert len(page.with_class("summary")) == 1
    assert len(hrefs) >= 2 + 5 and all(h[1:] in ids for h in hrefs)


def test_flipped_rows_highlighted(sample: dict[str, Any]) -> None:
    page = Page(_html(sample))
    assert len(page.with_class("flip-wrong")) == 5
    assert not page.with_class("flip-right")
    _prompt(sample, "triage")["examples"][8].update(flip="to_right", score=1.0, baseline_score=0.0)
    assert len(Page(_html(sample)).with_class("flip-right")) == 1


def test_parse_failures_marked(sample: dict[str, Any]) -> None:
    page = Page(_html(sample))
    assert len(page.with_class("parse-failure")) == 2  # one per prompt in the sample
    assert "unparseable output: expected a JSON object" in "".join(page.text)


def test_history_plot_points(sample: dict[str, Any]) -> None:
    sentiment, triage = Page(_html(sample)).plots
    assert sentiment == {"circles": 1, "polylines": []}  # empty history: just this run's point
    assert triage == {"circles": 4, "polylines": [4]}  # three stored baselines, then this run
    markup = _html(sample)
    assert markup.count('class="threshold"') == 2 and "0.775" in markup


def test_minimal_document_still_draws() -> None:
    bare = PromptResult("prompt_bare.py::bare", "bare", "failed")
    page = Page(render_html(RunReport((bare,), GateSettings(alpha=0.05, min_delta=0.0, repeats=1))))
    assert page.plots == [{"circles": 1, "polylines": []}]
    assert "1 of 1 prompts failed" in "".join(page.text)
    assert "no baseline: gated on the threshold only" in "".join(page.text)


def test_no_baseline_said_plainly(sample: dict[str, Any]) -> None:
    text = "".join(Page(_html(sample)).text)
    assert text.count("no baseline: gated on the threshold only") == 1
    assert "no baseline prompt" in text and "McNemar exact (one-sided)" in text


def test_prompt_diff(sample: dict[str, Any]) -> None:
    page = Page(_html(sample))
    assert len(page.with_class("diff")) == 1
    assert page.with_class("add") and page.with_class("del")
    triage = _prompt(sample, "triage")
    triage["prompt"]["baseline"] = triage["prompt"]["current"]
    assert "unchanged since the baseline" in _html(sample)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_page_in_headless_chromium(sample: dict[str, Any], tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    report.write_text(_html(sample), encoding="utf-8")
    started = time.monotonic()
    with open_page(report, tmp_path / "profile") as (page, requests):
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        check_history_plots(page, [(1, 0), (4, 1)])
        assert page.locator("script").count() == 0
        assert "<script>alert('x')</script>" in page.inner_text("body")
    assert requests == [report.as_uri()]
    width, height = _png_size(tmp_path / "report.png")
    assert width >= 1000 and height >= 2000 and (tmp_path / "report.png").stat().st_size > 50_000
    assert time.monotonic() - started < 30


def check_history_plots(page: BrowserPage, marks: list[tuple[int, int]]) -> None:
    """Each history plot is visible, with the given (circles, polylines), all of non-zero size."""
    plots = page.locator("svg.history-plot")
    assert plots.count() == len(marks)
    for index, (circles, polylines) in enumerate(marks):
        plot = plots.nth(index)
        assert plot.is_visible()
        _assert_drawn(plot)
        assert plot.locator("circle").count() == circles and plot.locator("polyline").count() == polylines
        for mark in plot.locator("circle").all() + plot.locator("polyline").all():
            _assert_drawn(mark)


def _assert_drawn(locator: Locator) -> None:
    box = locator.bounding_box()
    assert box is not None and box["width"] > 0 and box["height"] > 0, box
