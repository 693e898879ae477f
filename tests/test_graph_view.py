"""The graph view: its layout (plain Python data) and the widget's traits; one headless-browser check."""

import json
import pathlib
import re
import shutil
import subprocess
import sys
import time

import keras
import pytest
from keras import layers as L

import kerasnb
from conftest import FACTORIES, nested_net, residual_net, seed_mlp, shared_net
from kerasnb.editor.layout import graph_layout

HOSTILE = "<img src=x onerror=alert(1)>"


# ----------------------------------------------------------------------------- helpers


def by_id(graph):
    return {node["id"]: node for node in graph["nodes"]}


def edge_set(graph):
    return {tuple(edge) for edge in graph["edges"]}


def overlap(a, b):
    return a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]


def assert_well_drawn(graph):
    """What any picture must satisfy: edges point down, nothing overlaps, groups hold their nodes."""
    nodes = by_id(graph)
    assert len(nodes) == len(graph["nodes"]), "one node per layer"
    for src, dst in graph["edges"]:
        if src != dst:
            assert nodes[src]["y"] + nodes[src]["h"] <= nodes[dst]["y"], f"{src} -> {dst} does not go down"
    boxes = list(nodes.values())
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not overlap(a, b), f"{a['id']} overlaps {b['id']}"
    groups = {g["id"]: g for g in graph["groups"]}
    for node in boxes:
        group = groups.get(node["group"])
        inside = group is not None and (group["x"] <= node["x"] and node["x"] + node["w"] <= group["x"] + group["w"]
                                        and group["y"] <= node["y"] and node["y"] + node["h"] <= group["y"] + group["h"])
        if node["group"]:
            assert inside, f"{node['id']} is outside its group {node['group']}"
        for other in groups.values():  # a group's box holds no stranger
            member = node["group"] == other["id"] or node["group"].startswith(other["id"] + "/") or node["id"] == other["id"]
            if not member:
                assert not overlap(node, other), f"{node['id']} is drawn inside group {other['id']}"
    assert len(graph["paths"]) == len(graph["edges"])
    ends = {**nodes, **{g["id"]: g for g in graph["groups"] if g["collapsed"]}}  # met at the group's box
    for (src, dst), points in zip(graph["edges"], graph["paths"]):
        s, d = ends[src], ends[dst]
        assert s["x"] <= points[0][0] <= s["x"] + s["w"] and points[0][1] in (s["y"], s["y"] + s["h"])
        assert d["x"] <= points[-1][0] <= d["x"] + d["w"] and points[-1][1] in (d["y"], d["y"] + d["h"])


def layer_paths(model, prefix=""):
    """Paths of the layers Keras lists (nested models opened)."""
    names = []
    for layer in model.layers:
        names.append(prefix + layer.name)
        if isinstance(layer, keras.Model):
            names.extend(layer_paths(layer, prefix + layer.name + "/"))
    return names


# ----------------------------------------------------------------------------- layout of small models


