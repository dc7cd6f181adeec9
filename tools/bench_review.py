"""Benchmark: `facesmith curate review` on a 10 000-face faceset, in a real headless Chromium.

Builds (once, then reuses) a faceset of N faces with tools/review_faceset.py: a real scan of the
sample photos whose rows are copied with new ids, spread poses and jittered numbers, analysed and
selected, the copies sharing the real crops. Then, in one run, it measures
  1. the thumbnail cache: building all N thumbnails from cold (2 threads), then a warm pass;
  2. the server: `facesmith curate review` started as a person starts it (its own process), the
     time until it listens, and the /api/faces answer (the whole face index) as the server times it;
  3. the page, in Debian's chromium (started before the clock runs): from navigation to the first
     grid painted with its thumbnails loaded, the part of it spent loading the index, and the
     total from the server's start to that paint on the warm cache;
  4. filters, timed inside the page from the click or keystroke to the re-rendered grid, heat map
     and counts: a heat-map cell, a composed filter (status, identity, sharpness), a sort, the
     free SQL WHERE (a round trip through the read-only door), each the median of 5;
  5. scrolling: the grid's render of one scroll step, median and worst of 60 steps over the set;
  6. one keyboard decision's round trip (record, then the face's new status from the reader);
  7. the server process' memory (resident now and at its peak).
Targets (issue 14): first paint < 1 s after start on a warm cache, a filter < 200 ms; the ratios
printed are measured / target.

    python tools/bench_review.py [--faces 10000] [--out /tmp/facesmith_review_bench]
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from curate.review.thumbnails import ThumbnailCache, default_cache_dir  # noqa: E402
from tools.review_faceset import grow_faceset, scan_samples  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def memory_kib(pid: int) -> tuple[int, int]:
    """(resident, peak resident) KiB of a Linux process."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def start_server(database: Path) -> tuple[subprocess.Popen, str, float]:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "facesmith", "curate", "review", "--db", str(database), "--no-browser", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    while time.perf_counter() - started < 120:
        ready, _, _ = select.select([process.stdout], [], [], 0.005)
        if ready:
            line = process.stdout.readline()
            if " at http://" in line:
                return process, line.rsplit(" at ", 1)[1].strip(), started
        if process.poll() is not None:
            break
    process.kill()
    raise SystemExit(f"the review server did not start: {process.stderr.read()[-2000:]}")


def browser(profile: Path):
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage",
                     "--window-size=1600,1000", f"--user-data-dir={profile}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_script_timeout(120)
    return driver


def wait(driver, script: str, timeout: float = 120.0, poll: float = 0.005):
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        value = driver.execute_script(f"return ({script});")
        if value:
            return value
        time.sleep(poll)
    raise SystemExit(f"timed out waiting for {script}")


