"""The review app end to end in a real headless Chromium (Debian's, driven by Selenium through
Debian's chromedriver; nothing downloads a browser): load, filter by a heat-map cell, exclude
three faces by keyboard, reload and see them excluded, run `curate select` while the server runs
and see them left out; a look at the painted grid; and a model's per-face training losses (sort,
filter, captions, side panel) with --model-dir."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import duckdb
import numpy as np
import pytest

from curate.faceset import FacesetReader

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
selenium = pytest.importorskip("selenium", reason="the test extra (selenium) is not installed")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Debian's chromium and chromium-driver are not installed (make test installs them)")

REPO = Path(__file__).resolve().parents[2]


def start_server(database: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """`facesmith curate review` in its own process, as a person runs it; returns it and its URL."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        [sys.executable, "-m", "facesmith", "curate", "review", "--db", str(database), "--no-browser", "--port", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 1.0)
        if ready:
            line = process.stdout.readline()
            if " at http://" in line:
                return process, line.rsplit(" at ", 1)[1].strip()
        if process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"the review server did not start: {process.stderr.read()[-2000:]}")


@pytest.fixture(scope="module")
def served(module_dirs, analyzer, obama_paths, biden_path, t1_path):
    """obama.jpg with four re-encoded, resized copies (one pose cell), two more Obama photos,
    Biden and the six people of t1.jpg; duplicates found strictly (any change of pose, light or
    expression keeps a copy), Obama pinned as the main person; served by `facesmith curate review`."""
    from curate.analysis.duplicates import DuplicateSettings, analyze_duplicates
    from curate.analysis.identities import analyze_identities
    from curate.scan.pipeline import ScanSettings, scan_folder

    folder = module_dirs("review")
    photos = folder / "photos"
    photos.mkdir()
    for path in [*obama_paths, biden_path, t1_path]:
        shutil.copy(path, photos / path.name)
    image = cv2.imread(str(obama_paths[0]))
    for scale in (0.9, 0.8, 0.7, 0.6):
        cv2.imwrite(str(photos / f"obama_{int(scale * 100)}.jpg"), cv2.resize(image, None, fx=scale, fy=scale,
                    interpolation=cv2.INTER_AREA), [cv2.IMWRITE_JPEG_QUALITY, 90])
    database = folder / "set" / "faceset.duckdb"
    scan_folder(photos, database, ScanSettings(resolution=128, batch_size=8), analyzer=analyzer)
    analyze_duplicates(database, DuplicateSettings(max_phash_distance=0, max_pose_delta=0.0,
                                                   max_expression_delta=0.0, max_light_delta=0.0,
                                                   max_brightness_delta=0.0))
    analyze_identities(database, pin_image="obama.jpg")
    process, url = start_server(database)
    yield database, url
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def browser(module_dirs):
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--no-first-run", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1400,900",
                     f"--user-data-dir={module_dirs('chromium-profile')}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def wait_for(driver, script: str, timeout: float = 60.0):
    """Poll a JavaScript expression until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return ({script});")
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {script}; page says: "
                         f"{driver.execute_script('return document.getElementById(`message`).textContent')}")


def load(driver, url: str) -> None:
    driver.get(url)
    wait_for(driver, "document.body.dataset.painted === '1'")


def tiles(driver) -> list[dict]:
    return driver.execute_script("""
        return [...document.querySelectorAll('#grid .tile')].map(t => ({
            id: t.dataset.id, trains: t.dataset.trains, inclusion: t.dataset.inclusion,
            top: parseFloat(t.style.top), left: parseFloat(t.style.left)}))
          .sort((a, b) => a.top - b.top || a.left - b.left);""")


def test_filter_by_heat_map_exclude_by_keyboard_reload_and_select(served, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    database, url = served
    load(browser, url)
    with FacesetReader(database) as reader:
        faces = reader.faces()
    assert int(browser.find_element(By.ID, "status").get_attribute("data-shown")) == len(faces)

    # the pose cell with the most faces that train (the page must agree on its count)
    with FacesetReader(database) as reader:
        trains = {s.face_id for s in reader.statuses() if s.trains}
    cells: dict[tuple[int, int], list[str]] = {}
    for i, face_id in enumerate(faces.face_ids):
        if -90 <= faces.yaw[i] <= 90 and -60 <= faces.pitch[i] <= 60:
            key = (min(int(np.floor(faces.yaw[i] / 15)) * 15, 75), min(int(np.floor(faces.pitch[i] / 15)) * 15, 45))
            cells.setdefault(key, []).append(face_id)
    (yaw, pitch), members = max(cells.items(), key=lambda item: (len(set(item[1]) & trains), item[0]))
    assert len(set(members) & trains) >= 3
    cell = browser.find_element(By.CSS_SELECTOR, f"#heatmap rect.cell[data-yaw='{yaw}'][data-pitch='{pitch}']")
    assert int(cell.get_attribute("data-count")) == len(members)
    cell.click()
    wait_for(browser, f"document.getElementById('status').dataset.shown === '{len(members)}'")
    assert {tile["id"] for tile in tiles(browser)} == set(members)
    # compose: only the faces that train, in that cell
    Select(browser.find_element(By.ID, "f-status")).select_by_value("trains")
    count = len(set(members) & trains)
    wait_for(browser, f"document.getElementById('status').dataset.shown === '{count}'")
    shown = tiles(browser)
    assert {tile["id"] for tile in shown} == set(members) & trains

    # exclude three by keyboard: each leaves the 'trains' view and the focus moves to the next face
    browser.find_element(By.CSS_SELECTOR, f"#grid .tile[data-id='{shown[0]['id']}']").click()
    body = browser.find_element(By.TAG_NAME, "body")
    for done in (1, 2, 3):
        body.send_keys("x")
        wait_for(browser, f"window.__review.decisions === {done}")
    wait_for(browser, f"document.getElementById('status').dataset.shown === '{count - 3}'")
    excluded = set(members) & trains - {tile["id"] for tile in tiles(browser)}
    assert len(excluded) == 3
    with duckdb.connect(str(database), read_only=True) as connection:
        stored = connection.execute("SELECT face_id, action FROM decisions ORDER BY decision_id").fetchall()
    assert sorted(stored) == sorted((face_id, "exclude") for face_id in excluded)

    # reload: the page reads the decisions back from the faceset
    load(browser, url)
    assert browser.execute_script("return window.__review.decisions") == 0
    browser.find_element(By.CSS_SELECTOR, f"#heatmap rect.cell[data-yaw='{yaw}'][data-pitch='{pitch}']").click()
    wait_for(browser, f"document.getElementById('status').dataset.shown === '{len(members)}'")
    after = {tile["id"]: tile for tile in tiles(browser)}
    for face_id in excluded:
        assert after[face_id]["inclusion"] == "exclude" and after[face_id]["trains"] == "0"
    assert all(tile["inclusion"] == "" for face_id, tile in after.items() if face_id not in excluded)

    # `curate select` runs while the server is up, and leaves the excluded faces out
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-m", "facesmith", "curate", "select", "--db", str(database),
                             "--out", str(tmp_path / "selected"), "--format", "json"],
                            capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr
    with duckdb.connect(str(database), read_only=True) as connection:
        rows = dict(connection.execute("SELECT face_id, selected FROM selection").fetchall())
    assert rows and all(rows[face_id] is False for face_id in excluded)
    assert any(rows.values())
    picked = {path.name.split("_", 1)[1].rsplit(".", 1)[0] for path in (tmp_path / "selected").glob("*.jpg")}
    assert picked and not picked & excluded
    # and the app, asked again, still answers (it never held the file between requests)
    load(browser, url)


def test_the_grid_paints_real_thumbnails(served, browser, tmp_path):
    from selenium.webdriver.common.by import By

    _, url = served
    load(browser, url)
    images = browser.execute_script("""
        return [...document.querySelectorAll('#grid .tile img')].map(i => [i.complete, i.naturalWidth, i.naturalHeight]);""")
    assert len(images) >= 5
    assert all(complete and width == 128 and height == 128 for complete, width, height in images), images
    shot = tmp_path / "grid.png"
    assert browser.find_element(By.ID, "grid").screenshot(str(shot))
    picture = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert picture is not None and picture.shape[0] > 200 and picture.shape[1] > 400
    # non-blank: photos, not an empty page; the thumbnails' own colours show (faces are not grey)
    assert picture.std() > 30
    saturation = cv2.cvtColor(picture, cv2.COLOR_BGR2HSV)[..., 1]
    assert (saturation > 60).mean() > 0.05
    # the heat map printed its counts and legend
    texts = browser.execute_script("return [...document.querySelectorAll('#heatmap text')].map(t => t.textContent)")
    assert any(text.endswith("faces") for text in texts) and any(text.isdigit() and int(text) > 0 for text in texts)
    # the side panel shows the source photo with the box and landmarks drawn over it
    browser.find_element(By.CSS_SELECTOR, "#grid .tile").click()
    wait_for(browser, "document.querySelector('#panel .source svg circle') !== null")
    assert browser.execute_script("return document.querySelectorAll('#panel .source svg circle').length") == 68


def test_lasso_on_the_embeddings_map_selects_faces_and_filters_the_grid(served, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    _, url = served
    load(browser, url)
    total = int(browser.find_element(By.ID, "status").get_attribute("data-shown"))
    browser.find_element(By.TAG_NAME, "body").send_keys("e")
    canvas = browser.find_element(By.ID, "map-canvas")
    wait_for(browser, "document.getElementById('map').hidden === false")
    # the left half of the map, as a lasso; the faces inside it by the page's own placement
    width, height = canvas.size["width"], canvas.size["height"]
    expected = browser.execute_script("""
        const c = window.__review.state.data.columns, w = arguments[0], h = arguments[1];
        return c.x.filter((x, i) => x !== null && 24 + ((x + 1) / 2) * (w - 48) < Math.floor(w / 2) - 2).length;""", width, height)
    assert 0 < expected < total
    corners = [(-width // 2 + 2, -height // 2 + 2), (-2, -height // 2 + 2), (-2, height // 2 - 2), (-width // 2 + 2, height // 2 - 2)]
    chain = ActionChains(browser).move_to_element_with_offset(canvas, *corners[0]).click_and_hold()
    for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1]):
        for step in range(1, 5):  # several points per side: a lasso, not a click
            chain = chain.move_by_offset((x1 - x0) * step // 4 - (x1 - x0) * (step - 1) // 4,
                                         (y1 - y0) * step // 4 - (y1 - y0) * (step - 1) // 4)
    chain.release().perform()
    assert wait_for(browser, "window.__review.state.selection.size") == expected
    browser.find_element(By.ID, "map-show").click()
    wait_for(browser, f"document.getElementById('status').dataset.shown === '{expected}'")
    assert browser.execute_script("return document.getElementById('grid').hidden") is False


def test_training_losses_sort_filter_and_show_in_the_panel(noisy_model, browser, tmp_path):
    """With --model-dir the page sorts by training loss, filters the hard faces and shows the loss in
    the captions and the side panel; the face whose crop is noise comes first."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from curate.training_loss import read_face_losses

    model_dir, src, _, noisy = noisy_model
    database = tmp_path / "src" / "faceset.duckdb"
    shutil.copytree(src.parent, database.parent)  # the server writes its cache beside the faceset
    process, url = start_server(database, "--model-dir", str(model_dir))
    try:
        load(browser, url)
        assert browser.find_element(By.ID, "f-train-loss-label").is_displayed()
        Select(browser.find_element(By.ID, "sort-key")).select_by_value("train_loss")
        browser.find_element(By.ID, "sort-desc").click()
        wait_for(browser, f"document.querySelector('#grid .tile').dataset.id === '{noisy}'")
        ranked = [face.face_id for face in read_face_losses(model_dir, "src").ranked()]
        shown = [tile["id"] for tile in tiles(browser)]
        assert shown[:len(ranked)] == ranked  # hardest first, as the model stored them
        caption = browser.execute_script("return document.querySelector('#grid .tile .why').textContent")
        assert caption.startswith("loss 1.") and "x" in caption
        Select(browser.find_element(By.ID, "f-train-loss")).select_by_value("hard")
        wait_for(browser, "document.getElementById('status').dataset.shown === '1'")
        assert [tile["id"] for tile in tiles(browser)] == [noisy]
        browser.find_element(By.CSS_SELECTOR, f"#grid .tile[data-id='{noisy}']").click()
        panel = wait_for(browser, "[...document.querySelectorAll('#panel td')].map(t => t.textContent).join('|')"
                                  ".includes('hardest #1') && document.getElementById('panel').textContent")
        assert "training loss" in panel and "seen 40 times" in panel
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
