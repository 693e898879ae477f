"""The ipywidgets panel: a thin view over :class:`Session`.

One HTML table shows every layer; one row of shared controls acts on the selected layer. Every
control calls a plain method of the editor (``select``, ``choose``, ``insert_after``, ...), which
reads the widgets, calls the session, and redraws; an error is shown in the panel and leaves the
model and the history as they were. Setting a widget's ``.value`` or calling ``.click()`` from
Python does exactly what the same gesture does in the browser.

A layer called more than once (a shared layer) has one Layer-dropdown entry per call, and its
row a "calls" hint; replacing, deleting and inserting act on the chosen call, freezing and
pruning on the layer. "Prune..." is offered where the pruning module says the selected layer
can be pruned (asked for that row only, so opening a big model costs no channel analysis).
"""

from __future__ import annotations

import html
import io
import os
import time

import ipywidgets as w

import kerasnb.catalog as catalog  # absolute: kerasnb.__getattr__ recurses on "from .. import catalog"
from ..errors import SurgeryError
from . import table
from .session import Session, call_of, ordered, path_of

_ITEM = w.Layout(width="auto")


class Editor:
    """Edit ``model`` from a panel; ``editor.model`` is always the current result."""

    def __init__(self, model):
        started = time.perf_counter()
        self.session = Session(model)
        self.selected = None  # a layer path, or (path, call_index) for one call of a shared layer
        self._prune_open = None  # the path whose prune controls were opened with "Prune..."
        self._syncing = False  # set while the panel updates its own widgets, so observers stay quiet
        self._param_widgets: dict = {}
        self._shown_in_cell = None

        name = html.escape(model.name)
        self.title = w.HTML(f"<b>kerasnb editor</b> &mdash; model <code>{name}</code>")
        self.summary = w.HTML()
        self.summary.add_class("kn-summary")
        self.message = w.HTML()
        self.message.add_class("kn-message")
        self.legend = w.HTML(table.legend())

        self.search = w.Text(placeholder="search layers by name or type", description="Search",
                             layout=w.Layout(width="320px"))
        self.search.add_class("kn-search")
        self.table = w.HTML(layout=w.Layout(max_height="420px", overflow="auto", border="1px solid #ddd"))
        self.table.add_class("kn-table")

        self.layer_picker = w.Dropdown(description="Layer", layout=w.Layout(width="320px"))
        self.layer_picker.add_class("kn-layer")
        self.type_picker = w.Dropdown(description="Type", layout=w.Layout(width="300px"))
        self.type_picker.add_class("kn-type")
        self.params_box = w.HBox(layout=_ITEM)
        self.params_box.add_class("kn-params")
        self.unavailable = w.HTML()
        self.unavailable.add_class("kn-unavailable")
        self.trainable_box = w.Checkbox(description="trainable", indent=False, layout=w.Layout(width="100px"))
        self.trainable_box.add_class("kn-trainable")
        self.insert_picker = w.Dropdown(description="Insert", layout=w.Layout(width="260px"))
        self.insert_picker.add_class("kn-insert-type")
        self.insert_button = w.Button(description="Insert after", icon="plus", layout=w.Layout(width="120px"))
        self.insert_button.add_class("kn-insert")
        self.delete_button = w.Button(description="Delete", icon="trash", layout=w.Layout(width="90px"))
        self.delete_button.add_class("kn-delete")
        self.prune_button = w.Button(description="Prune\u2026", icon="cut", layout=w.Layout(width="90px"))
        self.prune_button.add_class("kn-prune")
        # Shown once "Prune..." is clicked (or the row is pruned): how much to keep, and what it saves.
        self.prune_slider = w.FloatSlider(value=1.0, min=0.05, max=1.0, step=0.05, description="keep",
                                          readout_format=".0%", continuous_update=False,
                                          layout=w.Layout(width="320px"))
        self.prune_slider.add_class("kn-prune-keep")
        self.prune_info = w.HTML()
        self.prune_info.add_class("kn-prune-info")
        self.prune_box = w.HBox([self.prune_slider, self.prune_info], layout=w.Layout(width="auto", display="none"))
        self.prune_box.add_class("kn-prune-box")

        self.undo_button = w.Button(description="Undo", icon="undo", layout=w.Layout(width="80px"))
        self.redo_button = w.Button(description="Redo", icon="repeat", layout=w.Layout(width="80px"))
        self.reset_button = w.Button(description="Reset", icon="refresh", layout=w.Layout(width="80px"))
        for button, cls in ((self.undo_button, "kn-undo"), (self.redo_button, "kn-redo"), (self.reset_button, "kn-reset")):
            button.add_class(cls)
        self.history_view = w.HTML()
        self.history_view.add_class("kn-history")

        self.save_path = w.Text(value=f"{model.name}_edited.keras", description="Save as", layout=w.Layout(width="320px"))
        self.save_path.add_class("kn-save-path")
        self.save_button = w.Button(description="Save .keras", icon="save", layout=w.Layout(width="110px"))
        self.save_button.add_class("kn-save")

        # The full report, the chart and the code are drawn only while their section is open.
        self.report_view = w.HTML()
        self.chart_view = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.chart_view.add_class("kn-chart")
        self.code_view = w.HTML()
        self.details = w.Accordion(children=[self.report_view, self.chart_view, self.code_view], selected_index=None)
        for i, title in enumerate(("Weight report", "Parameters per layer (chart)", "Python code of the edited model")):
            self.details.set_title(i, title)
        self.details.add_class("kn-details")

        self.controls = w.VBox([
            w.HBox([self.layer_picker, self.type_picker, self.trainable_box], layout=_ITEM),
            self.params_box,
            self.unavailable,
            w.HBox([self.insert_picker, self.insert_button, self.delete_button, self.prune_button], layout=_ITEM),
            self.prune_box,
        ])
        self.widget = w.VBox([
            self.title, self.summary, self.message, self.legend,
            self.search, self.table, self.controls,
            w.HBox([self.undo_button, self.redo_button, self.reset_button, self.save_path, self.save_button], layout=_ITEM),
            self.history_view, self.details,
        ])
        self.widget.add_class("kn-editor")

        self.search.observe(self._on_search, "value")
        self.layer_picker.observe(self._on_layer_picked, "value")
        self.type_picker.observe(self._on_type_picked, "value")
        self.trainable_box.observe(self._on_trainable, "value")
        self.insert_button.on_click(lambda _: self._guard(self._insert_from_widgets))
        self.delete_button.on_click(lambda _: self._guard(lambda: self.delete(self.selected)))
        self.prune_button.on_click(lambda _: self._guard(self._open_prune))
        self.prune_slider.observe(self._on_prune_keep, "value")
        self.undo_button.on_click(lambda _: self._guard(self.undo))
        self.redo_button.on_click(lambda _: self._guard(self.redo))
        self.reset_button.on_click(lambda _: self._guard(self.reset))
        self.save_button.on_click(lambda _: self._guard(lambda: self.save(self.save_path.value)))
        self.details.observe(lambda _: self._draw_details(), "selected_index")

        first = next((i.path for i in self.session.original_rows.values() if not i.is_input), None)
        self._redraw(select=None if first is None else self.session.key(first))
        self.open_seconds = time.perf_counter() - started

    # ------------------------------------------------------------------ results

    @property
    def model(self):
        """The edited model (the original until the first edit)."""
        return self.session.model

    @property
    def original(self):
        return self.session.original

    @property
    def report(self):
        return self.session.report

    @property
    def edits(self) -> tuple:
        """The core edits that turn the original into :attr:`model`, in order."""
        return self.session.edits

    @property
    def notes(self) -> list[str]:
        return self.session.notes

    @property
    def history(self) -> list[tuple]:
        """Every state the history holds, each as its list of edits; ``history[cursor]`` is current."""
        return [tuple(s.edit for s in ordered(steps)) for steps in self.session.history]

    @property
    def steps(self) -> list[str]:
        """The current edits in words, e.g. ``["replace 'dense_1' with Dropout(rate=0.2)"]``."""
        return [s.describe() for s in self.session.steps]

    def code(self) -> str:
        """Python source (functional API) that rebuilds the edited model's architecture."""
        from ..codegen import code

        return code(self.model)

    def chart(self):
        """Matplotlib figure of parameters per layer, coloured by weight status."""
        from ..plotting import params_chart

        return params_chart(self.report)

    def save(self, path: str) -> str:
        """Save the edited model as a ``.keras`` file; returns the path."""
        path = os.path.expanduser(str(path).strip())
        if not path.endswith(".keras"):
            raise SurgeryError(f"Keras saves whole models to files ending in .keras. Received: path={path!r}")
        self.model.save(path)
        self._say(f"Saved the edited model to <code>{html.escape(path)}</code>.", "ok")
        return path

    # ------------------------------------------------------------------ actions (what the controls call)

    def select(self, key) -> None:
        """Make ``key`` what the shared controls act on: a row's path, or ``(path, call_index)``
        for one call of a shared layer (a shared layer's bare path selects its first call)."""
        if path_of(key) not in self._all_paths():
            from ..errors import LayerNotFound, suggest

            path = str(path_of(key))
            raise LayerNotFound(f"No row {path!r} in the table.{suggest(path, self._all_paths())} Received: path={key!r}")
        key = self.session.key(key)
        if key not in self._all_keys():
            raise LayerNotFound(f"{path_of(key)!r} is called {self.session.calls(path_of(key))} time(s); "
                                f"there is no such call. Received: {key!r}")
        self.selected = key
        self._say("", "ok")
        self._sync_controls()
        self.table.value = table.render(self._rows, selected=path_of(key), query=self.search.value)

    def choose(self, label: str, **params) -> None:
        """Give the selected row the type ``label`` (from the catalog) and rebuild."""
        self._edit(lambda: self.session.choose(self.selected, label, params or None), follow=True)

    def set_params(self, **params) -> None:
        """Change the parameters of the selected row's type and rebuild."""
        step = self.session.step_for(self.selected)
        if step is None or step.kind == "trainable":
            raise SurgeryError(f"Row {self.selected!r} has no type with parameters chosen. Choose a type first.")
        self._edit(lambda: self.session.choose(self.selected, step.label, {**step.params, **params}), follow=True)

    def insert_after(self, label: str, **params) -> None:
        self._edit(lambda: self.session.insert_after(self.selected, label, params or None), follow=True)

    def delete(self, key=None) -> None:
        if key is not None and key != self.selected:
            self.select(key)
        self._edit(lambda: self.session.delete(self.selected), follow=True)

    def prune(self, keep: float, by: str = "l1") -> None:
        """Keep the fraction ``keep`` of the selected layer's channels (the strongest by ``by``).

        What the "keep" slider does; ``keep=1`` takes the pruning back. One prune step per layer.
        """
        self._prune_open = path_of(self.selected)
        self._edit(lambda: self.session.prune(self.selected, keep, by), follow=True)

    def set_trainable(self, trainable: bool) -> None:
        self._edit(lambda: self.session.set_trainable(self.selected, trainable))

    def undo(self) -> None:
        self._edit(self.session.undo)

    def redo(self) -> None:
        self._edit(self.session.redo)

    def reset(self) -> None:
        self._edit(self.session.reset)

    # ------------------------------------------------------------------ plumbing

    def _edit(self, action, follow: bool = False) -> None:
        """Run an action; on error say so, and leave model, history and controls as they were."""
        self._say("Rebuilding&hellip;", "busy")  # reaches the browser before the rebuild starts
        try:
            outcome = action()
        except Exception as error:  # shown in the panel; the model and history did not change
            self._say(_plain(error), "error")
            self._sync_controls()
            raise
        self._redraw(select=outcome if follow and outcome else self.selected)
        self._say("", "ok")

    def _guard(self, action) -> None:
        """Callbacks must not raise into the frontend: the error is already in the panel."""
        try:
            action()
        except Exception as error:
            if not self.message.value:
                self._say(_plain(error), "error")

    def _redraw(self, select: str | None = None) -> None:
        self._rows = table.table_rows(self.session)
        keys = self._all_keys()
        if select is not None:
            select = self.session.key(select)  # a shared layer's bare path: its first call
        if select not in keys:
            select = self._nearest(select, keys)
        self.selected = select
        self.summary.value = f"<b>{html.escape(self.report.summary())}</b>"
        self.table.value = table.render(self._rows, selected=path_of(select), query=self.search.value)
        self._fill_layer_picker()
        self._sync_controls()
        self._draw_history()
        self._draw_details()

    def _nearest(self, key, keys):
        # The selected layer vanished (undo of an insert, ...): go to the first editable row.
        rows = self.session.rows()
        return next((k for k in keys if path_of(k) in rows and not rows[path_of(k)].is_input), keys[0] if keys else None)

    def _all_paths(self):
        return [r.path for r in self._rows]

    def _all_keys(self):
        """What the Layer dropdown offers: each row, or each call of a shared layer."""
        return [k for r in self._rows for k in self.session.keys(r.path)]

    def _fill_layer_picker(self) -> None:
        query = self.search.value
        options = [(_option_text(r, k), k) for r in self._rows if table.matches(r, query) for k in self.session.keys(r.path)]
        if self.selected is not None and all(k != self.selected for _, k in options):
            row = next(r for r in self._rows if r.path == path_of(self.selected))
            options.insert(0, (_option_text(row, self.selected), self.selected))
        self._syncing = True
        try:
            self.layer_picker.options = options
            self.layer_picker.value = self.selected
        finally:
            self._syncing = False

    def _sync_controls(self) -> None:
        """Show the selected row's type, parameters, flag and the types it may take."""
        key = self.selected
        path = path_of(key)
        self._syncing = True
        try:
            if key is None:
                self.type_picker.options, self.insert_picker.options = [], []
                self.params_box.children = ()
                self.prune_button.disabled = True
                self.prune_box.layout.display = "none"
                return
            if self.layer_picker.value != key and key in [k for _, k in self.layer_picker.options]:
                self.layer_picker.value = key
            row = next(r for r in self._rows if r.path == path)
            step = self.session.step_for(key)
            offered, refused = self.session.options(key)
            current = step.label if step is not None else catalog.KEEP
            if current not in offered:
                offered = [current] + offered
            self.type_picker.options = offered
            self.type_picker.value = current
            self.unavailable.value = _refused_text(refused)
            call_gone = step is not None and step.kind == "choice" and step.target == key and call_of(key) is not None
            insertable, _ = (self.session.insert_options(key) if row.status != "removed" and not call_gone else ([], {}))
            self.insert_picker.options = insertable
            self.insert_button.disabled = not insertable
            is_input = self.session.rows().get(path) is not None and self.session.rows()[path].is_input
            self.type_picker.disabled = is_input
            self.delete_button.disabled = is_input or catalog.REMOVE not in offered
            self.trainable_box.value = row.trainable
            self.trainable_box.disabled = row.status == "removed" or is_input
            self._build_param_widgets(step)
            self._sync_prune(path)
        finally:
            self._syncing = False

    def _sync_prune(self, path) -> None:
        """Offer "Prune..." where it applies; show the slider and the parameter counts once opened."""
        pruned = self.session.prune_step(path)
        reason = "" if pruned is not None else self.session.prune_reason(self.selected)
        self.prune_button.disabled = bool(reason)
        self.prune_button.tooltip = reason or "remove the weakest channels and slice the layers that read them"
        if pruned is None and (reason or self._prune_open != path):
            self.prune_box.layout.display = "none"
            return
        self.prune_box.layout.display = None
        if pruned is not None:
            before, after = pruned.counts
            self.prune_slider.value = pruned.params["keep"]
            self.prune_info.value = (
                f"<span style='font-size:12px'>model parameters: <b>{before:,}</b> before pruning &rarr; "
                f"<b>{after:,}</b> after ({(after - before) / max(before, 1):+.1%})</span>"
            )
        else:
            self.prune_slider.value = 1.0
            now = self.session.model.count_params()
            self.prune_info.value = (f"<span style='font-size:12px'>model parameters: <b>{now:,}</b>; move the slider "
                                     "to keep fewer channels</span>")

    def _build_param_widgets(self, step) -> None:
        self._param_widgets = {}
        if step is None or step.kind == "trainable" or not step.params:
            self.params_box.children = ()
            return
        entry = catalog.get(step.label)
        children = []
        for name, value in step.params.items():
            widget = _param_widget(entry, name, value)
            widget.add_class(f"kn-param-{name}")
            widget.observe(self._on_param, "value")
            self._param_widgets[name] = widget
            children.append(widget)
        self.params_box.children = tuple(children)

    def _draw_history(self) -> None:
        s = self.session
        steps = s.steps
        self.undo_button.disabled = s.cursor == 0
        self.redo_button.disabled = s.cursor >= len(s.history) - 1
        self.reset_button.disabled = not steps
        items = "".join(f"<li><code>{html.escape(step.describe())}</code></li>" for step in steps)
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        self.history_view.value = (
            f"<div style='font-size:12px'><b>Edits</b> (history step {s.cursor} of {len(s.history) - 1}): "
            + (f"<ol>{items}</ol>" if items else "none yet: the model is the original.")
            + (f"<div><b>Notes</b><ul>{notes}</ul></div>" if notes else "") + "</div>"
        )

    def _draw_details(self) -> None:
        index = self.details.selected_index
        if index == 0:
            self.report_view.value = self.report._repr_html_()
        elif index == 1:
            # PNG bytes in an Image widget: shows the same in every frontend, with or without
            # a matplotlib backend set up for the notebook.
            buffer = io.BytesIO()
            self.chart().savefig(buffer, format="png", dpi=96)
            self.chart_view.value = buffer.getvalue()
        elif index == 2:
            self.code_view.value = f"<pre style='font-size:11px'>{html.escape(self.code())}</pre>"

    def _say(self, text: str, kind: str) -> None:
        colors = {"error": "#c62828", "busy": "#555", "ok": "#2e7d32"}
        self.message.value = (
            f"<div class='kn-{kind}' style='color:{colors[kind]}'>{text}</div>" if text else ""
        )

    # ------------------------------------------------------------------ observers

    def _on_search(self, change) -> None:
        self.table.value = table.render(self._rows, selected=self.selected, query=change["new"])
        self._fill_layer_picker()

    def _on_layer_picked(self, change) -> None:
        if self._syncing or change["new"] is None:
            return
        self._guard(lambda: self.select(change["new"]))

    def _on_type_picked(self, change) -> None:
        if self._syncing or change["new"] is None:
            return
        self._guard(lambda: self.choose(change["new"]))

    def _on_param(self, change) -> None:
        if self._syncing:
            return
        values = {name: widget.value for name, widget in self._param_widgets.items()}
        self._guard(lambda: self.set_params(**values))

    def _on_trainable(self, change) -> None:
        if self._syncing:
            return
        self._guard(lambda: self.set_trainable(change["new"]))

    def _open_prune(self) -> None:
        reason = self.session.prune_reason(self.selected) if self.session.prune_step(path_of(self.selected)) is None else ""
        if reason:
            raise SurgeryError(reason)
        self._prune_open = path_of(self.selected)
        self._say("", "ok")
        self._syncing = True
        try:
            self._sync_prune(path_of(self.selected))
        finally:
            self._syncing = False

    def _on_prune_keep(self, change) -> None:
        if self._syncing:
            return
        self._guard(lambda: self.prune(change["new"]))

    def _insert_from_widgets(self) -> None:
        if not self.insert_picker.value:
            raise SurgeryError("Pick a type to insert first.")
        self.insert_after(self.insert_picker.value)

    # ------------------------------------------------------------------ display

    def _repr_mimebundle_(self, **kwargs):
        # show_editor already drew the panel in this cell; do not draw a second copy of it.
        if self._shown_in_cell is not None and self._shown_in_cell == _execution_count():
            return {"text/plain": repr(self)}
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return f"<kerasnb Editor of {self.original.name!r}: {len(self.edits)} edit(s); {self.report.summary()}>"


