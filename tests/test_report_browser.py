"""The report as a user sees it: opened in headless Chromium, every figure loads, a text run's
gate explorer loads in its frame, and the browser logs no error.

Runs where selenium, Chromium and chromedriver are installed (Debian: ``apt-get install chromium
chromium-driver``; ``.ci/run`` installs them), and is skipped, saying so, elsewhere. The
browser is started offline: its own empty profile, and none of the background calls home
(updates, sync, QUIC) that it makes by default."""

import contextlib
import shutil
import tempfile

import pytest

from gatedrnn.cli import main

NO_BROWSER = ("no headless browser here: install selenium, Chromium and chromedriver (Debian: apt-get install "
              "chromium chromium-driver) to run the tests that open pages in a browser")  # fmt: skip
OFFLINE = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync")  # fmt: skip

# what the page tells once loaded: its heading, each image's source, load state and width, its frames
READ_PAGE = """return {
  title: document.title, heading: document.querySelector('h1').textContent,
  images: Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]),
  frames: Array.from(document.querySelectorAll('iframe')).map(f => f.getAttribute('src')),
  links: Array.from(document.querySelectorAll('figure a')).map(a => a.getAttribute('href')),
  captions: document.querySelectorAll('figcaption').length,
  cells: document.querySelectorAll('td').length };"""


@contextlib.contextmanager
def chromium():
    """A selenium driver of headless Chromium, offline, that keeps the console's messages; a
    skip where selenium, Chromium or chromedriver is missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip(NO_BROWSER)
    binary = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver_path = shutil.which("chromedriver")
    if not (binary and driver_path):  # a driver on PATH: selenium downloads nothing
        pytest.skip(NO_BROWSER)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for flag in OFFLINE + (f"--user-data-dir={profile}", "--window-size=1200,1000"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, read by console_errors
        driver = webdriver.Chrome(options=options, service=Service(driver_path))
        try:
            driver.set_page_load_timeout(60)
            yield driver
        finally:
            driver.quit()


def console_errors(driver) -> list:
    """The errors the page wrote to the console (an uncaught exception, a resource that failed
    to load, console.error) since the last call."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def read_report(url: str):
    """The report's page as READ_PAGE tells it, the explorer frame's characters (None where the
    report has no frame) and the console's errors."""
    with chromium() as driver:
        driver.get(url)  # returns after the load event: the images and frames are in
        page = driver.execute_script(READ_PAGE)
        characters = None
        if page["frames"]:
            driver.switch_to.frame(0)
            characters = driver.execute_script("return document.querySelectorAll('#text span').length")
            driver.switch_to.default_content()
        return page, characters, console_errors(driver)


def test_the_report_opens_in_a_browser_with_every_figure(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--task", "adding", "--cell", "gru", "--length", "8", "--hidden-size", "4", "--batch-size",
                 "8", "--steps", "20", "--eval-every", "10", "--threads", "1", "--out", str(run)]) == 0  # fmt: skip
    page, characters, errors = read_report((run / "report.html").resolve().as_uri())
    assert page["title"] == page["heading"] == "gatedrnn report: adding, T = 8"
    sources = [src for src, _, _ in page["images"]]
    assert sources == ["learning_curves.png", "gradient_flow.png", "gates.png", "time_constants.png"]
    assert all(complete and width > 300 for _, complete, width in page["images"]), page["images"]  # none broken
    assert page["captions"] == len(sources) and page["cells"] > 0  # a caption each, and the results table
    assert page["frames"] == [] and characters is None
    assert errors == []


def test_a_text_reports_figures_and_gate_explorer_load(tmp_path):
    data, run = tmp_path / "play.txt", tmp_path / "run"
    data.write_text('HAMLET: "To be, or not to be" (he said).\nOPHELIA: Good my lord.\n' * 20)
    assert main(["train", "--task", "text", "--data", str(data), "--cell", "gru", "--hidden-size", "8", "--bptt", "16",
                 "--batch-size", "4", "--steps", "4", "--threads", "1", "--out", str(run)]) == 0  # fmt: skip
    page, characters, errors = read_report((run / "report.html").resolve().as_uri())
    assert page["heading"] == "gatedrnn report: text, play.txt"
    assert [src for src, _, _ in page["images"]] == ["learning_curves.png", "gradient_flow.png", "gates.png",
                                                     "time_constants.png"]  # fmt: skip
    assert all(complete and width > 300 for _, complete, width in page["images"]), page["images"]
    assert page["frames"] == page["links"] == ["explorer.html"]
    assert page["captions"] == 5
    # the frame shows the start of the test split: its characters after its first line break
    chars = data.read_text()
    test = chars[int(0.85 * len(chars)) : int(0.9 * len(chars))]
    assert characters == len(test) - test.index("\n") - 1 > 0
    assert errors == []
