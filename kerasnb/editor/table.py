"""The layer table as one HTML string: cheap to build and to draw for hundreds of layers.

Names, types, shapes, reasons and edits come from model files and users: every one of them is
escaped where it enters the HTML (text and attributes alike), so a layer named
``d1<img src=x onerror=alert(1)>`` is shown as those characters.

A widget per row costs seconds on DenseNet-sized models (see the ecosystem notes); one HTML
block costs milliseconds. Nested models are ``<details>`` groups the browser folds by itself.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import kerasnb.catalog as catalog  # absolute: kerasnb.__getattr__ recurses on "from .. import catalog"

from ..report import REMOVED, STATUS_COLORS, STATUS_MEANINGS, STATUSES

COLUMNS = ("layer", "type", "output shape", "params", "trainable", "weights", "edit")
WIDTHS = ("30%", "15%", "16%", "9%", "7%", "12%", "11%")


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


def table_rows(session) -> list[TableRow]:
    """Rows of the current model in graph order, each removed layer just after its old predecessor."""
    report = session.report
    current = session.rows()
    choice_of: dict[str, str] = {}

    def note(path, text):
        choice_of[path] = f"{choice_of[path]}; {text}" if choice_of.get(path) else text

    for step in sorted(session.steps, key=_by_call):
        if step.kind == "trainable":
            continue
        if step.kind == "transform":  # a whole-model action: the rows it touched say which
            for path in _touched(step):
                note(path, _SHORT[step.label](step))
            for name in step.names:
                choice_of.setdefault(name, f"{_SHORT[step.label](step)} (new)")
            continue
        if step.kind == "prune":
            note(step.target, f"pruned to {step.params['keep']:.0%}")
            continue
        if step.kind == "choice":
            what = ("block dropped" if step.block else "deleted") \
                if not step.names and not step.params and step.label == catalog.REMOVE else step.what()
            if isinstance(step.target, tuple):  # one call of a shared layer
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
            session.calls(row.layer),
        ))
    order = list(session.original_rows)
    for row in removed:
        info = session.original_rows.get(row.layer)
        line = TableRow(row.layer, row.type, info.output_shape if info else "", row.params, row.trainable,
                        row.status, row.reason, choice_of.get(row.layer, ""), False, row.layer.count("/"),
                        session.calls(row.layer))
        out.insert(_place(out, order, row.layer), line)
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
    if step.label == "cut":
        paths.append(step.target)
    return paths


# How the edit column names each whole-model action (its full text is in the history).
_SHORT = {
    "change_input": lambda s: "input " + ", ".join("None" if d is None else str(d) for d in s.params["shape"])
                              + (f" ({s.params['channels']})" if s.params["channels"] else ""),
    "like": lambda s: f"{s.params['label']} (like {s.params['like'] if isinstance(s.params['like'], str) else s.params['like'][0]})",
    "swap": lambda s: f"{s.params['old']} \u2192 {s.params['new']}",
    "fold": lambda s: "fold BatchNorm",
    "cut": lambda s: "cut here",
    "lora": lambda s: f"LoRA rank {s.params['rank']}",
    "merge_lora": lambda s: "LoRA merged",
}


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


def render(rows: list[TableRow], *, selected: str | None = None, query: str = "") -> str:
    """The table's HTML; rows not matching ``query`` (by name, type or edit) are left out."""
    shown = [r for r in rows if matches(r, query)]
    if query.strip():
        # Keep the groups that hold a match so a hit inside a nested model keeps its context.
        keep = {r.path for r in shown}
        parents = {p for r in shown for p in _ancestors(r.path)}
        shown = [r for r in rows if r.path in keep or r.path in parents]
    parts = [f"<div class='kn-table-inner'>{_STYLE}"]
    if not shown:
        parts.append(f"<p class='kn-empty'>No layer matches {html.escape(query)!s}.</p>")
    else:
        parts.append(_block(shown, 0, len(shown), selected, prefix=""))
    parts.append(f"<p class='kn-count'>{len(shown)} of {len(rows)} rows shown</p></div>")
    return "".join(parts)


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