class TestLayout:
    def test_linear_model_is_a_column_of_its_layers(self):
        """Four layers, three edges, each layer below the one feeding it."""
        graph = graph_layout(seed_mlp())
        assert set(by_id(graph)) == {"input_layer", "dense", "dense_1", "dense_2"}
        assert edge_set(graph) == {("input_layer", "dense"), ("dense", "dense_1"), ("dense_1", "dense_2")}
        ys = [by_id(graph)[n]["y"] for n in ("input_layer", "dense", "dense_1", "dense_2")]
        assert ys == sorted(ys) and len(set(ys)) == 4
        assert_well_drawn(graph)

    def test_residual_block_branch_and_concatenate(self):
        """Every connection of the residual model is an edge, and nothing else is."""
        graph = graph_layout(residual_net())
        assert edge_set(graph) == {
            ("image", "stem"), ("stem", "res_conv1"), ("res_conv1", "res_bn"), ("res_bn", "res_conv2"),
            ("stem", "res_add"), ("res_conv2", "res_add"), ("res_add", "res_relu"),
            ("res_relu", "branch"), ("res_relu", "concat"), ("branch", "concat"),
            ("concat", "gap"), ("gap", "drop"), ("drop", "cls"), ("drop", "reg"),
        }
        assert_well_drawn(graph)

    def test_skip_connection_spans_ranks_beside_the_layers_it_skips(self):
        """The stem -> add edge crosses three ranks and passes none of the skipped layers' boxes."""
        graph = graph_layout(residual_net())
        nodes = by_id(graph)
        skip = graph["paths"][graph["edges"].index(["stem", "res_add"])]
        skipped = [nodes[n] for n in ("res_conv1", "res_bn", "res_conv2")]
        assert nodes["res_add"]["y"] > max(n["y"] for n in skipped)
        assert len(skip) > 2, "a long edge bends through points of its own"
        for x, y in skip[1:-1]:
            for node in skipped:
                assert not (node["x"] <= x <= node["x"] + node["w"] and node["y"] <= y <= node["y"] + node["h"])

    def test_branches_of_a_concatenate_sit_side_by_side(self):
        """res_relu feeds branch and concat; the skip around branch does not overlap branch."""
        graph = graph_layout(residual_net())
        nodes = by_id(graph)
        assert nodes["res_relu"]["y"] < nodes["branch"]["y"] < nodes["concat"]["y"]
        assert {("res_relu", "concat"), ("branch", "concat")} <= edge_set(graph)

    def test_shared_layer_is_one_node_with_all_its_calls(self):
        """A layer called twice is one node; its call on its own output is a loop beside it."""
        graph = graph_layout(shared_net())
        nodes = by_id(graph)
        assert set(nodes) == {"x", "shared", "cat", "out"}
        assert nodes["shared"]["calls"] == 2
        assert edge_set(graph) == {("x", "shared"), ("shared", "shared"), ("shared", "cat"), ("cat", "out")}
        loop = graph["paths"][graph["edges"].index(["shared", "shared"])]
        assert max(x for x, _ in loop) > nodes["shared"]["x"] + nodes["shared"]["w"]
        assert_well_drawn(graph)

    def test_cycle_through_shared_layers_still_lays_out(self):
        """a -> b -> a (a called twice): both edges drawn, the one closing the cycle goes up."""
        x = keras.Input((4,), name="x")
        a, b = L.Dense(4, name="a"), L.Dense(4, name="b")
        out = L.Dense(1, name="out")(a(b(a(x))))
        graph = graph_layout(keras.Model(x, out))
        nodes = by_id(graph)
        assert edge_set(graph) == {("x", "a"), ("a", "b"), ("b", "a"), ("a", "out")}
        back = graph["paths"][graph["edges"].index(["b", "a"])]
        assert back[0][1] == nodes["b"]["y"] and back[-1][1] == nodes["a"]["y"] + nodes["a"]["h"]
        boxes = list(nodes.values())
        assert not any(overlap(p, q) for i, p in enumerate(boxes) for q in boxes[i + 1:])

    def test_nested_model_is_a_group_around_its_layers(self):
        """The encoder's layers sit in its box; edges go into its input layer and out of its last layer."""
        graph = graph_layout(nested_net())
        nodes = by_id(graph)
        # Keras numbers unnamed inputs (input_layer, input_layer_1, ...) by what was built before
        (inner_in,) = [n["id"] for n in graph["nodes"] if n["type"] == "InputLayer" and n["group"] == "encoder"]
        assert inner_in.startswith("encoder/input_layer")
        assert set(nodes) == {"x", inner_in, "encoder/inner_a", "encoder/inner_b", "head"}
        (group,) = graph["groups"]
        assert (group["id"], group["name"], group["collapsed"], group["parent"]) == ("encoder", "encoder", False, "")
        assert {n["id"] for n in graph["nodes"] if n["group"] == "encoder"} == {
            inner_in, "encoder/inner_a", "encoder/inner_b"}
        assert edge_set(graph) == {("x", inner_in), (inner_in, "encoder/inner_a"),
                                   ("encoder/inner_a", "encoder/inner_b"), ("encoder/inner_b", "head")}
        assert_well_drawn(graph)

    def test_collapsed_nested_model_is_one_node(self):
        """Collapsed, the encoder is a single node with its name, wired where the model is."""
        graph = graph_layout(nested_net(), collapsed=["encoder"])
        nodes = by_id(graph)
        assert set(nodes) == {"x", "encoder", "head"}
        assert nodes["encoder"]["name"] == "encoder" and nodes["encoder"]["type"] == "Sequential"
        assert edge_set(graph) == {("x", "encoder"), ("encoder", "head")}
        assert graph["groups"][0]["collapsed"] is True
        assert_well_drawn(graph)

    def test_model_nested_twice_and_called_twice(self):
        """A shared inner model inside an outer one: each level a group, both calls wired to the inner input."""
        inner = keras.Sequential([keras.Input((3,), name="inner_in"), L.Dense(3, name="core")], name="inner")
        i = keras.Input((3,), name="i")
        middle = keras.Model(i, L.Dense(3, name="mid_out")(inner(i)), name="middle")
        x = keras.Input((3,), name="x")
        y = keras.Input((3,), name="y")
        out = L.Add(name="sum")([middle(x), inner(y)])
        graph = graph_layout(keras.Model([x, y], out))
        ids = set(by_id(graph))
        assert {"middle/inner/core", "middle/mid_out"} <= ids
        assert {g["id"]: g["parent"] for g in graph["groups"]} == {"middle": "", "middle/inner": "middle"}
        # the inner model is tied: drawn once (inside middle), its outer call wired to the same nodes
        assert edge_set(graph) == {
            ("x", "middle/i"), ("middle/i", "middle/inner/inner_in"),
            ("middle/inner/inner_in", "middle/inner/core"), ("middle/inner/core", "middle/mid_out"),
            ("middle/mid_out", "sum"), ("y", "middle/inner/inner_in"), ("middle/inner/core", "sum"),
        }
        assert_well_drawn(graph)

    def test_inputs_shared_with_a_nested_model_are_drawn_once(self):
        """A task built on its backbone's own inputs: each input one node, wired into the group, no loops."""
        tokens = keras.Input((5,), name="tokens")
        backbone = keras.Model(tokens, L.Dense(4, name="encode")(tokens), name="backbone")
        task = keras.Model(backbone.inputs, L.Dense(2, name="logits")(backbone(backbone.inputs)), name="task")
        graph = graph_layout(task)
        assert edge_set(graph) == {("tokens", "backbone/encode"), ("backbone/encode", "logits")}
        assert graph["aliases"] == {"backbone/tokens": "tokens"}
        assert_well_drawn(graph)

    @pytest.mark.parametrize("kind", sorted(FACTORIES))
    def test_every_layer_has_a_node(self, make, kind):
        """The nodes are exactly the report's layers (same paths, nested ones included)."""
        model = make(kind)
        graph = graph_layout(model)
        drawn = {n["id"] for n in graph["nodes"]} | {g["id"] for g in graph["groups"]}
        assert set(layer_paths(model)) <= drawn
        table = {row.path for row in kerasnb.describe(model)}
        assert table == drawn | set(graph["aliases"])  # every row of the table can be shown
        assert_well_drawn(graph)

    def test_statuses_from_a_report(self):
        """Given a report, each node's status is its row's; a removed layer has no node."""
        model = residual_net()
        result = kerasnb.replace(model, "res_bn", L.Dropout(0.1, name="res_drop"))
        graph = graph_layout(result.model, result.report)
        nodes = by_id(graph)
        assert "res_bn" not in nodes
        assert nodes["res_drop"]["status"] == "new"
        for row in result.report:
            if row.status != "removed":
                assert nodes[row.layer]["status"] == row.status

    def test_hostile_names_stay_plain_strings(self):
        """A layer named like HTML is kept as those characters in the data the browser gets."""
        x = keras.Input((3,), name="in" + HOSTILE)
        out = L.Dense(2, name="d" + HOSTILE)(x)
        graph = graph_layout(keras.Model(x, out, name="m" + HOSTILE))
        assert {n["name"] for n in graph["nodes"]} == {"in" + HOSTILE, "d" + HOSTILE}
        assert json.loads(json.dumps(graph))["edges"] == [["in" + HOSTILE, "d" + HOSTILE]]

    def test_not_a_model_is_refused(self):
        with pytest.raises(kerasnb.SurgeryError, match="Received"):
            graph_layout(L.Dense(3))

    def test_layout_works_without_widget_libraries(self):
        """With ipywidgets and anywidget unimportable, the layout still loads and runs."""
        code = ("import sys; sys.modules['ipywidgets'] = None; sys.modules['anywidget'] = None\n"
                "import keras\n"
                "from kerasnb.editor.layout import graph_layout\n"
                "x = keras.Input((2,), name='x')\n"
                "g = graph_layout(keras.Model(x, keras.layers.Dense(1, name='d')(x)))\n"
                "print(g['edges'])")
        root = pathlib.Path(kerasnb.__file__).parent.parent
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().splitlines()[-1] == "[['x', 'd']]"


