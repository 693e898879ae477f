"""The table's JavaScript (kerasnb/editor/static/table.js) run by Node on a small stand-in DOM.

The browser tests drive it inside JupyterLab, Notebook 7 and Voila; this checks the DOM contract
and the traits it sends back in a second, without a browser: rows with their classes, data
attributes and badges; the selected row's Type dropdown and fields; clicks, arrow keys, the
reason toggle, the fold toggle and the progress bar.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import kerasnb.editor

SCRIPT = Path(kerasnb.editor.__file__).parent / "static" / "table.js"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed")

EVIL = "d1<img src=x onerror=alert(1)>"

# A stand-in for the few DOM features table.js uses, and an anywidget model; then a script of
# gestures. Prints what a test reads: the DOM as plain data, and every trait the view saved.
HARNESS = r"""
class El {
  constructor(tag) { this.tagName = tag.toUpperCase(); this.kids = []; this.text = ""; this.className = "";
    this.dataset = {}; this.style = {}; this.on = {}; this.attrs = {}; this.parent = null; this.value = "";
    this.title = ""; this.disabled = false; this.checked = false; this.selected = false; }
  get classList() {
    const el = this;
    return { add: (...cs) => { el.className = [...new Set(el.className.split(" ").concat(cs))].filter(Boolean).join(" "); },
             contains: (c) => el.className.split(" ").includes(c) };
  }
  appendChild(kid) { kid.parent = this; this.kids.push(kid); return kid; }
  set textContent(v) { this.kids = []; this.text = String(v); }
  get textContent() { return this.text + this.kids.map((k) => k.textContent).join(""); }
  addEventListener(type, fn) { (this.on[type] ||= []).push(fn); }
  fire(type, extra = {}) { for (const fn of this.on[type] || []) fn({ stopPropagation() {}, preventDefault() {}, ...extra }); }
  setAttribute(k, v) { this.attrs[k] = String(v); }
  contains(el) { for (let n = el; n; n = n.parent) if (n === this) return true; return false; }
  focus() {} scrollIntoView() {}
  all() { return [this, ...this.kids.flatMap((k) => k.all())]; }
  find(tag, cls) { return this.all().filter((e) => e.tagName === tag.toUpperCase() && (!cls || e.classList.contains(cls))); }
  querySelector(sel) { const [tag, cls] = sel.split("."); return this.find(tag, cls)[0] || null; }
}
globalThis.document = { createElement: (t) => new El(t), createTextNode: (t) => { const n = new El("#text"); n.text = t; return n; },
                        activeElement: null };

const state = JSON.parse(process.argv[3]);
const saved = [];
const handlers = {};
const model = {
  get: (k) => state[k],
  set: (k, v) => { state[k] = v; for (const fn of handlers[`change:${k}`] || []) fn(); },
  save_changes: () => saved.push(JSON.parse(JSON.stringify(state))),
  on: (e, fn) => { (handlers[e] ||= []).push(fn); },
  off: () => {},
};
const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

function dom(host) {
  return host.find("tr").filter((tr) => tr.dataset.layer !== undefined).map((tr) => ({
    cls: tr.className, layer: tr.dataset.layer, status: tr.dataset.status, call: tr.dataset.call ?? null,
    badge: tr.find("span", "kn-badge").map((b) => b.textContent),
    name: tr.find("code").map((c) => c.textContent),
    type: tr.find("select", "kn-row-type").map((s) => s.kids.map((o) => [o.textContent, o.selected])),
    params: tr.find("div", "kn-row-params").map((d) => d.find("input").map((i) => [i.dataset.param, i.value])),
    reason: tr.find("div", "kn-reason").map((r) => r.textContent),
    act: tr.find("td", "kn-act").map((c) => [c.textContent, (c.find("div", "kn-act-bar")[0] || {style: {}}).style.width ?? null]),
  }));
}

const { default: widget } = await import(process.argv[2]);
const host = new El("div");
widget.render({ model, el: host });
const out = { first: dom(host) };
const root = host.kids[0];
out.rootClass = root.className;
const row = (layer) => host.find("tr").find((tr) => tr.dataset.layer === layer && tr.dataset.call === undefined);

const picker = host.find("select", "kn-row-type")[0];
picker.value = "Dropout";
picker.fire("change");
out.afterType = saved.at(-1).action;

const rate = host.find("input", "kn-param-rate")[0];
rate.value = "0.5";
rate.fire("change");
out.afterField = saved.at(-1).action;
out.headers = host.find("th").map((h) => h.textContent);

row("head").fire("click");
out.afterClick = [saved.at(-1).selected, saved.at(-1).selected_call];
await tick();
out.second = dom(host);

row("head").find("button", "kn-expand")[0].fire("click");
out.expanded = saved.at(-1).expanded;
await tick();
out.third = dom(host);

host.find("tr").find((tr) => tr.dataset.call === "1").fire("click");
out.afterSubRow = [saved.at(-1).selected, saved.at(-1).selected_call];
await tick();
root.fire("keydown", { key: "ArrowUp" });
out.afterUp = [saved.at(-1).selected, saved.at(-1).selected_call];
state.selected = "head"; state.selected_call = -1;
await tick();
root.fire("keydown", { key: "ArrowDown" });
out.afterDownAtEdge = saved.at(-1).action;

