"""Drive the editor panel's layer table as the browser does: set the traits its JavaScript sets,
read the traits it draws from (``kerasnb/editor/static/table.js``).

A click on a row sets ``selected`` and ``selected_call`` in one message; a choice in the row's
Type dropdown or a changed parameter field sends an ``action``; the pager sets ``page``.
"""


def select_row(editor, path, call=None):
    """Click the row of ``path`` (or the sub-row of one call of a shared layer)."""
    with editor.table.hold_trait_notifications():  # one message from the browser sets both
        editor.table.selected_call = -1 if call is None else call
        editor.table.selected = path


def _send(editor, **action):
    seq = (editor.table.action or {}).get("seq", 0) + 1
    key = editor.selected
    layer, call = (key if isinstance(key, tuple) else (key, None))
    editor.table.action = {"layer": layer, "call": call, **action, "seq": seq}


def choose_type(editor, label):
    """Choose ``label`` in the selected row's Type dropdown."""
    _send(editor, kind="replace", type=label, params={})


def set_fields(editor, **values):
    """Change parameter fields of the selected row (the others are sent with their shown values)."""
    shown = {f["name"]: f["value"] for f in editor.table.inline["fields"]}
    _send(editor, kind="params", type=editor.table.inline["type"], params={**shown, **values})


def press_arrow(editor, by):
    """An arrow key at the edge of a page: the browser asks Python for the next row."""
    _send(editor, kind="move", by=by)


def offered(editor):
    """The labels of the selected row's Type dropdown."""
    return tuple(editor.table.inline["types"])


def row_type(editor):
    """The type the selected row's dropdown shows."""
    return editor.table.inline["type"]


def fields(editor):
    """``[(name, value)]`` of the selected row's parameter fields."""
    return [(f["name"], f["value"]) for f in editor.table.inline["fields"]]


def refused(editor):
    """``{label: why}`` of the types the selected row does not offer."""
    return dict(editor.table.inline["refused"])


def listed(editor):
    """Every row the table lists, page after page (turning its pages as a user would)."""
    table = editor.table
    page, out = table.page, []
    for n in range(table.pages):
        table.page = n
        out.extend(table.rows)
    table.page = page
    return out


def rows(editor):
    """``(layer path, status)`` of every layer row listed, in order (call sub-rows left out)."""
    return [(r["path"], r["status"]) for r in listed(editor) if r["call"] is None]


def row_of(editor, path):
    return next(r for r in listed(editor) if r["path"] == path and r["call"] is None)


def status_in_table(editor, path):
    return row_of(editor, path)["status"]


def choices_text(editor):
    """The edit column of every row listed, joined: what the table says was done where."""
    return " | ".join(r["choice"] for r in listed(editor))
