"""The leaderboard page in a real browser: headless Chromium loads it without console errors, shows the
overview matrix first with its colours, links the methods to their papers and takes a screenshot.

Skipped without a Chromium binary (``scripts/setup.sh`` installs Debian's ``chromium`` when it runs as root).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _browser import Chromium, Tab, chromium, find_chromium
from PIL import Image
from test_leaderboard import campaign

from benchmarks import leaderboard

CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium, or set UEB_CHROMIUM)"),
    pytest.mark.timeout(180),
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    assert CHROMIUM is not None
    with chromium(CHROMIUM, tmp_path_factory.mktemp("chromium-profile")) as b:
        yield b


@pytest.fixture(scope="module")
def tab(browser: Chromium, tmp_path_factory: pytest.TempPathFactory) -> Tab:
    """The page of the synthetic campaign of ``test_leaderboard``, loaded once for the module."""
    root = tmp_path_factory.mktemp("leaderboard")
    out = [
        "--results-dir",
        str(campaign(root / "cells")),
        "--out",
        str(root / "LB.md"),
        "--html",
        str(root / "lb.html"),
    ]
    assert leaderboard.main(out) == 0
    return browser.open((root / "lb.html").as_uri(), width=1280, height=900)


def test_console_errors_are_seen(browser: Chromium, tmp_path: Path) -> None:
    """The check below can fail: a page with errors of each kind shows them all."""
    page = tmp_path / "broken.html"
    page.write_text(
        '<!DOCTYPE html><html lang="en"><title>broken</title><img src="missing.png" alt="">'
        '<script>console.error("logged error"); console.log("not an error"); undefinedFunction();</script></html>'
    )
    errors = browser.open(page.as_uri()).console_errors()
    assert len(errors) == 3, errors
    assert any("missing.png" in e and "ERR_FILE_NOT_FOUND" in e for e in errors)
    assert "logged error" in errors and any("undefinedFunction is not defined" in e for e in errors)


def test_page_has_no_console_errors_and_loads_nothing(tab: Tab) -> None:
    assert tab.console_errors() == []
    assert tab.evaluate("performance.getEntriesByType('resource').length") == 0, "self-contained: no requests"
    assert tab.evaluate("document.scripts.length") == 0
    assert tab.evaluate("document.title") == "uebench leaderboard"


def test_overview_first_then_methods_details_failed(tab: Tab) -> None:
    order = tab.evaluate(
        "[...document.querySelectorAll('main > section')].map(s => [s.id, s.getBoundingClientRect().top])"
    )
    assert [name for name, _ in order] == ["overview", "methods", "details", "failed"]
    assert [top for _, top in order] == sorted(top for _, top in order)
    assert tab.evaluate("document.querySelectorAll('table.overview').length") == 1
    overview_top = tab.evaluate("document.querySelector('table.overview').getBoundingClientRect().top")
    assert overview_top < 900, "the overview matrix is in the first screen"
    toc = tab.evaluate("[...document.querySelectorAll('nav a')].map(a => a.getAttribute('href'))")
    assert toc == ["#overview", "#overview-1", "#methods", "#details", "#details-1", "#failed"]
    dangling = tab.evaluate(
        "[...document.querySelectorAll('a[href^=\"#\"]')].map(a => a.getAttribute('href'))"
        ".filter(h => !document.getElementById(h.slice(1)))"
    )
    assert dangling == []


def _overview(tab: Tab) -> dict[str, list[dict[str, object]]]:
    """Row header -> the cells of its row: text, title, class and whether the text is bold."""
    return tab.evaluate(
        "Object.fromEntries([...document.querySelectorAll('table.overview tbody tr')].map(tr => ["
        "tr.querySelector('th').textContent, [...tr.querySelectorAll('td')].map(td => ({"
        "text: td.innerText.replace(/\\s+/g, ' ').trim(), title: td.title, css: td.className,"
        "bold: td.querySelector('strong') !== null}))]))"
    )


def test_overview_gap_matrix(tab: Tab) -> None:
    headers = tab.evaluate("[...document.querySelectorAll('table.overview thead th')].map(th => th.textContent)")
    assert headers == ["method", "none", "at4"]
    rows = _overview(tab)
    assert list(rows) == ["clean", "em", "sc", "sem (samples=1)", "sem (samples=3)"]
    clean, em, sc = rows["clean"], rows["em"], rows["sc"]
    assert [c["text"] for c in clean] == ["80.0 ± 0.0", "82.0 ± 0.0"]  # the clean accuracy itself
    # em - clean per seed: -50, -40 under none (mean -45, t(0.975, 1) * 5 = 63.5); -30, -24 under at4
    assert em[0]["text"] == "-45.0 [-108.5, +18.5]" and em[1]["text"] == "-27.0 [-90.5, +36.5]"
    assert "95% CI [-108.5, +18.5] pp, paired p = 0.0704, seeds 0 1; rank 1" in em[0]["title"]
    assert em[0]["bold"] and em[0]["css"] == "g-3 best r"  # tied with sem (samples=3) for the strongest
    assert not rows["sem (samples=1)"][0]["bold"] and rows["sem (samples=1)"][1]["css"] == "g-2 r"
    assert rows["sem (samples=3)"][0]["css"] == "g-4 best r"  # -60 pp: the darkest bin
    assert sc[0]["text"] == "-35.0 †" and "one common seed (seed 0): no interval" in sc[0]["title"]
    assert not sc[0]["bold"] and sc[1] == {"text": "", "title": "", "css": "r", "bold": False}


def test_method_names_link_to_their_papers(tab: Tab) -> None:
    links = tab.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#methods li')]"
        ".map(li => [li.id, li.querySelector('a').href]))"
    )
    assert links == {
        "method-em": "https://arxiv.org/abs/2101.04898",
        "method-sc": "https://arxiv.org/abs/2111.00898",
        "method-sem": "https://arxiv.org/abs/2311.13091",
    }
    row_links = tab.evaluate(
        "[...document.querySelectorAll('table.overview tbody th')].map(th => th.querySelector('a')?.hash ?? null)"
    )
    assert row_links == [None, "#method-em", "#method-sc", "#method-sem", "#method-sem"]  # clean: no paper


def test_devices_said_once_per_section_and_details_collapse(tab: Tab) -> None:
    facts = tab.evaluate("[...document.querySelectorAll('.facts')].map(p => p.textContent)")
    assert len(facts) == 2 and facts[0] == facts[1]  # the overview's and the details' header of one section
    for fact in ("1000 training images", "preset smoke, recipe smoke-300", "seeds 0 1", "trained on cpu (2 threads)"):
        assert fact in facts[0]
    tables = "[...document.querySelectorAll('table')].map(t => t.textContent)"
    assert not [t for t in tab.evaluate(tables) if "cpu" in t], "no device in any table"
    visible = "[...document.querySelectorAll('#details table')].map(t => t.checkVisibility())"
    assert tab.evaluate(visible) == [False, False], "detail tables start collapsed"
    at4 = "document.querySelectorAll('#details details')[1]"
    assert tab.evaluate(f"{at4}.querySelector('summary').textContent") == "defense at4"
    tab.evaluate(f"{at4}.open = true")
    assert tab.evaluate(visible) == [False, True]
    tab.evaluate(f"{at4}.open = false")


def test_screenshot_shows_the_coloured_matrix(tab: Tab, tmp_path: Path) -> None:
    shot = tab.screenshot(tmp_path / "leaderboard.png")
    with Image.open(shot) as image:
        rgb = image.convert("RGB")
    assert rgb.width == 1280 and 900 < rgb.height < 10_000, "the whole page, not only the viewport"
    assert len(rgb.getcolors(maxcolors=1 << 20) or []) > 100, "text, tables and colours, not a blank page"
    # the background of two overview cells, just inside their border, is their bin's colour in the palette
    corners = tab.evaluate(
        "[...document.querySelectorAll('table.overview tbody tr')[3].querySelectorAll('td')].map(td => {"
        "const r = td.getBoundingClientRect(); return [r.left + 3 + scrollX, r.top + 3 + scrollY]; })"
    )
    for (x, y), level in zip(corners, (-3, -2), strict=True):  # sem (samples=1): -30 and -12 pp
        expected = leaderboard.PALETTE[level][0].lstrip("#")
        assert rgb.getpixel((round(x), round(y))) == tuple(int(expected[i : i + 2], 16) for i in (0, 2, 4))