def _block(rows: list[TableRow], start: int, stop: int, selected, prefix: str) -> str:
    """Rows[start:stop] at one nesting level: plain rows in tables, containers as <details>."""
    out, plain = [], []
    i = start
    while i < stop:
        row = rows[i]
        inside = i + 1
        while inside < stop and rows[inside].path.startswith(row.path + "/"):
            inside += 1
        if row.is_container and inside > i + 1:
            if plain:
                out.append(_table(plain, selected))
                plain = []
            summary = _cells_text(row)
            out.append(
                f"<details open class='kn-group' data-layer='{html.escape(row.path)}'>"
                f"<summary class='kn-row{' kn-selected' if row.path == selected else ''}'>{summary}</summary>"
                f"<div style='margin-left:14px'>{_block(rows, i + 1, inside, selected, row.path + '/')}</div></details>"
            )
            i = inside
            continue
        plain.append(row)
        i += 1
    if plain:
        out.append(_table(plain, selected))
    return "".join(out)


def _table(rows: list[TableRow], selected) -> str:
    cols = "".join(f"<col style='width:{w}'>" for w in WIDTHS)
    head = "".join(f"<th>{c}</th>" for c in COLUMNS)
    body = "".join(_tr(r, r.path == selected) for r in rows)
    return f"<table class='kn-layers'><colgroup>{cols}</colgroup><tr>{head}</tr>{body}</table>"


def _tr(row: TableRow, selected: bool) -> str:
    cls = "kn-row kn-selected" if selected else "kn-row"
    removed = " kn-removed" if row.status == REMOVED else ""
    name = html.escape(row.path.split("/")[-1])
    reason = html.escape(row.reason)
    return (
        f"<tr class='{cls}{removed}' data-layer='{html.escape(row.path)}'>"
        f"<td title='{html.escape(row.path)}'><code>{name}</code>{_calls(row)}</td><td>{html.escape(row.type)}</td>"
        f"<td>{html.escape(row.output_shape)}</td><td class='kn-num'>{row.params:,}</td>"
        f"<td>{'yes' if row.trainable else 'no'}</td>"
        f"<td class='kn-status' title='{reason}'>{_badge(row.status)}</td>"
        f"<td class='kn-choice'>{html.escape(row.choice)}</td></tr>"
    )


def _calls(row: TableRow) -> str:
    """A hint on a shared layer's row: each call is edited on its own (the Layer dropdown lists them)."""
    if row.calls <= 1:
        return ""
    return (f" <span class='kn-calls' title='called {row.calls} times, sharing its weights; pick a call in "
            f"the Layer dropdown'>&times;{row.calls} calls</span>")


def _cells_text(row: TableRow) -> str:
    return (
        f"<code>{html.escape(row.path.split('/')[-1])}</code>{_calls(row)} &nbsp;{html.escape(row.type)}, "
        f"{row.params:,} params, {'trainable' if row.trainable else 'frozen'} &nbsp;{_badge(row.status)}"
        f"{' &nbsp;<i>' + html.escape(row.choice) + '</i>' if row.choice else ''}"
    )


def _badge(status: str) -> str:
    color = html.escape(STATUS_COLORS.get(status, "#000"))
    status = html.escape(str(status))
    return (f"<span class='kn-badge' data-status='{status}' style='background:{color};color:white;"
            f"padding:0 5px;border-radius:3px;font-size:11px'>{status}</span>")


_STYLE = """<style>
.kn-layers{border-collapse:collapse;table-layout:fixed;width:100%;font-size:12px}
.kn-layers th{text-align:left;border-bottom:1px solid #ccc;font-weight:600}
.kn-layers td{padding:1px 4px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.kn-layers tr.kn-selected td, summary.kn-selected{background:#fff3c4}
.kn-layers tr.kn-removed td{color:#888;text-decoration:line-through}
.kn-layers tr.kn-removed td.kn-status, .kn-layers tr.kn-removed td.kn-choice{text-decoration:none}
.kn-num{text-align:right}
.kn-group summary{font-size:12px;cursor:pointer;padding:2px 0}
.kn-count{font-size:11px;color:#666;margin:2px 0}
.kn-calls{font-size:10px;color:#6a1b9a;border:1px solid #ce93d8;border-radius:3px;padding:0 3px}
</style>"""


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
