"""report.html: one self-contained page, opened in a real headless browser.

The browser is Debian's chromium, driven through its chromedriver by selenium (`make test`
installs both where apt-get can). selenium's Service is pointed at the chromedriver found on the
PATH, so that selenium-manager never looks for a driver on the network. Without a browser the
browser test is skipped, saying so; the checks of the HTML text run everywhere.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from harness.report import write_report
from harness.report.html import render_html
from test_report import prepared_data, write_plan, write_run

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
BROWSER = next((found for name in BROWSERS if (found := shutil.which(name))), None)
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    """report.html of test_report's hand-made tree (as its `suite` fixture builds it), once."""
    root = tmp_path_factory.mktemp("html")
    suite, data = root / "demo", prepared_data(root / "data")
    for objective, seeds in (("clm", 3), ("mlm", 2)):
        for seed in range(seeds):
            write_run(suite, objective, seed, data)
    write_plan(suite / "unfinished-run", "prefix_lm", 0, data)
    write_report(suite, "Demo", "Two objectives, <b>not bold</b>.")
    return suite / "report.html"


def test_report_html_is_one_file_with_its_plots_inline_and_nothing_from_the_network(report_html):
    html = report_html.read_text()
    md = (report_html.parent / "report.md").read_text()
    pngs = re.findall(r"!\[[^]]*\]\((plots/[^)]+\.png)\)", md)
    sources = re.findall(r'<img [^>]*src="([^"]*)"', html)
    assert len(sources) == len(pngs) >= 4 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"https?://", html) and "<script" not in html.lower()
    assert 'id="headline"' in html and "<title>Demo</title>" in html
    assert "&lt;b&gt;not bold&lt;/b&gt;" in html  # raw HTML of a description stays text
    assert html.count("<table") == len(re.findall(r"^\|:", md, flags=re.M)) >= 5  # every markdown table rendered


def test_an_image_that_is_not_a_file_of_the_suite_becomes_its_alt_text(tmp_path):
    html = render_html("# T\n\n![remote](https://example.org/x.png)\n\n![gone](plots/gone.png)\n\n"
                       "![outside](../secret.png)", tmp_path / "suite", "T")
    assert "<img" not in html and "example.org" not in html
    assert "[image not available: remote]" in html and "[image not available: gone]" in html


@pytest.fixture(scope="module")
def browser():
    if BROWSER is None or DRIVER is None:
        pytest.skip(f"no headless browser: chromium {BROWSER or 'not found'}, chromedriver {DRIVER or 'not found'} "
                    "on the PATH (`make test` installs Debian's chromium and chromium-driver where apt-get works)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1800"):
        options.add_argument(argument)  # no sandbox: the tests may run as root, as in CI containers
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def rendered_images(driver) -> list[dict]:
    return driver.execute_script(
        "return Array.from(document.images).map(i => ({src: i.src.slice(0, 40), complete: i.complete, "
        "width: i.naturalWidth}))")


def console_errors(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_the_checks_see_a_broken_image_and_a_console_error(browser, tmp_path):
    """The browser checks below could fail: on a page that is broken they do."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head>'
                    '<body><img src="missing.png"></body></html>')
    browser.get(page.as_uri())
    assert [image["width"] for image in rendered_images(browser)] == [0]
    assert any("missing.png" in entry["message"] for entry in console_errors(browser))


def test_report_html_renders_in_a_real_browser(browser, report_html, tmp_path):
    browser.get(report_html.as_uri())
    images = rendered_images(browser)
    assert len(images) >= 4
    assert all(image["complete"] and image["width"] > 0 for image in images), images
    assert console_errors(browser) == []
    headline = browser.find_element("id", "headline")
    assert headline.is_displayed() and headline.text == "Headline"
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot))
    pixels = imread(shot)
    assert shot.stat().st_size > 0 and pixels.shape[0] > 0 and pixels.shape[1] > 0
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 1  # not a blank page