def show_editor(model) -> Editor:
    """Open the editor panel on ``model`` and return the :class:`Editor` (keep it in a variable)."""
    editor = Editor(model)
    try:
        from IPython.display import display

        display(editor.widget)
        editor._shown_in_cell = _execution_count()
    except ImportError:  # plain Python: the editor still works from code
        pass
    return editor


# ----------------------------------------------------------------------------- helpers


def _execution_count():
    try:
        from IPython import get_ipython

        shell = get_ipython()
        return shell.execution_count if shell is not None else None
    except ImportError:
        return None


def _option_text(row, key=None) -> str:
    indent = "\u2003" * row.depth
    mark = " (removed)" if row.status == "removed" else ""
    call = f" (call {call_of(key)})" if call_of(key) is not None else ""
    return f"{indent}{row.path.split('/')[-1]} \u2014 {row.type}{call}{mark}"


def _refused_text(refused: dict) -> str:
    if not refused:
        return ""
    items = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in refused.items())
    return (f"<details style='font-size:11px;color:#666'><summary>{len(refused)} type(s) not offered here</summary>"
            f"<ul>{items}</ul></details>")


def _param_widget(entry, name: str, value):
    choices = entry.choices(name)
    if choices:
        options = list(choices) if value in choices else [value] + list(choices)
        return w.Dropdown(options=options, value=value, description=name, layout=w.Layout(width="220px"))
    if isinstance(value, bool):
        return w.Checkbox(value=value, description=name, indent=False)
    if isinstance(value, int):
        return w.IntText(value=value, description=name, continuous_update=False, layout=w.Layout(width="180px"))
    if isinstance(value, float):
        return w.FloatText(value=value, description=name, continuous_update=False, layout=w.Layout(width="180px"))
    return w.Text(value=str(value), description=name, continuous_update=False, layout=w.Layout(width="220px"))


def _plain(error: Exception) -> str:
    """The error in plain words, without a traceback."""
    text = str(error).strip() or type(error).__name__
    if not isinstance(error, SurgeryError):
        text = f"That did not work: {text}"
    return "&#9888; " + html.escape(text)
