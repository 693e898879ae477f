"""Start a notebook host (Voila, JupyterLab 4, Notebook 7), open a notebook in Chromium, run it.

Used by tests/test_browser.py. Each server runs in its own process group with its own
temporary root, config, settings and workspace directories, so neither the user's saved
JupyterLab workspace nor their settings change what the test sees, and the notebook that is
opened is a copy: autosave can never write widget outputs into the repository.

Needs Debian's Chromium at /usr/bin/chromium; Playwright's own browser download is never used.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
HOSTS = ("voila", "lab", "notebook")

# A cold kernel imports TensorFlow (4-5 s) and the quick start trains twice; CI machines are slow.
KERNEL_TIMEOUT_MS = 120_000
SERVER_TIMEOUT_S = 90
UPDATE_TIMEOUT_MS = 30_000

# JupyterLab and Notebook 7 read user settings from JUPYTERLAB_SETTINGS_DIR: no news pop-up or
# update check; no autosave (the notebook is a temporary copy anyway); every cell stays in the
# DOM (no windowing), so the execution prompts of all cells can be read.
_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings":
        {"windowingMode": "none"},
}


def _command(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def _descendants(pid: int) -> list[tuple[int, bytes | None]]:
    """Child processes with their command lines, recursively, from /proc (Linux; empty elsewhere)."""
    found, queue = [], [pid]
    while queue:
        parent = queue.pop()
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                for child in map(int, children.read_text().split()):
                    found.append((child, _command(child)))
                    queue.append(child)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Host:
    """A running server: `kind` is one of HOSTS; `open_notebook` gives a page with the notebook run."""

    kind: str
    base: Path
    notebook: Path  # the source notebook, copied under base/root before each opening
    url: str = ""
    process: subprocess.Popen | None = None
    log_path: Path = field(init=False)
    copies: int = 0
    run_all_clicks: int = 0
    page: object = None  # the page a test module keeps open on this host, if any
    open_error: str | None = None  # why the notebook could not be opened, once it failed
    console: list = field(default_factory=list)  # the browser console's errors, for failure messages

    def __post_init__(self):
        self.log_path = self.base / f"{self.kind}.log"

    # ------------------------------------------------------------------ server
    def start(self) -> "Host":
        root = self.base / "root"
        root.mkdir(parents=True, exist_ok=True)
        config = self.base / "config"
        settings = config / "lab" / "user-settings"
        for name, values in _SETTINGS.items():
            path = settings / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        port = free_port()
        env = dict(
            os.environ,
            TF_CPP_MIN_LOG_LEVEL="2",
            TF_ENABLE_ONEDNN_OPTS="0",
            JUPYTER_CONFIG_DIR=str(config),
            JUPYTERLAB_SETTINGS_DIR=str(settings),
            JUPYTERLAB_WORKSPACES_DIR=str(self.base / "workspaces"),
            JUPYTER_RUNTIME_DIR=str(self.base / "runtime"),
            # the kernel imports kerasnb from this checkout, installed or not
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        )
        if self.kind == "voila":
            # Voila serves one notebook and runs it for every page visit (a kernel each).
            target = self._copy()
            command = [sys.executable, "-m", "voila", target.name, "--no-browser", "--Voila.ip=127.0.0.1",
                       f"--port={port}", "--Voila.tornado_settings={'autoreload': False}"]
        else:
            module = {"lab": "jupyterlab", "notebook": "notebook"}[self.kind]
            command = [sys.executable, "-m", module, "--no-browser", "--allow-root", "--ip=127.0.0.1",
                       f"--port={port}", "--IdentityProvider.token=", f"--ServerApp.root_dir={root}"]
            if self.kind == "lab":
                command += ["--LabApp.news_url=None",
                            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, cwd=root, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        self.url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + SERVER_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                urllib.request.urlopen(self.url + "api/status", timeout=2)
                return self
            except urllib.error.HTTPError:  # any HTTP answer means the server is up
                return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"{self.kind} did not start within {SERVER_TIMEOUT_S} s.\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the server's process group (it shuts its kernels down), then SIGKILL to
        anything left: kernels run in process groups of their own, so they are found as children."""
        if self.process is None:
            return
        descendants = _descendants(self.process.pid)
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        for pid, command in descendants:
            if _command(pid) == command:  # still the same process, not a reused pid
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.process = None
        self._log.close()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"(no log at {self.log_path})"
        return f"--- {self.kind} server log ({self.log_path}), last {chars} characters:\n{text[-chars:]}"

    # ------------------------------------------------------------------ notebook
    def _copy(self) -> Path:
        """A fresh copy per opening (a new path is a new kernel session in Lab and Notebook 7), with
        no stored outputs or execution numbers: what the page shows was computed in this run."""
        self.copies += 1
        stem = self.notebook.stem if self.kind == "voila" else f"{self.notebook.stem}_{self.copies}"
        target = self.base / "root" / f"{stem}.ipynb"
        notebook = json.loads(self.notebook.read_text(encoding="utf-8"))
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                cell["outputs"], cell["execution_count"] = [], None
        target.write_text(json.dumps(notebook, indent=1), encoding="utf-8")
        return target

    def open_notebook(self, browser, viewport=(1400, 1000)):
        """A new page with the notebook run to the end and the editor panel drawn."""
        page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        page.set_default_timeout(UPDATE_TIMEOUT_MS)
        page.on("console", lambda m: m.type == "error" and self.console.append(m.text))
        page.on("pageerror", lambda e: self.console.append(f"page error: {e}"))
        try:
            if self.kind == "voila":
                page.goto(self.url, timeout=KERNEL_TIMEOUT_MS)  # Voila runs every cell itself
            else:
                name = self._copy().name
                path = f"lab/tree/{name}" if self.kind == "lab" else f"notebooks/{name}"
                page.goto(self.url + path, timeout=KERNEL_TIMEOUT_MS)
                self._wait_for_kernel(page, name)
                self._dismiss_popups(page)
                self._run_all(page, name)
                self._wait_for_all_cells(page)
            page.locator(".kn-editor").first.wait_for(state="visible", timeout=KERNEL_TIMEOUT_MS)
        except Exception as error:
            shot = self.screenshot(page, "open-failed")
            page.close()
            raise AssertionError(f"{self.kind}: the editor did not appear ({error}).\n"
                                 f"screenshot: {shot}\n{self.diagnostics()}") from error
        return page

    def diagnostics(self) -> str:
        """The browser console's last errors and the server log's tail, for a failure message."""
        errors = "\n".join(self.console[-15:]) or "(none)"
        return f"--- browser console errors:\n{errors}\n{self.log_tail()}"

    def _wait_for_kernel(self, page, name: str) -> None:
        """Run All before the page's kernel connection is up is dropped without a word, and the
        page's own indicator already says "idle" before its websocket opens. So ask the server:
        the notebook's session has a kernel that is idle with at least one connection.

        Should a "Select Kernel" dialog come up before any kernel runs, accept its choice once
        (the notebook's own kernel, python3)."""
        page.locator(".jp-Notebook").first.wait_for(state="visible", timeout=KERNEL_TIMEOUT_MS)
        deadline = time.monotonic() + KERNEL_TIMEOUT_MS / 1000
        accepted = False
        while time.monotonic() < deadline:
            kernel = self._kernel_of(name)
            if kernel and kernel.get("execution_state") == "idle" and kernel.get("connections", 0) >= 1:
                return
            dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
            if kernel is None and not accepted and dialog.count():
                dialog.locator(".jp-mod-accept").first.click()
                accepted = True
            page.wait_for_timeout(250)  # one polling interval of the server's REST API
        raise AssertionError(f"the kernel of {name} was not idle and connected after "
                             f"{KERNEL_TIMEOUT_MS // 1000} s: {self._kernel_of(name)}")

    def _kernel_of(self, name: str) -> dict | None:
        """The server's record of the kernel of notebook `name` (None while it has none)."""
        try:
            with urllib.request.urlopen(self.url + "api/sessions", timeout=5) as answer:
                sessions = json.load(answer)
        except (OSError, ValueError):
            return None
        for session in sessions:
            if session.get("path", "").endswith(name) and session.get("kernel"):
                return session["kernel"]
        return None

    def _dismiss_popups(self, page) -> None:
        # The news question is switched off in the settings; a toast may still appear on some versions.
        for label in ("No", "Dismiss"):
            button = page.locator(f".Toastify__toast button:has-text('{label}')")
            if button.count():
                button.first.click()

    def _run_all(self, page, name: str) -> None:
        """Menu Run > Run All Cells: the same Lumino menu bar in JupyterLab and Notebook 7.

        A Run All that comes while the kernel connection is still being set up is dropped without
        a word (every prompt stays "[ ]"); then it is chosen again."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        deadline = time.monotonic() + KERNEL_TIMEOUT_MS / 1000
        while True:
            self.run_all_clicks += 1
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            try:
                page.wait_for_function(
                    "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
                    ".some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))",
                    timeout=15_000,
                )
                return
            except PlaywrightTimeout:
                if time.monotonic() > deadline:
                    raise AssertionError("Run All Cells ran nothing: every prompt is still empty") from None
                self._wait_for_kernel(page, name)

    def _wait_for_all_cells(self, page) -> None:
        """Every code cell has its execution number: the panel's messages no longer queue behind a cell."""
        page.wait_for_function(
            """() => {
                const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
                return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
            }""",
            timeout=KERNEL_TIMEOUT_MS,
        )

    def screenshot(self, page, label: str) -> str:
        path = self.base / f"{self.kind}-{label}-{int(time.time() * 1000)}.png"
        try:
            page.screenshot(path=str(path))
        except Exception as error:  # a crashed page cannot be photographed; say so instead
            return f"(no screenshot: {error})"
        return str(path)