row("block").find("button", "kn-collapse")[0].fire("click");
out.collapsed = saved.at(-1).collapsed;
model.set("progress", { done: 3, total: 7 });
await tick();
out.progress = host.find("div", "kn-progress").map((d) => d.textContent);
console.log(JSON.stringify(out));
"""


def row(path, status, *, name=None, reason="", call=None, calls=1, group=False, depth=0, type_="Dense"):
    return {"path": path, "name": name or path.split("/")[-1], "type": type_, "shape": "(None, 4)", "params": 20,
            "trainable": True, "status": status, "reason": reason, "choice": "", "depth": depth, "calls": calls,
            "call": call, "group": group}


def run_view():
    rows = [
        row("block", "kept", group=True, type_="Functional"),
        row("block/" + EVIL, "removed", depth=1),
        row("shared", "kept", calls=2),
        row("shared", "kept", name="call 0", call=0, calls=2),
        row("shared", "kept", name="call 1", call=1, calls=2),
        {**row("head", "reinitialized", reason="its kernel was (32, 1), now (64, 1)"),
         "act": {"mean": 0.5, "std": 0.25, "zeros": 0.125}},
    ]
    state = {
        "rows": rows, "total": len(rows), "page": 0, "pages": 1, "page_size": 100, "selected": "block/" + EVIL,
        "selected_call": -1, "expanded": [], "collapsed": [], "action": {}, "busy": False, "progress": {},
        "empty": "", "colors": {"kept": "#2e7d32"},
        "inline": {"path": "block/" + EVIL, "call": None, "types": ["Keep", "Dropout", "Noise <b>"], "type": "Keep",
                   "disabled": False, "reason": "", "refused": [["Dense <i>", "needs <u>"]],
                   "fields": [{"name": "rate", "kind": "float", "value": 0.2, "choices": None}]},
    }
    done = subprocess.run([NODE, "--input-type=module", "-", SCRIPT.as_uri(), json.dumps(state)], input=HARNESS,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def view():
    return run_view()


def test_rows_follow_the_dom_contract(view):
    first = {(r["layer"], r["call"]): r for r in view["first"]}
    assert view["rootClass"] == "kn-table"
    assert [(r["cls"].split()[0], r["layer"], r["call"]) for r in view["first"]] == [
        ("kn-row", "block", None), ("kn-row", "block/" + EVIL, None), ("kn-row", "shared", None),
        ("kn-call", "shared", "0"), ("kn-call", "shared", "1"), ("kn-row", "head", None)]
    assert first[("head", None)]["badge"] == ["reinitialized"] and first[("head", None)]["status"] == "reinitialized"
    assert first[("shared", "0")]["badge"] == []  # a call's sub-row: the layer's row has the badge


def test_the_selected_row_carries_its_type_dropdown_and_fields(view):
    selected = [r for r in view["first"] if "kn-selected" in r["cls"].split()]
    assert [r["layer"] for r in selected] == ["block/" + EVIL]
    (options,) = selected[0]["type"]
    assert options == [["Keep", True], ["Dropout", False], ["Noise <b>", False]]
    assert selected[0]["params"] == [[["rate", "0.2"]]]
    assert all(r["type"] == [] for r in view["first"] if r not in selected)  # other rows: their type as text


def test_names_are_shown_as_written(view):
    """Set as text (no escaping of its own, so no "&lt;" on screen); that nothing is parsed as
    HTML is the script's own rule, checked in test_editor.py (no innerHTML and the like)."""
    evil = next(r for r in view["first"] if r["layer"].endswith(EVIL))
    assert evil["name"] == [EVIL] and evil["cls"].split()[1] == "kn-removed"


def test_gestures_come_back_as_traits(view):
    assert view["afterType"] == {"kind": "replace", "layer": "block/" + EVIL, "call": None, "type": "Dropout",
                                 "params": {}, "seq": 1}
    assert view["afterField"] == {"kind": "params", "layer": "block/" + EVIL, "call": None, "type": "Keep",
                                  "params": {"rate": 0.5}, "seq": 2}
    assert view["afterClick"] == ["head", -1]
    assert view["afterSubRow"] == ["shared", 1]
    assert view["afterUp"] == ["shared", 0]  # the row above, within the page
    assert view["afterDownAtEdge"]["kind"] == "move" and view["afterDownAtEdge"]["by"] == 1  # Python turns the page
    assert view["collapsed"] == ["block"]


def test_a_reason_is_shown_as_text_once_expanded(view):
    assert view["expanded"] == ["head"]
    head = next(r for r in view["third"] if r["layer"] == "head")
    assert head["reason"] == ["its kernel was (32, 1), now (64, 1)"]
    assert next(r for r in view["second"] if r["layer"] == "head")["reason"] == []


def test_activation_statistics_are_a_column_when_rows_have_them(view):
    """show_editor(model, data=x): each layer row's mean, std and share of zeros (a bar for it); a
    row without statistics (a call's sub-row, a layer not traced) has an empty cell."""
    assert view["headers"][-1] == "activations"
    by_key = {(r["layer"], r["call"]): r for r in view["first"]}
    assert by_key[("head", None)]["act"] == [["\u03bc 0.500 \u03c3 0.250 0s 13%", "13%"]]
    assert by_key[("shared", "0")]["act"] == [["", None]]


def test_progress_shows_layers_rebuilt_of_total(view):
    assert view["progress"] == [" rebuilding: 3 / 7 layers"]
