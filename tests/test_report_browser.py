"""The report as a user sees it: opened in a headless browser, every figure loads and has its
caption. Runs where a browser is installed (selenium with Chromium or Firefox and its driver,
or playwright with a Chromium), and is skipped, saying so, elsewhere: CI downloads no browser."""

import shutil

import pytest

from gatedrnn.cli import main

# what the page tells once loaded: its heading, and each image's source, load state and width
READ_PAGE = """return {
  title: document.title, heading: document.querySelector('h1').textContent,
  images: Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]),
  captions: document.querySelectorAll('figcaption').length,
  cells: document.querySelectorAll('td').length };"""

NO_BROWSER = ("no headless browser here: install selenium with Chromium and chromedriver (Debian: apt-get install "
              "chromium chromium-driver) or Firefox and geckodriver, or playwright with its Chromium")  # fmt: skip


def _selenium(url: str):
    """The page read by selenium, or None where it has no browser and driver installed."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service as ChromeService
        from selenium.webdriver.firefox.service import Service as FirefoxService
    except ImportError:
        return None
    chrome = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if chrome and shutil.which("chromedriver"):  # a driver on PATH: selenium downloads nothing
        options = webdriver.ChromeOptions()
        options.binary_location = chrome
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=ChromeService(shutil.which("chromedriver")))
    elif shutil.which("firefox") and shutil.which("geckodriver"):
        options = webdriver.FirefoxOptions()
        options.add_argument("-headless")
        driver = webdriver.Firefox(options=options, service=FirefoxService(shutil.which("geckodriver")))
    else:
        return None
    try:
        driver.set_page_load_timeout(60)
        driver.get(url)  # returns after the load event: the images are in
        return driver.execute_script(READ_PAGE)
    finally:
        driver.quit()


def _playwright(url: str):
    """The page read by playwright's Chromium, or None where playwright or its browser is absent."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        return None
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch()
            try:
                page = browser.new_page()
                page.goto(url, wait_until="load")
                return page.evaluate("() => {" + READ_PAGE + "}")
            finally:
                browser.close()
    except Error:  # no browser downloaded for it
        return None


def test_the_report_opens_in_a_browser_with_every_figure(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--task", "adding", "--cell", "gru", "--length", "8", "--hidden-size", "4", "--batch-size",
                 "8", "--steps", "20", "--eval-every", "10", "--threads", "1", "--out", str(run)]) == 0  # fmt: skip
    url = (run / "report.html").resolve().as_uri()
    page = _selenium(url) or _playwright(url)
    if page is None:
        pytest.skip(NO_BROWSER)
    assert page["title"] == page["heading"] == "gatedrnn report: adding, T = 8"
    sources = [src for src, _, _ in page["images"]]
    assert sources == ["learning_curves.png", "gradient_flow.png", "gates.png", "time_constants.png"]
    assert all(complete and width > 300 for _, complete, width in page["images"]), page["images"]  # none broken
    assert page["captions"] == len(sources) and page["cells"] > 0  # a caption each, and the results table