# ----------------------------------------------------------------------------- big models


@pytest.mark.parametrize("name", ["densenet121", "resnet50"])
def test_big_model_lays_out_fast_and_clean(request, name):
    """DenseNet121 (429 layers) and ResNet50: well drawn; the time is printed (benchmarks measure it)."""
    model = request.getfixturevalue(name)
    graph_layout(model)
    start = time.perf_counter()
    graph = graph_layout(model)
    elapsed = time.perf_counter() - start
    print(f"\n{name}: {len(graph['nodes'])} nodes, {len(graph['edges'])} edges laid out in {elapsed * 1000:.0f} ms")
    assert len(graph["nodes"]) == len(model.layers)
    assert_well_drawn(graph)


# ----------------------------------------------------------------------------- the widget


@pytest.fixture
def GraphView():
    pytest.importorskip("anywidget")
    from kerasnb.editor.graph import GraphView

    return GraphView


class TestWidget:
    def test_for_model_shows_the_layout_and_statuses(self, GraphView):
        model = residual_net()
        result = kerasnb.replace(model, "res_bn", L.Dropout(0.1, name="res_drop"))
        view = GraphView.for_model(result.model, result.report)
        assert view.graph == graph_layout(result.model, result.report)
        assert view.statuses["res_drop"] == "new" and view.statuses["res_bn"] == "removed"
        assert all(isinstance(v, str) and type(v) is str for v in view.statuses.values())

    def test_statuses_recolour_without_moving_nodes(self, GraphView):
        view = GraphView.for_model(residual_net())
        before = json.dumps(view.graph)
        view.statuses = {"stem": "reinitialized", "cls": "new"}
        assert json.dumps(view.graph) == before
        assert view.statuses == {"stem": "reinitialized", "cls": "new"}

    def test_selected_round_trips(self, GraphView):
        """Set from Python, or from the browser (a state message), the trait carries the layer path."""
        view = GraphView.for_model(residual_net())
        view.selected = "res_add"
        assert view.get_state("selected") == {"selected": "res_add"}
        view.set_state({"selected": "branch"})  # what a click in the browser sends
        assert view.selected == "branch"

    def test_header_click_collapses_and_expands(self, GraphView):
        view = GraphView.for_model(nested_net())
        view.set_state({"collapsed": ["encoder"]})  # what a click on the group's header sends
        assert "encoder" in by_id(view.graph) and "encoder/inner_a" not in by_id(view.graph)
        view.set_state({"collapsed": []})
        assert "encoder/inner_a" in by_id(view.graph)

    def test_selecting_a_hidden_layer_opens_its_group(self, GraphView):
        view = GraphView.for_model(nested_net())
        view.collapsed = ["encoder"]
        view.selected = "encoder/inner_b"
        assert view.collapsed == [] and "encoder/inner_b" in by_id(view.graph)

    def test_show_model_lays_out_the_new_model(self, GraphView):
        view = GraphView.for_model(seed_mlp())
        view.show_model(residual_net(), {"stem": "kept"})
        assert "res_add" in by_id(view.graph) and view.statuses == {"stem": "kept"}

    def test_hostile_names_in_traits(self, GraphView):
        x = keras.Input((3,), name="x")
        out = L.Dense(2, name="d" + HOSTILE)(x)
        view = GraphView.for_model(keras.Model(x, out), {"d" + HOSTILE: "new"})
        view.selected = "d" + HOSTILE
        state = view.get_state()
        assert state["selected"] == "d" + HOSTILE and state["statuses"] == {"d" + HOSTILE: "new"}

    def test_javascript_ships_in_the_package(self, GraphView):
        """The widget's ES module is the file in the package (no CDN, no build step)."""
        view = GraphView()
        source = (pathlib.Path(kerasnb.__file__).parent / "editor" / "static" / "graph.js").read_text()
        assert view._esm == source
        assert "http" not in source.replace("http://www.w3.org/2000/svg", "")
        assert not re.search(r"\.(inner|outer)HTML|insertAdjacentHTML|document\.write", source)


