"""The layer table: its rows worked out from the session (:func:`table_rows`), listed as plain
dicts (:func:`visible_rows`) and drawn by one anywidget, :class:`LayerTable` (``static/table.js``).

A widget per row costs seconds on DenseNet-sized models (see the ecosystem notes); one widget
that draws a page of rows costs milliseconds. Python decides every row and what the selected
row offers; the browser draws them and sends back clicks and choices as trait changes.

Names, types, shapes, reasons and edits come from model files and users: the browser puts each
in with ``textContent``, and the HTML made here (legend, comparison) escapes them, so a layer
named ``d1<img src=x onerror=alert(1)>`` is shown as those characters.
"""

from __future__ import annotations

import html
import math
import pathlib
from dataclasses import dataclass, replace

import anywidget
import traitlets as t

import kerasnb.actions as actions  # each step's short label comes from its action's record

from ..report import REMOVED, STATUS_COLORS, STATUS_MEANINGS, STATUSES

PAGE_SIZE = 100  # rows drawn at once: a DenseNet (429 layers) is 5 pages, each drawn in milliseconds
_STATIC = pathlib.Path(__file__).parent / "static"


@dataclass(frozen=True)
class TableRow:
    """What one line of the table shows."""

    path: str
    type: str
    output_shape: str
    params: int
    trainable: bool
    status: str
    reason: str
    choice: str  # the edit made at this row, in words, or ""
    is_container: bool
    depth: int
    calls: int = 1  # how many times the original model calls this layer (shared layers: > 1)
    call_choices: tuple = ()  # (call index, the edit made at that call) for a shared layer


def table_rows(session) -> list[TableRow]:
    """Rows of the current model in graph order, each removed layer just after its old predecessor."""
    report = session.report
    current = session.rows()
    choice_of: dict[str, str] = {}
    per_call: dict[str, dict] = {}  # shared layer path -> {call index: edit}

    def note(path, text):
        choice_of[path] = f"{choice_of[path]}; {text}" if choice_of.get(path) else text

    for step in sorted(session.steps, key=_by_call):
        if step.kind == "trainable":
            continue
        if step.kind == "transform":  # a whole-model action: the rows it touched say which
            for path in _touched(step):
                note(path, step.short())
            for name in step.names:
                choice_of.setdefault(name, f"{step.short()} (new)")
            continue
        if step.kind == "prune":
            note(step.target, step.short())
            continue
        if step.kind == "choice":
            what = step.short()
            if isinstance(step.target, tuple):  # one call of a shared layer
                per_call.setdefault(step.target[0], {})[step.target[1]] = what
                what = f"call {step.target[1]}: {what}"
            note(step.target[0] if isinstance(step.target, tuple) else step.target, what)
        for name in step.names:
            after = f" after call {step.target[1]}" if isinstance(step.target, tuple) else ""
            choice_of.setdefault(name, f"{step.what()} (inserted{after})" if step.kind == "insert" else f"{step.label} (new)")
    out: list[TableRow] = []
    removed = []
    for row in report.rows:
        if row.status == REMOVED:
            removed.append(row)
            continue
        info = current.get(row.layer)
        out.append(TableRow(
            row.layer, row.type, info.output_shape if info else "", row.params, row.trainable, row.status,
            row.reason, choice_of.get(row.layer, ""), bool(info and info.is_container), row.layer.count("/"),
            session.calls(row.layer), tuple(sorted(per_call.get(row.layer, {}).items())),
        ))
    order = list(session.original_rows)
    for row in removed:
        info = session.original_rows.get(row.layer)
        line = TableRow(row.layer, row.type, info.output_shape if info else "", row.params, row.trainable,
                        row.status, row.reason, choice_of.get(row.layer, ""), False, row.layer.count("/"),
                        session.calls(row.layer), tuple(sorted(per_call.get(row.layer, {}).items())))
        out.insert(_place(out, order, row.layer), line)
    return out


