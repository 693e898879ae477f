"""The editor panel in a real browser, in each host users open it in: Voila, JupyterLab 4, Notebook 7.

Every host serves a copy of the quick start (notebooks/00_quickstart.ipynb, the notebook the
README's first command opens), runs all its cells, and Debian's Chromium (/usr/bin/chromium,
driven by Playwright) works the panel as a user would: click a row, pick a type in that row's
dropdown, watch the badges and the graph's colours change, undo. The server and notebook
handling is in tests/browser/harness.py.

KERASNB_SCREENSHOT_DIR=docs keeps the edited panel of each host as docs/editor-<host>.png
(the README shows docs/editor-lab.png).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "browser"))
from harness import CHROMIUM, HOSTS, ROOT, UPDATE_TIMEOUT_MS, Host  # noqa: E402


def _missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"no Chromium at {CHROMIUM}: apt-get install chromium"
    if importlib.util.find_spec("playwright") is None:
        return "no playwright: pip install -e '.[test]' (it drives Debian's chromium, no browser download)"
    return None


# Skipped on a machine without the browser; on CI (.ci/run sets CI=true and installs both) a
# missing browser is a failure, so the panel can never go untested there without a word.
if _missing() and os.environ.get("CI", "").lower() in ("", "0", "false"):
    pytest.skip(_missing(), allow_module_level=True)

QUICKSTART = ROOT / "notebooks" / "00_quickstart.ipynb"
# The quick start's digits_mlp as the panel first shows it: nothing edited, every weight kept.
FIRST_STATE = {"input_layer": "no_weights", "dense": "kept", "dense_1": "kept", "dense_2": "kept"}


@pytest.fixture(scope="module")
def browser():
    if _missing():
        pytest.fail(_missing())
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module", params=HOSTS)
def host(request, tmp_path_factory, browser):
    """One server per host, stopped (its whole process group, kernels included) after its tests.

    It asks for `browser` so that the browser outlives the host's page."""
    server = Host(request.param, tmp_path_factory.mktemp(request.param), QUICKSTART).start()
    yield server
    try:
        if server.page is not None:
            server.page.close()
    finally:
        server.stop()


@pytest.fixture
def panel(host, browser):
    """The quick start run to its end in `host`, its panel in the first state.

    One page (and kernel) per host serves all its tests; a test that leaves an edit behind (it
    failed before its undo) has the page closed, so the next test opens the notebook afresh."""
    if host.open_error is not None:
        pytest.fail(f"{host.kind}: the notebook did not open in an earlier test:\n{host.open_error}")
    if host.page is None:
        try:
            host.page = host.open_notebook(browser)
        except AssertionError as error:
            host.open_error = str(error)
            raise
    page = host.page
    with diagnosis(host, page, "the panel's first state"):
        wait_for_rows(page, FIRST_STATE, exact=True)
    yield page
    try:
        edited = row_statuses(page) != FIRST_STATE
    except Exception:  # a crashed or closed page cannot be read: open a new one
        edited = True
    if edited:
        with contextlib.suppress(Exception):
            page.close()
        host.page = None


@contextlib.contextmanager
def diagnosis(host: Host, page, step: str):
    """Turn any failure into an assertion that names the host and step, with a screenshot and logs."""
    try:
        yield
    except Exception as error:
        shot = host.screenshot(page, step.replace(" ", "-").replace("'", ""))
        raise AssertionError(f"{host.kind}: {step}: {type(error).__name__}: {error}\n"
                             f"screenshot: {shot}\n{host.diagnostics()}") from error


# ---------------------------------------------------------------------------- reading the page
_ROWS_JS = """() => Object.fromEntries([...document.querySelectorAll('.kn-table tr.kn-row[data-layer]')].map(r => {
    const badge = r.querySelector('.kn-badge');
    return [r.dataset.layer, {badge: badge ? badge.textContent.trim() : null, status: r.dataset.status,
                              colour: badge ? getComputedStyle(badge).backgroundColor : null,
                              selected: r.classList.contains('kn-selected')}];
}))"""

_NODES_JS = """() => Object.fromEntries([...document.querySelectorAll('.kn-graph g.kn-node[data-layer]')].map(g => {
    const rect = g.querySelector('rect');
    return [g.dataset.layer, {status: g.dataset.status, fill: rect ? getComputedStyle(rect).fill : null,
                              selected: g.classList.contains('kn-selected')}];
}))"""


def rows(page) -> dict:
    """Each table row by layer: its badge text, its data-status, the badge's colour, whether selected."""
    return page.evaluate(_ROWS_JS)


