"""The training report page in a real browser (Debian's headless Chromium, driven by Selenium through
Debian's chromedriver): at 1280 px nothing overlaps, nothing is cut, every contact sheet is whole.

The model is the tiny test model trained on with real merge checks every 2 iterations, plus one
flagged check row (the banner) as the loop would store it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from merge.checks import MergeChecker, read_checks
from merge.report import MAX_CONTACT_SHEETS, training_report, write_training_html
from tests.merge.test_training_report import insert_flagged_check

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
WIDTH = 1280

# Run in the page: every way an element can be cut or overlap another, as a list of readable problems.
BOUNDS_PROBE = """
const problems = [];
const width = document.documentElement.clientWidth;
const area = r => Math.max(0, r.width) * Math.max(0, r.height);
const name = e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className && typeof e.className === 'string'
    ? '.' + e.className : '') + ' "' + (e.textContent || '').trim().slice(0, 40) + '"';
const overlap = (a, b) => Math.min(a.right, b.right) - Math.max(a.left, b.left) > 1.5 &&
                          Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 1.5;
if (document.documentElement.scrollWidth > width) problems.push('page scrolls sideways: ' +
    document.documentElement.scrollWidth + ' > ' + width);
const all = [...document.body.querySelectorAll('*')].filter(e => !e.closest('svg') || e.tagName === 'svg');
for (const e of all) {
  const r = e.getBoundingClientRect();
  if (!area(r)) continue;
  if (r.left < -0.5 || r.right > width + 0.5) problems.push('outside the window: ' + name(e) + ' ' + r.left + '..' + r.right);
  const style = getComputedStyle(e);
  if (style.overflowX !== 'visible' && e.scrollWidth > e.clientWidth + 1) problems.push('cut on the right: ' + name(e));
  if (style.overflowY !== 'visible' && e.scrollHeight > e.clientHeight + 1) problems.push('cut at the bottom: ' + name(e));
  const children = e.tagName === 'svg' ? [] : [...e.children].filter(c => area(c.getBoundingClientRect()) && !['TR', 'TD', 'TH', 'TBODY', 'COLGROUP', 'COL', 'LI'].includes(c.tagName));
  for (let i = 0; i < children.length; i++) for (let j = i + 1; j < children.length; j++)
    if (overlap(children[i].getBoundingClientRect(), children[j].getBoundingClientRect()))
      problems.push('overlap: ' + name(children[i]) + ' and ' + name(children[j]));
}
for (const svg of document.querySelectorAll('svg')) {
  const box = svg.getBoundingClientRect();
  const texts = [...svg.querySelectorAll('text')].map(t => [t, t.getBoundingClientRect()]).filter(([, r]) => area(r));
  for (const [t, r] of texts)
    if (r.left < box.left - 0.5 || r.right > box.right + 0.5 || r.top < box.top - 0.5 || r.bottom > box.bottom + 0.5)
      problems.push('text cut by its chart: "' + t.textContent + '" in ' + svg.getAttribute('aria-label'));
  for (let i = 0; i < texts.length; i++) for (let j = i + 1; j < texts.length; j++)
    if (overlap(texts[i][1], texts[j][1]))
      problems.push('labels overlap: "' + texts[i][0].textContent + '" and "' + texts[j][0].textContent + '" in ' +
                    svg.getAttribute('aria-label'));
}
for (const img of document.images) {
  const r = img.getBoundingClientRect();
  if (!(img.complete && img.naturalWidth > 0)) problems.push('image does not load: ' + img.alt);
  else if (Math.abs(r.width - img.naturalWidth) > 0.5 || Math.abs(r.height - img.naturalHeight) > 0.5)
    problems.push('image scaled or cut: ' + img.alt + ' shown ' + r.width + 'x' + r.height + ' of ' +
                  img.naturalWidth + 'x' + img.naturalHeight);
}
return problems;
"""


@pytest.fixture(scope="module")
def page(module_dirs, tiny_model, analyzer) -> tuple[Path, Path]:
    """(model folder, its HTML report): real checks every 2 iterations from 32 to 42, then a flagged row."""
    from train.loop import close_session, open_session, run_training

    model_dir = module_dirs("browser") / "model"
    shutil.copytree(tiny_model, model_dir)
    session = open_session(model_dir, {})
    try:
        run_training(session, max_iterations=12, evaluators=(MergeChecker(session, every=2, analyzer=analyzer),))
    finally:
        close_session(session)
    insert_flagged_check(model_dir, iteration=44, best_iteration=32)
    return model_dir, write_training_html(training_report(model_dir), model_dir.parent / "training.html")


@pytest.fixture(scope="module")
def browser(module_dirs):
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (make test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--no-first-run", "--disable-sync", "--hide-scrollbars",
                     f"--user-data-dir={module_dirs('chromium-profile')}", f"--window-size={WIDTH},1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    # The layout viewport exactly 1280 px wide, whatever the window's own frame takes.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": WIDTH, "height": 1000, "deviceScaleFactor": 1, "mobile": False})
    yield driver
    driver.quit()


def test_nothing_overlaps_or_is_cut_at_1280_px(page, browser):
    model_dir, html = page
    browser.get(html.as_uri())
    assert browser.execute_script("return document.documentElement.clientWidth") == WIDTH
    assert browser.execute_script(BOUNDS_PROBE) == []
    # the banner, the two check charts and the loss chart are there and laid out
    assert browser.execute_script("return document.querySelector('.overtraining').getBoundingClientRect().height") > 0
    labels = browser.execute_script("return [...document.querySelectorAll('svg')].map(s => s.getAttribute('aria-label'))")
    assert any("merge-quality score" in label for label in labels) and "training loss" in labels


def test_contact_sheets_are_complete_with_their_frame_names(page, browser):
    model_dir, html = page
    browser.get(html.as_uri())
    checks = [check for check in read_checks(model_dir) if check["contact_sheet"]]
    sheets = browser.execute_script("""
        return [...document.querySelectorAll('#contact-sheets figure')].map(f => ({
          height: f.querySelector('img').naturalHeight, caption: f.querySelector('figcaption').textContent,
          names: [...f.querySelectorAll('li')].map(li => li.textContent)}));""")
    assert len(sheets) == min(MAX_CONTACT_SHEETS, len(checks)) == MAX_CONTACT_SHEETS
    newest = checks[::-1][:MAX_CONTACT_SHEETS]
    for sheet, check in zip(sheets, newest, strict=True):
        assert sheet["caption"].startswith(f"iteration {check['iteration']}")
        assert sheet["names"] == check["frame_names"].splitlines() and len(sheet["names"]) == check["frames"]
        assert sheet["height"] == 18 + 64 * check["frames"]  # header, then one row per merged frame


def test_events_are_listed_when_the_model_has_any(page, browser):
    model_dir, html = page
    browser.get(html.as_uri())
    report = training_report(model_dir)
    assert report.events
    rows = browser.execute_script("return document.querySelectorAll('#events tr').length")
    text = browser.execute_script("return document.querySelector('#events').textContent")
    assert rows == 1 + len(report.events) and "none" not in text.split()
    kinds = browser.execute_script("return [...document.querySelectorAll('#events td:nth-child(2)')].map(t => t.textContent)")
    assert {"evaluation", "checkpoint"} <= set(kinds)