def timed_filter(driver, action: str, runs: int = 5) -> float:
    """Median ms the page took to apply a filter, as it measures itself (event to re-render)."""
    times = []
    for _ in range(runs):
        before = driver.execute_script("return window.__review.filters")
        driver.execute_script(action)
        wait(driver, f"window.__review.filters > {before}")
        times.append(driver.execute_script("return window.__review.lastFilterMs"))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "facesmith_review_bench")
    parser.add_argument("--samples", type=Path, default=REPO / "samples")
    args = parser.parse_args()
    if CHROMIUM is None or CHROMEDRIVER is None:
        raise SystemExit("needs Debian's chromium and chromium-driver (make browser)")

    database = args.out / f"set{args.faces}" / "faceset.duckdb"
    if not database.is_file():
        started = time.perf_counter()
        database = grow_faceset(scan_samples(args.samples, args.out), database.parent, args.faces)
        print(f"built {database} in {time.perf_counter() - started:.1f} s")
    from curate.faceset import FacesetReader

    with FacesetReader(database) as reader:
        table = reader.faces()
        items = [(f, reader.crop_path(a)) for f, a in zip(table.face_ids, table.aligned_paths)]
    faces = len(items)

    cache_dir = default_cache_dir(database)
    shutil.rmtree(cache_dir, ignore_errors=True)
    cache = ThumbnailCache(cache_dir)
    cold = cache.build(items, workers=2)
    warm = cache.build(items, workers=2)

    # a first start builds the face index and stores it (the cold start); the measured one is warm
    for stale in default_cache_dir(database).glob("index-*"):
        stale.unlink()
    process, url, started = start_server(database)
    try:
        cold_start = time.perf_counter()
        with urllib.request.urlopen(url.split("?")[0] + "api/faces", timeout=120) as answer:
            cold_index_ms = float(answer.headers["server-timing"].split("dur=")[1])
            answer.read()
        cold_round_trip = (time.perf_counter() - cold_start) * 1000
    finally:
        process.terminate()
        process.wait(timeout=30)

    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as profile:
        driver = browser(Path(profile))
        try:
            driver.get("about:blank")
            process, url, started = start_server(database)
            listening = time.perf_counter() - started
            try:
                navigation = time.perf_counter()
                driver.get(url)
                wait(driver, "document.body.dataset.painted === '1'")
                painted = time.perf_counter()
                results["first paint, navigation to painted grid (page clock)"] = driver.execute_script(
                    "return window.__review.firstPaint")
                results["  of it: loading the face index"] = driver.execute_script("return window.__review.indexLoaded")
                total_ms = (painted - started) * 1000
                timing = driver.execute_script(
                    "return performance.getEntriesByType('resource').filter(e => e.name.endsWith('/api/faces'))"
                    ".map(e => [e.transferSize, e.encodedBodySize, e.decodedBodySize, "
                    "(e.serverTiming.find(t => t.name === 'index') || {}).duration])[0]")
                results["  of it: /api/faces built by the server"] = timing[3] or float("nan")
                # filters
                results["filter: a heat-map cell"] = timed_filter(driver, """
                    const cells = [...document.querySelectorAll('#heatmap rect.cell')];
                    cells.sort((a, b) => b.dataset.count - a.dataset.count)[0].dispatchEvent(new MouseEvent('click'));""")
                results["filter: status + identity + sharpness range"] = timed_filter(driver, """
                    const set = (id, v) => { const e = document.getElementById(id); e.value = v;
                        e.dispatchEvent(new Event(e.tagName === 'INPUT' ? 'input' : 'change')); };
                    set('f-status', document.getElementById('f-status').value ? '' : 'out');
                    set('f-label', 'other-person'); set('f-sharp-min', '100');""")
                results["filter: sort by sharpness"] = timed_filter(driver, """
                    const e = document.getElementById('sort-key'); e.value = e.value === 'sharpness' ? 'yaw' : 'sharpness';
                    e.dispatchEvent(new Event('change'));""")
                driver.execute_script("document.getElementById('reset-filters').click()")
                sql = []
                for k in range(5):
                    driver.execute_script(f"""window.__review.lastSqlMs = null;
                        document.getElementById('f-sql').value = "sharpness > {100 + k} AND label = 'main'";
                        document.getElementById('sql-apply').click();""")
                    sql.append(wait(driver, "window.__review.lastSqlMs"))
                results["filter: SQL WHERE (round trip through the read-only door)"] = statistics.median(sql)
                driver.execute_script("document.getElementById('reset-filters').click()")
                # scrolling: the grid's synchronous render per step
                steps = driver.execute_script("""
                    const grid = window.__review.grid, element = document.getElementById('grid'), times = [];
                    const height = element.scrollHeight;
                    for (let k = 0; k < 60; k++) {
                        element.scrollTop = (k / 59) * (height - element.clientHeight);
                        const t = performance.now(); grid.render(); times.push(performance.now() - t);
                    }
                    return times;""")
                results["scroll: grid render per step (median)"] = statistics.median(steps)
                results["scroll: grid render per step (worst)"] = max(steps)
                # one decision by keyboard, round trip
                driver.execute_script("document.getElementById('grid').scrollTop = 0;")
                driver.execute_script("document.querySelector('#grid .tile').click()")
                time.sleep(0.2)
                from selenium.webdriver.common.by import By

                driver.find_element(By.TAG_NAME, "body").send_keys("x")
                wait(driver, "window.__review.decisions >= 1")
                results["decision: exclude by key, recorded and status back"] = driver.execute_script(
                    "return window.__review.lastDecisionMs")
                resident, peak = memory_kib(process.pid)
            finally:
                process.terminate()
                process.wait(timeout=30)
        finally:
            driver.quit()
    # undo the benchmark's decision so the set stays as built
    from curate.decisions import Decision, record_decisions

    with FacesetReader(database) as reader:
        decided = list(reader.decisions())
    if decided:
        record_decisions(database, [Decision(face_id, "reset") for face_id in decided], who="bench")

    print(f"\nreview app on {faces} faces ({database}); 2-core machine, shared: figures are noisy")
    print(f"thumbnail cache, cold build: {cold.seconds:.1f} s for {cold.made} thumbnails "
          f"({cold.seconds / max(cold.made, 1) * 1000:.2f} ms each, 2 threads); warm pass {warm.seconds:.2f} s")
    print(f"cold start: the face index built by the server in {cold_index_ms:.0f} ms ({cold_round_trip:.0f} ms round trip)")
    print(f"server start to listening: {listening * 1000:.0f} ms")
    for name, value in results.items():
        print(f"{name}: {value:.1f} ms")
    print(f"server start to painted grid, warm cache: {total_ms:.0f} ms  (ratio to the 1 s target: {total_ms / 1000:.2f})")
    first_paint = results["first paint, navigation to painted grid (page clock)"]
    print(f"navigation to painted grid: {first_paint:.0f} ms  (ratio to 1 s: {first_paint / 1000:.2f})")
    worst_filter = max(v for k, v in results.items() if k.startswith("filter:") and "SQL" not in k)
    print(f"slowest in-page filter: {worst_filter:.1f} ms  (ratio to the 200 ms target: {worst_filter / 200:.3f})")
    print(f"SQL WHERE round trip: {results['filter: SQL WHERE (round trip through the read-only door)']:.0f} ms  "
          f"(ratio to 200 ms: {results['filter: SQL WHERE (round trip through the read-only door)'] / 200:.2f})")
    print(f"face index over the wire: {timing[0] / 1024:.0f} KiB gzip ({timing[2] / 1024:.0f} KiB JSON)")
    print(f"server memory: {resident / 1024:.0f} MiB resident, peak {peak / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