def row_statuses(page) -> dict:
    return {layer: row["badge"] for layer, row in rows(page).items()}


def nodes(page) -> dict:
    """Each graph node by layer: its data-status, its rect's computed fill, whether selected."""
    return page.evaluate(_NODES_JS)


def wait_until(page, condition: str, arg, what: str, seen) -> None:
    """Wait for a JavaScript condition; on timeout, fail saying what was awaited and what the page shows."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(condition, arg=arg, timeout=UPDATE_TIMEOUT_MS)
    except PlaywrightTimeout:
        raise AssertionError(f"after {UPDATE_TIMEOUT_MS // 1000} s, still waiting for {what}; "
                             f"the page shows {seen()}") from None


def wait_for_rows(page, expected: dict, exact: bool = False) -> None:
    """Badges reach the page one widget update at a time: wait until the named rows show `expected`
    (and, with exact, no other rows exist), then check each badge agrees with its row's data-status."""
    wait_until(
        page,
        f"""([expected, exact]) => {{
            const rows = ({_ROWS_JS})();
            const named = Object.entries(expected).every(([layer, s]) => rows[layer] && rows[layer].badge === s);
            return named && (!exact || Object.keys(rows).length === Object.keys(expected).length);
        }}""",
        [expected, exact], f"rows {'exactly ' if exact else ''}{expected}", lambda: row_statuses(page),
    )
    for layer, shown in rows(page).items():
        assert shown["badge"] == shown["status"], (
            f"row {layer}: badge says {shown['badge']!r}, data-status {shown['status']!r}")


def wait_for_nodes(page, expected: dict) -> None:
    wait_until(
        page,
        f"""(expected) => {{
            const nodes = ({_NODES_JS})();
            return Object.entries(expected).every(([layer, s]) => nodes[layer] && nodes[layer].status === s);
        }}""",
        expected, f"graph nodes {expected}", lambda: {layer: n["status"] for layer, n in nodes(page).items()},
    )


def wait_for_selected(page, layer: str) -> None:
    """The row and the graph node of `layer` are both marked selected, and no other row is."""
    wait_until(
        page,
        """(layer) => {
            const sel = [...document.querySelectorAll('.kn-table tr.kn-row.kn-selected')].map(r => r.dataset.layer);
            const node = document.querySelector(`.kn-graph g.kn-node.kn-selected[data-layer="${CSS.escape(layer)}"]`);
            return sel.length === 1 && sel[0] === layer && node !== null;
        }""",
        layer, f"{layer} selected in the table (only) and in the graph",
        lambda: {"rows": [k for k, r in rows(page).items() if r["selected"]],
                 "nodes": [k for k, n in nodes(page).items() if n["selected"]]},
    )


def row(page, layer: str):
    return page.locator(f".kn-table tr.kn-row[data-layer='{layer}']").first


def node(page, layer: str):
    return page.locator(f".kn-graph g.kn-node[data-layer='{layer}']").first


def click_row(page, layer: str) -> None:
    row(page, layer).locator("td").first.click()


def assert_graph_matches_table(page, layers) -> None:
    """A node is drawn in its row's status colour: the rect's fill is the badge's background."""
    table, graph = rows(page), nodes(page)
    for layer in layers:
        assert graph[layer]["status"] == table[layer]["status"], (layer, graph[layer], table[layer])
        assert graph[layer]["fill"] == table[layer]["colour"], (
            f"node {layer} ({graph[layer]['status']}) is filled {graph[layer]['fill']}, "
            f"its badge is {table[layer]['colour']}")


