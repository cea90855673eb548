"""The dashboard end to end: a real run trains under a runs root, the real service serves it over HTTP, and headless
Chromium (Debian's chromium + chromium-driver, driven by Selenium) shows the members and the charts growing.

The run waits after its second generation until the page has shown it, so "mid-run" is a state the test controls,
not a race. Screenshots go to the test's tmp folder; with POPVAE_DASHBOARD_SHOTS=<dir> they are also copied there
(docs/make_screenshots.sh makes docs/dashboard-running.png and docs/dashboard-done.png that way).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest
from ray_heads import free_port

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip("needs Debian's chromium and chromium-driver (make system-deps installs them)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e '.[dev]')")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from popvae.population.config import parse_config  # noqa: E402

SMALL_MODEL = {"widths": [8, 16, 16, 16], "z1_vars": 4, "z1_categories": 4, "z2_vars": 2, "z2_categories": 4}
MEMBERS, EPOCHS, PAUSE_AFTER = 4, 6, 2


@pytest.fixture
def service(tmp_path: Path):
    import uvicorn

    from popvae.cluster.service import create_app

    root = tmp_path / "runs"
    root.mkdir()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(root), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the service did not start"
        time.sleep(0.05)
    yield root, url
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def browser(tmp_path: Path):
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1440,1900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def shot(driver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    height = driver.execute_script(  # the bottom of the last visible section, not of the (full-height) layout
        "return Math.max(...[...document.querySelectorAll('main section')].map(s => s.getBoundingClientRect().bottom))"
        " + window.scrollY")
    chrome = driver.execute_script("return window.outerHeight - window.innerHeight")
    driver.set_window_size(1440, min(max(height + chrome + 24, 900), 4000))  # the whole page, no empty half
    driver.save_screenshot(str(path))
    if os.environ.get("POPVAE_DASHBOARD_SHOTS"):
        shutil.copy(path, Path(os.environ["POPVAE_DASHBOARD_SHOTS"]) / name)
    return path


def points(driver, chart: str) -> int:
    return len(driver.find_elements(By.CSS_SELECTOR, f"#{chart} circle"))


def test_dashboard_shows_a_live_run(ray_session, service, browser, tmp_path: Path) -> None:
    from popvae.population.driver import load_run_data, run_population

    root, url = service
    cfg = parse_config({"dataset": "synthetic", "synthetic_size": 256, "members": MEMBERS, "epochs": EPOCHS,
                        "batch_size": 16, "steps_per_epoch": 4, "model": SMALL_MODEL, "seed": 3})
    release, paused, outcome = threading.Event(), threading.Event(), {}
    scoring, scored = threading.Event(), threading.Event()

    def on_scoring(what, done, total) -> None:  # the test set is being scored: the page must not say done yet
        if not scoring.is_set():
            scoring.set()
            scored.wait(120)

    def on_generation(entry, status) -> None:
        if entry["epoch"] == PAUSE_AFTER:
            paused.set()
            release.wait(120)

    def train() -> None:
        try:
            outcome["summary"] = run_population(cfg, root / "demo", load_run_data(cfg), on_generation=on_generation,
                                                on_scoring=on_scoring)
        except BaseException as e:  # reported by the test below
            outcome["error"] = e
            paused.set()

    trainer = threading.Thread(target=train, daemon=True)
    trainer.start()
    try:
        assert paused.wait(180), "the run did not reach its second generation"
        assert "error" not in outcome, outcome.get("error")
        browser.get(f"{url}/#demo")
        wait = WebDriverWait(browser, 30, poll_frequency=0.2)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#members tbody tr")) == MEMBERS)
        wait.until(lambda d: points(d, "tau-chart") == MEMBERS * PAUSE_AFTER and points(d, "loss-chart") == MEMBERS * PAUSE_AFTER)
        head = browser.find_element(By.ID, "head").text
        assert f"{PAUSE_AFTER} of {EPOCHS} epochs done" in head and "running" in head, head
        rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#members tbody tr")]
        assert all(s in " ".join(rows) for s in ("fixed", "linear_inc")), rows
        assert "→" in rows[0]  # tau used -> next
        assert len(browser.find_elements(By.CSS_SELECTOR, "#lineage tbody tr")) == PAUSE_AFTER
        assert len(browser.find_elements(By.CSS_SELECTOR, "#loss-chart circle.best-point")) == PAUSE_AFTER  # one best per epoch
        ylabels = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".chart .ylabel")]
        assert ylabels == ["tau used", "validation loss", "MSE"]
        # the best of the last epoch is drawn last (on top); the members' equal first tau is marked, not hidden
        last_line = browser.execute_script("const l = document.querySelectorAll('#loss-chart path.line'); return l[l.length - 1]"
                                           ".getAttribute('class')")
        assert "best-line" in last_line
        assert browser.find_elements(By.CSS_SELECTOR, "#tau-chart path.overlap") and "lines overlap" in \
            browser.find_element(By.ID, "tau-chart").text
        assert "feedback term" in browser.find_element(By.ID, "lineage").text
        assert points(browser, "curve-chart") == 2 * PAUSE_AFTER  # the best's learning curve: relaxed and hard codes
        running = shot(browser, tmp_path, "dashboard-running.png")
    finally:
        release.set()
    try:  # every epoch trained, the test set being scored: "scoring", not "done"
        assert scoring.wait(300), "the run did not reach its scoring"
        WebDriverWait(browser, 30, poll_frequency=0.2).until(
            lambda d: "scoring the best model" in d.find_element(By.ID, "head").text)
        head = browser.find_element(By.ID, "head").text
        assert "scoring" in head and "done" not in head.split("\n")[0], head
        assert browser.find_element(By.ID, "summary-box").get_attribute("hidden")  # no summary yet
    finally:
        scored.set()
    trainer.join(300)
    assert "error" not in outcome, outcome.get("error")

    # the same page, no reload: the rest of the epochs arrive, then the run's pictures and summary
    wait = WebDriverWait(browser, 60, poll_frequency=0.2)
    wait.until(lambda d: points(d, "tau-chart") == MEMBERS * EPOCHS)
    wait.until(lambda d: "done" in d.find_element(By.ID, "head").text)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#pictures img")) >= 3)
    wait.until(lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
                             for img in d.find_elements(By.CSS_SELECTOR, "#pictures img")))
    assert f"{EPOCHS} of {EPOCHS} epochs done" in browser.find_element(By.ID, "head").text
    summary = browser.find_element(By.ID, "summary").text
    facts = ("test MSE", "best member", "at tau", f"saved after epoch {EPOCHS}", "training time")
    assert all(s in summary for s in facts), summary
    assert "evaluation" in summary and "popvae evaluate" in summary, summary
    assert "demo" in browser.find_element(By.ID, "runs").text and "population" in browser.find_element(By.ID, "runs").text
    done = shot(browser, tmp_path, "dashboard-done.png")
    assert running.stat().st_size > 10_000 and done.stat().st_size > 10_000

    # the logs other tools read: TensorBoard events per member, progress.csv
    assert sorted(p.name for p in (root / "demo" / "tensorboard").iterdir()) == [f"member-{i}" for i in range(1, MEMBERS + 1)]
    assert len((root / "demo" / "progress.csv").read_text().splitlines()) == 1 + MEMBERS * EPOCHS

    # the REST the page reads, over the same server
    lineage = httpx.get(f"{url}/runs/demo/lineage").json()["generations"]
    assert [g["epoch"] for g in lineage] == list(range(1, EPOCHS + 1))
    overview = httpx.get(f"{url}/runs/demo/summary").json()
    assert overview["kind"] == "population" and {"plots/tau.png", "plots/loss.png"} <= {p["path"] for p in overview["pictures"]}
    png = httpx.get(f"{url}/runs/demo/files/plots/tau.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"


def test_dashboard_shows_a_robust_run(ray_session, service, browser, tmp_path: Path) -> None:
    """A robust run (jobs only): its state badge, each job's loss per epoch, and its test MSE in the jobs table."""
    from popvae.models.dataset_loading import synthetic
    from popvae.population import folder_io
    from popvae.population.jobs import run_jobs

    root, url = service
    robust = root / "robust"
    folder_io.write_json(robust / "config.json", {"kind": "robust", "methods": ["vae-kl", "dae-mmd"]})
    jobs = [{"id": m, "kind": "robust", "method": m, "dir": str(robust / "jobs" / m), "epochs": 3, "batch_size": 16,
             "steps_per_epoch": 2, "seed": 0} for m in ("vae-kl", "dae-mmd")]
    run_jobs(jobs, synthetic(128, seed=0), synthetic(32, seed=1), workers=1)
    browser.get(f"{url}/#robust")
    wait = WebDriverWait(browser, 30, poll_frequency=0.2)
    wait.until(lambda d: points(d, "tau-chart") == 2 * 3 and points(d, "loss-chart") == 2 * 3)
    head = browser.find_element(By.ID, "head").text
    assert "robust" in head and "done" in head, head
    assert "done" in browser.find_element(By.CSS_SELECTOR, "#runs li[data-run=robust]").text
    assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".chart .ylabel")] == ["training loss", "seconds"]
    assert "vae-kl" in browser.find_element(By.ID, "tau-chart").text
    rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")]
    assert len(rows) == 2 and all(re.search(r"done 3/3 0\.\d{5}", r) for r in rows), rows
    shot(browser, tmp_path, "dashboard-robust.png")


def test_offline_swagger_loads_its_assets_from_the_service(service, browser) -> None:
    _, url = service
    browser.get(f"{url}/docs")
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock"))
    assert "/runs/{run_id}/summary" in browser.page_source
    html = httpx.get(f"{url}/docs").text
    assert "cdn" not in html.lower() and "/static/swagger/swagger-ui-bundle.js" in html