# ----------------------------------------------------------------------------- in a browser


def _chromium():
    if not shutil.which("chromium") and not pathlib.Path("/usr/bin/chromium").exists():
        pytest.skip("needs Chromium at /usr/bin/chromium")
    return pytest.importorskip("playwright.sync_api", reason="needs playwright")


PAGE = """<!doctype html><html><head><style>{css}</style></head><body><div id=host style="width:800px"></div>
<script type="module">
const state = {state};
const handlers = {{}};
window.sent = [];
const model = {{
  get: (k) => state[k],
  set: (k, v) => {{ state[k] = v; (handlers["change:" + k] || []).forEach((f) => f()); }},
  on: (e, f) => {{ (handlers[e] = handlers[e] || []).push(f); }},
  off: (e, f) => {{ handlers[e] = (handlers[e] || []).filter((g) => g !== f); }},
  save_changes: () => {{ window.sent.push(JSON.parse(JSON.stringify(state))); }},
}};
window.model = model;
const widget = await import("http://kn.test/graph.js");
widget.default.render({{ model, el: document.getElementById("host") }});
window.ready = true;
</script></body></html>"""


def test_graph_renders_and_clicks_in_chromium(GraphView):
    """The shipped ES module draws nodes by status, sends clicks, recolours and escapes names."""
    sync_api = _chromium()
    x = keras.Input((3,), name="x")
    h = L.Dense(2, name="d" + HOSTILE)(x)
    model = keras.Model(x, L.Dense(1, name="head")(L.Concatenate(name="cat")([x, h])))
    view = GraphView.for_model(model, {"x": "kept", "d" + HOSTILE: "new", "cat": "kept", "head": "reinitialized"})
    state = {k: view.get_state(k)[k] for k in ("graph", "statuses", "selected", "collapsed", "palette", "height")}
    from kerasnb.editor.graph import CSS, STATIC

    page_html = PAGE.format(css=CSS, state=json.dumps(state))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium")
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda error: errors.append(error))
            page.route("http://kn.test/graph.js", lambda r: r.fulfill(
                body=(STATIC / "graph.js").read_text(), content_type="text/javascript",
                headers={"Access-Control-Allow-Origin": "*"}))
            page.route("http://kn.test/", lambda r: r.fulfill(body=page_html, content_type="text/html"))
            page.goto("http://kn.test/")
            page.wait_for_function("window.ready === true")
            assert page.locator(".kn-graph g.kn-node").count() == 4
            hostile = page.locator("g.kn-node").filter(has_text="d<img")
            assert hostile.get_attribute("data-layer") == "d" + HOSTILE
            assert hostile.get_attribute("data-status") == "new"
            assert hostile.locator("rect").get_attribute("fill") == "#1565c0"
            assert page.locator("img").count() == 0, "a layer name became HTML"
            page.locator('g.kn-node[data-layer="head"]').click()
            assert page.evaluate("window.sent.at(-1).selected") == "head"
            assert page.locator("g.kn-node.kn-selected").get_attribute("data-layer") == "head"
            page.evaluate("window.model.set('statuses', {head: 'new'})")
            assert page.locator('g.kn-node[data-layer="head"]').get_attribute("data-status") == "new"
            assert page.locator('g.kn-node[data-layer="head"] rect').get_attribute("fill") == "#1565c0"
            page.evaluate("window.model.set('selected', 'cat')")
            assert page.locator("g.kn-node.kn-selected").get_attribute("data-layer") == "cat"
            box = page.locator("svg.kn-graph-svg").get_attribute("viewBox")
            page.mouse.move(400, 200)
            page.mouse.wheel(0, -300)
            assert page.locator("svg.kn-graph-svg").get_attribute("viewBox") != box, "the wheel zooms"
            assert errors == []
        finally:
            browser.close()