def save_screenshot(host: Host, page, tmp_path: Path) -> None:
    """The panel (table and graph) after the edit; docs/ and the README take theirs from here."""
    shot = tmp_path / f"editor-{host.kind}.png"
    editor = page.locator(".kn-editor").first
    # Lab, Notebook 7 and Voila scroll inside a fixed-height container, so an element taller than
    # the viewport would be cut: make the viewport tall enough for the whole panel first.
    viewport = page.viewport_size
    box = editor.bounding_box()
    page.set_viewport_size({"width": viewport["width"], "height": max(viewport["height"], int(box["height"]) + 400)})
    try:
        editor.scroll_into_view_if_needed()
        editor.screenshot(path=str(shot))
    finally:
        page.set_viewport_size(viewport)
    assert shot.stat().st_size > 10_000, f"{shot} is nearly empty"
    target = os.environ.get("KERASNB_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(target) / shot.name)


# ---------------------------------------------------------------------------- tests
def test_choose_a_type_in_a_row_then_undo(host, panel, tmp_path):
    """Click dense_1's row, pick Dropout in its dropdown: badges and node colours change; Undo restores them."""
    page = panel
    with diagnosis(host, page, "before the edit"):
        node(page, "dense_2").wait_for(state="visible")
        assert_graph_matches_table(page, ["dense", "dense_1", "dense_2"])
        first_nodes = nodes(page)
        first_summary = page.locator(".kn-summary").first.inner_text()

    with diagnosis(host, page, "clicking dense_1's row"):
        click_row(page, "dense_1")
        wait_for_selected(page, "dense_1")
        choice = row(page, "dense_1").locator("select.kn-row-type")
        choice.wait_for(state="visible")
        labels = choice.locator("option").all_inner_texts()
        dropout = next((label for label in labels if label.strip().startswith("Dropout")), None)
        assert dropout is not None, f"no Dropout among the row's types: {labels}"

    with diagnosis(host, page, "choosing Dropout in the row's dropdown"):
        choice.select_option(label=dropout)
        # dense_1 goes; its Dropout is new; dense_2 now sees 32 features instead of 16
        wait_for_rows(page, {"dense": "kept", "dense_1": "removed", "dense_2": "reinitialized"})
        added = [layer for layer, status in row_statuses(page).items() if status == "new"]
        assert len(added) == 1 and "dropout" in added[0].lower(), row_statuses(page)
        page.locator(".kn-table .kn-selected .kn-row-params input").first.wait_for(state="visible")  # its rate

        wait_for_nodes(page, {"dense": "kept", "dense_2": "reinitialized", added[0]: "new"})
        assert_graph_matches_table(page, ["dense", "dense_2", added[0]])
        edited_nodes = nodes(page)
        assert edited_nodes["dense_2"]["fill"] != first_nodes["dense_2"]["fill"], "dense_2's colour did not change"
        assert edited_nodes["dense"]["fill"] == first_nodes["dense"]["fill"]
        assert page.locator(".kn-summary").first.inner_text() != first_summary, "the summary did not change"
        save_screenshot(host, page, tmp_path)

    with diagnosis(host, page, "undoing"):
        page.locator(".kn-undo").first.click()
        wait_for_rows(page, FIRST_STATE, exact=True)
        wait_for_nodes(page, {layer: first_nodes[layer]["status"] for layer in first_nodes})
        restored = nodes(page)
        assert set(restored) == set(first_nodes), "the graph does not have its first nodes again"
        for layer, first in first_nodes.items():
            assert restored[layer]["fill"] == first["fill"], (layer, restored[layer], first)
        wait_until(page, "(text) => document.querySelector('.kn-summary').innerText === text", first_summary,
                   f"the first summary {first_summary!r}", lambda: page.locator(".kn-summary").first.inner_text())


def test_graph_and_table_select_the_same_layer(host, panel):
    """Clicking a node selects its row and the reverse, arrow keys move the selection; a delete
    chosen from the graph shows its reason in the expanded row, and undoes."""
    page = panel
    with diagnosis(host, page, "clicking dense_2's node"):
        node(page, "dense_2").click()
        wait_for_selected(page, "dense_2")
    with diagnosis(host, page, "clicking dense's row"):
        click_row(page, "dense")
        wait_for_selected(page, "dense")
    with diagnosis(host, page, "moving the selection with the arrow keys"):
        page.keyboard.press("ArrowDown")
        wait_for_selected(page, "dense_1")
        page.keyboard.press("ArrowUp")
        wait_for_selected(page, "dense")

    with diagnosis(host, page, "deleting dense_1 after picking it in the graph"):
        node(page, "dense_1").click()
        wait_for_selected(page, "dense_1")
        page.locator(".kn-delete").first.click()
        wait_for_rows(page, {"dense": "kept", "dense_1": "removed", "dense_2": "reinitialized"})
        wait_for_nodes(page, {"dense_2": "reinitialized"})
        assert_graph_matches_table(page, ["dense", "dense_2"])

    with diagnosis(host, page, "expanding dense_2's reason"):
        row(page, "dense_2").locator(".kn-expand").click()
        reason = page.locator(".kn-table .kn-reason", has_text="kernel (16, 10) -> (32, 10)")
        reason.first.wait_for(state="visible")

    with diagnosis(host, page, "undoing the delete"):
        page.locator(".kn-undo").first.click()
        wait_for_rows(page, FIRST_STATE, exact=True)
        wait_for_nodes(page, {layer: status for layer, status in FIRST_STATE.items() if layer != "input_layer"})