def predicted_rows(rows: list[TableRow], report, step) -> list[TableRow]:
    """``rows`` with the statuses of a predicted ``report`` (:meth:`Session.predict`) and the rows
    of the layers ``step`` adds, right after the row it acts on: shown while the model is built."""
    by_path = {r.layer: r for r in report.rows}
    target = step.target
    what = step.what()
    added = [TableRow(name, by_path[name].type, "", by_path[name].params, by_path[name].trainable,
                      by_path[name].status, by_path[name].reason,
                      f"{what} (inserted)" if step.kind == "insert" else f"{step.label} (new)", False,
                      name.count("/"))
             for name in step.names if name in by_path]
    out = []
    for row in rows:
        if row.path in step.names:
            continue  # the rows of the step this one changes: drawn anew below
        new = by_path.get(row.path)
        if new is not None:
            choice = what if row.path == target and step.kind == "choice" else row.choice
            row = replace(row, status=new.status, reason=new.reason, choice=choice)
        out.append(row)
        if row.path == target:
            out.extend(added)
    return out


def _touched(step) -> list:
    """Paths of the layers a whole-model step's edits name (once each, in order)."""
    paths = []
    for edit in step.edits:
        target = getattr(edit, "target", None)
        if isinstance(target, tuple) and len(target) == 2 and isinstance(target[1], int):
            target = target[0]
        if isinstance(target, str) and target not in paths:
            paths.append(target)
    if actions.get(step.action).marks_target:  # truncate: the row it cut at
        paths.append(step.target)
    return paths


def _by_call(step):
    """Calls of a shared layer in call order; the rest as the user made them."""
    return step.target[1] if step.kind == "choice" and isinstance(step.target, tuple) else -1


def _place(rows: list[TableRow], order: list[str], path: str) -> int:
    """Index right after the nearest earlier original layer still shown."""
    where = {r.path: i for i, r in enumerate(rows)}
    index = order.index(path) if path in order else len(order)
    for earlier in reversed(order[:index]):
        if earlier in where:
            return where[earlier] + 1
    return len(rows)


def matches(row: TableRow, query: str) -> bool:
    q = query.strip().lower()
    return not q or q in row.path.lower() or q in row.type.lower() or q in row.choice.lower()


def legend() -> str:
    items = "".join(
        f"<span class='kn-legend-item' style='margin-right:14px;white-space:nowrap'>{_badge(s)} "
        f"{html.escape(STATUS_MEANINGS[s])}</span> "
        for s in STATUSES
    )
    return f"<div class='kn-legend' style='font-size:11px;line-height:1.8'>{items}</div>"


def _ancestors(path: str):
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


# ----------------------------------------------------------------------------- the table widget


def visible_rows(rows: list[TableRow], *, query: str = "", collapsed=(), stats=None) -> list[dict]:
    """What the table lists, as the plain dicts :class:`LayerTable` sends: the rows matching
    ``query`` (by name, type or edit; the nested models holding a match stay, for context), less
    the rows inside a folded nested model (``collapsed``), each shared layer followed by one
    sub-row per call (``call`` is its index; ``None`` on layer rows). With ``stats`` (the
    session's activation statistics by path) a layer row has ``act``: its mean, std and share of
    zeros (None where no value was finite), drawn as the table's "activations" column."""
    shown = [r for r in rows if matches(r, query)]
    if query.strip():
        keep = {r.path for r in shown}
        parents = {p for r in shown for p in _ancestors(r.path)}
        shown = [r for r in rows if r.path in keep or r.path in parents]
    folded = tuple(p + "/" for p in collapsed)
    has_inside = {p for r in rows for p in _ancestors(r.path)}
    out = []
    for r in shown:
        if folded and r.path.startswith(folded):
            continue
        out.append({"path": r.path, "name": r.path.split("/")[-1], "type": r.type, "shape": r.output_shape,
                    "params": int(r.params), "trainable": bool(r.trainable), "status": str(r.status),
                    "reason": r.reason, "choice": r.choice, "depth": r.depth, "calls": r.calls, "call": None,
                    "group": bool(r.is_container and r.path in has_inside)})
        if stats and r.path in stats:
            out[-1]["act"] = {key: _finite_or_none(stats[r.path][key]) for key in ("mean", "std", "zeros")}
        if r.calls > 1:
            notes = dict(r.call_choices)
            for i in range(r.calls):
                out.append({"path": r.path, "name": f"call {i}", "type": "", "shape": "", "params": 0,
                            "trainable": bool(r.trainable), "status": str(r.status), "reason": "",
                            "choice": notes.get(i, ""), "depth": r.depth, "calls": r.calls, "call": i,
                            "group": False})
    return out


