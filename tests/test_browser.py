"""The editor in a real browser: Voila serves tests/browser/editor.ipynb, headless Chromium drives it.

Needs Debian's chromium at /usr/bin/chromium (``apt-get install chromium``); Playwright's own
browser download does not work offline. Set KERASNB_SCREENSHOT=path to keep a screenshot.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
HERE = Path(__file__).parent
ROOT = HERE.parent

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM}: apt-get install chromium"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def voila_url(tmp_path_factory):
    """One Voila server for the module (each page visit keeps a kernel until Voila stops)."""
    port = free_port()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    log = open(tmp_path_factory.mktemp("voila") / "voila.log", "w+")
    server = subprocess.Popen(
        [sys.executable, "-m", "voila", str(HERE / "browser" / "editor.ipynb"), "--no-browser",
         "--Voila.ip=127.0.0.1", f"--port={port}", "--Voila.tornado_settings={'autoreload': False}"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "api/status", timeout=2)
            break
        except urllib.error.HTTPError:  # any HTTP answer means the server is up
            break
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(0.3)
    else:
        server.kill()
        log.seek(0)
        pytest.fail("Voila did not start:\n" + log.read()[-3000:])
    yield url
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
    log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


def status_of(page, layer: str) -> str:
    return page.locator(f".kn-table tr[data-layer='{layer}'] .kn-badge").inner_text()


def wait_for_status(page, layer: str, status: str) -> None:
    """The summary and the table are separate widgets whose updates reach the page one by one."""
    page.wait_for_function(
        "([layer, status]) => { const b = document.querySelector(`.kn-table tr[data-layer='${layer}'] .kn-badge`);"
        " return b && b.innerText.trim() === status; }",
        arg=[layer, status], timeout=30_000,
    )


def test_pick_a_replacement_in_the_browser(voila_url, browser, tmp_path):
    """The table renders, a dropdown choice rebuilds the model, summary and statuses follow."""
    page = browser.new_page(viewport={"width": 1200, "height": 1400})
    page.goto(voila_url, timeout=60_000)
    rows = page.locator(".kn-table tr.kn-row")
    rows.first.wait_for(timeout=90_000)  # kernel start and `import keras` come first
    assert rows.count() == 4
    assert [rows.nth(i).get_attribute("data-layer") for i in range(4)] == ["input_layer", "dense", "dense_1", "dense_2"]
    summary = page.locator(".kn-summary")
    assert "3 layers kept weights (2,817 params)" in summary.inner_text()
    assert status_of(page, "dense_1") == "kept"

    page.select_option(".kn-layer select", label="dense_1 \u2014 Dense")
    page.locator(".kn-table tr.kn-selected[data-layer='dense_1']").wait_for(timeout=20_000)
    page.select_option(".kn-type select", label="Dropout")

    page.wait_for_function(
        "() => document.querySelector('.kn-summary').innerText.includes('1 new')", timeout=30_000
    )
    assert "1 reinitialized (65 params), 1 new, 1 removed (2,080 params)" in summary.inner_text()
    wait_for_status(page, "dense_1", "removed")
    assert status_of(page, "dense_1") == "removed"
    assert status_of(page, "dense_1_dropout") == "new"
    assert status_of(page, "dense_2") == "reinitialized"
    page.locator(".kn-params input").first.wait_for(timeout=10_000)  # the rate control for Dropout

    page.get_by_text("Parameters per layer (chart)").click()  # the chart is drawn when opened
    page.wait_for_function(
        "() => { const img = document.querySelector('img.kn-chart'); return img && img.naturalWidth > 100; }",
        timeout=30_000,
    )

    shot = tmp_path / "editor.png"
    page.locator(".kn-editor").screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("KERASNB_SCREENSHOT"):
        shutil.copy(shot, os.environ["KERASNB_SCREENSHOT"])
    page.close()


def test_undo_in_the_browser(voila_url, browser):
    """Undo is a real button: after a delete, one click brings the layer back."""
    page = browser.new_page()
    page.goto(voila_url, timeout=60_000)
    page.locator(".kn-table tr.kn-row").first.wait_for(timeout=90_000)
    page.select_option(".kn-layer select", label="dense_1 \u2014 Dense")
    page.locator(".kn-table tr.kn-selected[data-layer='dense_1']").wait_for(timeout=20_000)
    page.locator(".kn-delete").click()
    page.wait_for_function(
        "() => document.querySelector('.kn-summary').innerText.includes('1 removed')", timeout=30_000
    )
    wait_for_status(page, "dense_1", "removed")
    assert status_of(page, "dense_1") == "removed"
    page.locator(".kn-undo").click()
    page.wait_for_function(
        "() => !document.querySelector('.kn-summary').innerText.includes('removed')", timeout=30_000
    )
    wait_for_status(page, "dense_1", "kept")
    assert status_of(page, "dense_1") == "kept"
    page.close()
