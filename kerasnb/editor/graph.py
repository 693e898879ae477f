"""The graph view: a picture of the model, nodes coloured by status, as one anywidget.

Python decides and JavaScript draws: :func:`~kerasnb.editor.layout.graph_layout` places every
layer, ``static/graph.js`` (shipped in the package: no CDN, no build step) draws SVG from it and
sends clicks back as trait changes. The synced traits:

- ``graph``: the layout (see ``graph_layout``); setting it redraws.
- ``statuses``: ``{layer path: status}``; changing it only recolours (no layout).
- ``selected``: a layer path; a click on a node sets it, setting it marks and shows the node.
- ``collapsed``: paths of nested models drawn as one node; a click on a group's header
  toggles it, and the view lays the model out again.
"""

from __future__ import annotations

import pathlib

import anywidget
import traitlets

from ..report import STATUS_COLORS, STATUS_MEANINGS
from .layout import graph_layout, status_map

STATIC = pathlib.Path(__file__).parent / "static"
# status -> [colour, meaning]: the table's badge colours, the legend's tooltips
PALETTE = {str(status): [color, STATUS_MEANINGS[status]] for status, color in STATUS_COLORS.items()}

CSS = """
.kn-graph{font-family:var(--jp-ui-font-family,sans-serif);font-size:11px;border:1px solid #cfd8dc;
  border-radius:4px;background:#fff;user-select:none}
.kn-graph-bar{display:flex;flex-wrap:wrap;align-items:center;gap:4px;padding:3px 4px;border-bottom:1px solid #eceff1}
.kn-graph-bar button{font-size:11px;min-width:24px;padding:1px 6px;cursor:pointer}
.kn-graph-legend{display:flex;flex-wrap:wrap;gap:8px;margin-left:6px;color:#37474f}
.kn-legend-item{display:inline-flex;align-items:center;gap:3px;white-space:nowrap}
.kn-swatch{display:inline-block;width:10px;height:10px;border-radius:2px}
.kn-graph-svg{display:block;width:100%;cursor:grab;touch-action:none}
.kn-graph.kn-panning .kn-graph-svg{cursor:grabbing}
.kn-graph .kn-node{cursor:pointer}
.kn-graph .kn-node rect{stroke:#37474f;stroke-width:0.6}
.kn-graph .kn-node text{font-size:11px;text-anchor:middle;pointer-events:none}
.kn-graph .kn-node .kn-type{font-size:9.5px;opacity:0.85}
.kn-graph .kn-node.kn-selected rect{stroke:#ff6f00;stroke-width:3}
.kn-graph .kn-edge{fill:none;stroke:#90a4ae;stroke-width:1.2;pointer-events:none}
.kn-graph .kn-group-box{fill:#f5f7f8;stroke:#90a4ae;stroke-dasharray:4 3}
.kn-graph .kn-group-header{cursor:pointer}
.kn-graph .kn-group-header text{font-size:11px;font-weight:600}
.kn-graph .kn-group.kn-selected .kn-group-box{stroke:#ff6f00;stroke-width:3;stroke-dasharray:none}
.kn-graph.kn-far text{display:none}
"""


class GraphView(anywidget.AnyWidget):
    """An interactive picture of a model's graph (zoom with the wheel, pan by dragging)."""

    # Text, not a path: anywidget ties every instance of a class whose _esm is a file path to
    # that class for good (to reload the file), so closed views and their models were never freed.
    _esm = (STATIC / "graph.js").read_text(encoding="utf-8")
    _css = CSS

    graph = traitlets.Dict().tag(sync=True)
    statuses = traitlets.Dict().tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)
    collapsed = traitlets.List(traitlets.Unicode()).tag(sync=True)
    palette = traitlets.Dict(PALETTE).tag(sync=True)
    height = traitlets.Int(480).tag(sync=True)  # pixels

    def __init__(self, **kwargs):
        self._model = None
        super().__init__(**kwargs)

    @classmethod
    def for_model(cls, model, statuses=None, **kwargs) -> "GraphView":
        """A view of ``model``; ``statuses``: a WeightReport or ``{layer path: status}``."""
        view = cls(**kwargs)
        view.show_model(model, statuses)
        return view

    def show_model(self, model, statuses=None) -> None:
        """Lay ``model`` out again and show it (statuses as in :meth:`for_model`; None keeps them)."""
        if statuses is not None:
            statuses = status_map(statuses)
        graph = graph_layout(model, statuses if statuses is not None else self.statuses,
                             collapsed=self.collapsed)
        groups = {group["id"] for group in graph["groups"]}
        self._model = model
        with self.hold_sync():
            if statuses is not None:
                self.statuses = statuses
            self.graph = graph
            kept = [path for path in self.collapsed if path in groups]
            if kept != list(self.collapsed):
                self.set_trait("collapsed", kept)

    @traitlets.validate("statuses")
    def _statuses_as_text(self, proposal):
        return status_map(proposal["value"])

    @traitlets.observe("collapsed")
    def _relayout(self, change):
        if self._model is not None and self.graph:
            self.graph = graph_layout(self._model, self.statuses, collapsed=change["new"])

    @traitlets.observe("selected")
    def _reveal(self, change):
        """A layer inside a collapsed nested model opens the models around it."""
        path = change["new"] or ""
        hiding = [group for group in self.collapsed if path.startswith(group + "/")]
        if hiding:
            self.collapsed = [group for group in self.collapsed if group not in hiding]