def _finite_or_none(value):
    value = float(value)
    return value if math.isfinite(value) else None  # NaN and inf do not travel as JSON


class LayerTable(anywidget.AnyWidget):
    """The layer table: one widget that draws one page of rows (``static/table.js``).

    Python decides what is listed (:meth:`show`) and which row is selected; the browser
    draws it and sends back the user's gestures as trait changes: ``selected`` and
    ``selected_call`` (-1 for a layer row), ``page``, ``collapsed`` (folded nested models),
    ``expanded`` (rows showing their reason) and ``action`` (an edit asked for in the
    selected row: ``{"kind": "replace" | "params" | "move", "layer", "call", "type",
    "params", "seq"}``).
    """

    # Read here, as text: given as a path, anywidget watches the file and ties every instance to
    # the class for good (a closure over the widget), so no table, and no model, would be freed.
    _esm = (_STATIC / "table.js").read_text(encoding="utf-8")
    _css = (_STATIC / "table.css").read_text(encoding="utf-8")

    rows = t.List(t.Dict()).tag(sync=True)  # the rows of the page shown
    total = t.Int(0).tag(sync=True)  # rows listed in all pages
    page = t.Int(0).tag(sync=True)
    pages = t.Int(1).tag(sync=True)
    page_size = t.Int(PAGE_SIZE).tag(sync=True)
    selected = t.Unicode("").tag(sync=True)  # a layer path
    selected_call = t.Int(-1).tag(sync=True)  # its call, for a shared layer's sub-row; -1 otherwise
    inline = t.Dict().tag(sync=True)  # the selected row's Type dropdown and parameter fields
    expanded = t.List(t.Unicode()).tag(sync=True)  # rows whose reason is shown
    collapsed = t.List(t.Unicode()).tag(sync=True)  # nested models whose layers are folded away
    action = t.Dict().tag(sync=True)
    busy = t.Bool(False).tag(sync=True)  # a rebuild runs: the row's controls are disabled
    progress = t.Dict().tag(sync=True)  # {"done": n, "total": m} while a long rebuild runs
    empty = t.Unicode("").tag(sync=True)  # said when no row is listed
    colors = t.Dict().tag(sync=True)  # status -> badge colour

    def __init__(self, **kwargs):
        super().__init__(colors={str(k): v for k, v in STATUS_COLORS.items()}, **kwargs)
        self.listed: list[dict] = []  # every row of every page
        self.observe(self._turn_page, "page")

    def show(self, listed: list[dict], empty: str = "") -> None:
        """List ``listed`` (from :func:`visible_rows`); the page holding the selection is shown."""
        self.listed = listed
        with self.hold_sync():
            self.total = len(listed)
            self.pages = max(1, -(-len(listed) // self.page_size))
            self.empty = empty
            at = self.index_of(self.selected, self.selected_call)
            page = at // self.page_size if at is not None else min(self.page, self.pages - 1)
            if page != self.page:
                self.page = page  # _turn_page draws it
            else:
                self._turn_page()

    def index_of(self, path: str, call: int):
        """Where the row of ``path`` (its sub-row ``call``, or -1 for the layer row) is listed, or None."""
        want = None if call < 0 else call
        return next((i for i, r in enumerate(self.listed) if r["path"] == path and r["call"] == want), None)

    def follow(self) -> None:
        """Show the page holding the selected row."""
        at = self.index_of(self.selected, self.selected_call)
        if at is not None and at // self.page_size != self.page:
            self.page = at // self.page_size

    def _turn_page(self, change=None) -> None:
        page = max(0, min(self.page, self.pages - 1))
        if page != self.page:
            self.page = page
            return
        self.rows = self.listed[page * self.page_size:(page + 1) * self.page_size]



def _badge(status: str) -> str:
    color = html.escape(STATUS_COLORS.get(status, "#000"))
    status = html.escape(str(status))
    return (f"<span class='kn-badge' data-status='{status}' style='background:{color};color:white;"
            f"padding:0 5px;border-radius:3px;font-size:11px'>{status}</span>")


def compare_html(frame, note: str) -> str:
    """The probe comparison (a :func:`kerasnb.compare.compare` DataFrame) as an escaped HTML table.

    One line per layer in both models: its status, output shape, and the largest absolute and
    relative difference of its outputs; a ``kept`` layer whose output moved is flagged.
    """
    head = ("<div class='kn-compare-inner' style='font-size:12px;margin-top:8px'>"
            "<b>Outputs on the probe batch: edited model vs original</b>"
            f"<p class='kn-compare-note' style='margin:2px 0'>{html.escape(note)}</p>")
    if frame is None:
        return head + "</div>"
    cols = ("layer", "type", "status", "output shape", "max abs diff", "max rel diff", "")
    lines = []
    for row in frame.itertuples(index=False):
        flag = ("<b style='color:#c62828'>reported kept, but moved</b>" if row.broken_promise else "")
        lines.append(
            f"<tr class='kn-compare-row' data-layer='{html.escape(str(row.layer))}'>"
            f"<td><code>{html.escape(str(row.layer))}</code></td><td>{html.escape(str(row.type))}</td>"
            f"<td>{_badge(str(row.status))}</td><td>{html.escape(str(row.output_shape))}</td>"
            f"<td class='kn-num'>{_diff(row.max_abs_diff)}</td><td class='kn-num'>{_diff(row.max_rel_diff)}</td>"
            f"<td>{flag}</td></tr>"
        )
    header = "".join(f"<th>{c}</th>" for c in cols)
    return (head + f"<table class='kn-layers kn-compare-table'><tr>{header}</tr>{''.join(lines)}</table>"
            "<p class='kn-count'>max rel diff: the largest difference divided by the largest magnitude of the "
            "original output; &mdash; where the output's shape changed</p></div>")


def _diff(value) -> str:
    value = float(value)
    if value != value:  # NaN: the shapes differ
        return "&mdash;"
    return "0" if value == 0 else f"{value:.2e}"


STATS_ORDERS = (("graph order", ""), ("zeros (most first)", "zeros"), ("mean", "mean"), ("std", "std"))


def stats_html(rows, stats: dict, order: str = "") -> str:
    """Each row's activation statistics (from :meth:`Session.activation_stats`) as an escaped HTML
    table: mean, std and share of exact zeros, each a small number and a bar; ``order`` is ``""``
    (graph order) or the column to sort by, largest first (``mean``, ``std``: by magnitude)."""
    if not stats:
        return ""
    lines = [(r.path, r.type, stats[r.path]) for r in rows if r.path in stats]
    if order in ("mean", "std", "zeros"):
        lines.sort(key=lambda line: -abs(line[2][order]) if line[2][order] == line[2][order] else 0.0)
    scale = {k: max((abs(s[k]) for _, _, s in lines if s[k] == s[k]), default=0.0) or 1.0 for k in ("mean", "std")}
    scale["zeros"] = 1.0

    def cell(value, key, color):
        if value != value:  # NaN: no finite value
            return "<td class='kn-num'>&mdash;</td>"
        text = f"{value:.0%}" if key == "zeros" else f"{value:.3g}"
        width = min(100.0, 100.0 * abs(value) / scale[key])
        return (f"<td class='kn-num kn-stat-{key}'>{text}<div style='height:3px;width:{width:.0f}%;"
                f"background:{color}'></div></td>")

    body = "".join(
        f"<tr class='kn-stats-row' data-layer='{html.escape(path)}'><td><code>{html.escape(path)}</code></td>"
        f"<td>{html.escape(kind)}</td>{cell(s['mean'], 'mean', '#1565c0')}{cell(s['std'], 'std', '#6a1b9a')}"
        f"{cell(s['zeros'], 'zeros', '#c62828')}</tr>"
        for path, kind, s in lines)
    return ("<div class='kn-stats-inner' style='font-size:12px'><b>Activations on data</b> (one trace; every call "
            "of a layer together)<table class='kn-layers kn-stats-table'><tr><th>layer</th><th>type</th><th>mean</th>"
            f"<th>std</th><th>zeros</th></tr>{body}</table></div>")
