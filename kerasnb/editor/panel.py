"""The ipywidgets panel: a thin view over :class:`Session`.

The layer table (:class:`kerasnb.editor.table.LayerTable`, one anywidget) lists every layer a
page at a time; a click selects a row, and the selected row carries its Type dropdown and its
parameter fields; arrow keys move the selection; nested models fold; a shared layer's calls are
sub-rows; a row's status reason unfolds as text. The graph picture (:mod:`kerasnb.editor.graph`)
beside it selects the same layer. Under them, the controls for the selected row (insert, delete,
freeze, prune, truncate, LoRA, change input, "Heads..." on a MultiHeadAttention, "Configure..."
with ``option=value, ...`` read as literals) and the whole-model actions. Every action of
:mod:`kerasnb.actions` names its widget (``Action.control``).

Every control calls a plain method of the editor named as the core's verb (``select``, ``replace``,
``insert``, ``truncate``, ...), which calls the session and redraws; an error is shown in the panel and leaves the model and the
history as they were. Setting a widget's ``.value``, a table trait (``table.selected``,
``table.action``) or calling ``.click()`` from Python does exactly what the same gesture does in
the browser.

Speed: an edit whose statuses the session can work out from shapes alone
(:meth:`Session.predict`) shows them in the table and the graph before the model is rebuilt (the
widget messages leave while the rebuild runs); the rebuilt model's report replaces them. A
rebuild that runs longer than half a second shows "layers rebuilt / total" in the table.

The panel decides nothing about a row: which types are offered or refused (and why), its
parameters, whether it can be deleted, frozen, pruned or have a layer inserted after it all come
from :meth:`Answers.row_actions` (``session.answers``), and the controls only draw that answer.

Every action shows its own outcome in the message line (a fresh message each time). An action's
error is shown only when nothing was committed; when an edit was committed but drawing part of
the panel failed afterwards, the message says the edit was made and what could not be drawn.
While a rebuild runs the controls are disabled; they come back however it ends (an error, an
interrupt).

Lifetime: the widgets' callbacks reach the editor through weak references, so an editor nobody
holds is freed (and its widgets closed); ``editor.close()`` closes every widget it made at once.
``show_editor`` keeps the panel it displayed alive, one per model: opening the editor again on
the same model closes the earlier panel.

A layer called more than once (a shared layer) has one sub-row (and one Layer-dropdown entry)
per call, and its row a "calls" hint; replacing, deleting and inserting act on the chosen call,
freezing and pruning on the layer. "Prune..." is offered where the pruning module says the selected layer
can be pruned (asked for that row only, so opening a big model costs no channel analysis); its "by"
dropdown ranks the channels (l1, l2, bn_scale, and apoz / taylor when the editor was opened with
``data=``), and the info line gives the model's parameters and MACs per sample before -> after.
"Prune model..." prunes the whole model to a budget (a ratio of channels, or a fraction of the
parameters or MACs kept): as its slider moves, the info line says what Apply would give, worked
out without building; Apply makes it one step (undo takes it back).

Whole-model actions are steps like any other (undo, redo and reset take them back): "Change
input..." on an input row (a shape and how the first layers adapt to new channels), "Apply to
all N layers like this one" once a type is chosen for a row, "Cut here" (this layer's output
becomes the model's), and, for the whole model, "Swap activation...", "Fold BatchNorm" and "Split
activations" (offered while a layer has a fused activation). Opened
with a probe batch (``show_editor(model, probe=x)``), the report section also compares every
layer's output on it in the edited model and the original.

Transformers (keras-hub backbones and tasks, whose backbone is a nested group of rows): on a
block's row the delete button reads "Drop block" (the block passes on its residual stream, as
:func:`kerasnb.delete` decides); "LoRA (rank r)" turns LoRA on for the selected row (a Dense,
EinsumDense, Embedding or convolution layer, or a block's attention query and value projections)
and "LoRA off" takes that row's LoRA step back; for the whole model, "LoRA on attention..." puts
it on every attention projection, and "Merge LoRA" folds the factors into the kernels. With
LoRA on, only its factors train (the message line and the whole-model row say how many
parameters train).

Quantizing: "Quantize", with its mode (int8, int4, float8) beside it, is offered on a row Keras can
quantize (a Dense, EinsumDense, Embedding or ReversibleEmbedding; a block holding such layers) and
its tooltip says why not elsewhere; "Quantize model..." quantizes every such layer, its box showing
the size now and, when the editor was opened with ``data=``, each layer's drift quantized alone and
the size after (``keep float`` leaves the most sensitive ones float). Undo restores the float model.
"""

from __future__ import annotations

import html
import io
import os
import time
import weakref
from contextlib import contextmanager

import ipywidgets as w

import kerasnb.actions as facade  # the editor's one internal facade (a rebuild's progress, memo while drawing)
from ..errors import SaveFailed, SurgeryError, first_line
from . import table

try:  # the graph picture; the panel works without it (a table only)
    from .graph import GraphView
    from .layout import status_map
except ImportError:  # pragma: no cover -- only while the graph view is missing
    GraphView = None
from .answers import LORA_PROJECTIONS, SWAP_TO, options_text, parse_options
from .session import CHANGE_INPUT_MODES, LORA_RANK, Session, call_of, change_text, edits_of, path_of


def _item():
    """A fresh auto-width layout: one per box, so closing an editor closes only its own."""
    return w.Layout(width="auto")


def _grows(pixels: int):
    """A button's layout: as wide as its label needs (never cut to "Save .ker..."), at least ``pixels``."""
    return w.Layout(width="auto", min_width=f"{pixels}px")


PROGRESS_AFTER = 0.5  # seconds a rebuild runs before the table shows its progress
_SHOWN: dict = {}  # id(model) -> the Editor that show_editor displayed for it (kept alive while shown)


class Editor:
    """The editor panel on a model, and its state: ``editor.model`` is always the current result.

    ``kerasnb.show_editor(model)`` makes one and displays it in a notebook. Every control of the
    panel calls a method of this class, so whatever a click does, code can do: ``select`` a row,
    then ``replace``, ``insert``, ``delete``, ``configure``, ``set_trainable``, ``prune``,
    ``truncate``, ``enable_lora`` ... act on it; ``prune_global``, ``change_input``,
    ``swap_activation``, ``fold_batchnorm``, ``split_activations``, ``merge_lora`` act on the
    whole model. Each action is one step of the history (``undo``, ``redo``, ``reset``); an
    action that raises (a ``SurgeryError``, shown in the panel's message line too) leaves the
    model and the history as they were. The model passed in is never changed.

    The examples of the methods start from this model and editor::

        inputs = keras.Input((8,), name="x")
        hidden = keras.layers.Dense(6, activation="relu", name="hidden")(inputs)
        dropped = keras.layers.Dropout(0.1, name="drop")(hidden)
        model = keras.Model(inputs, keras.layers.Dense(2, name="out")(dropped))
        editor = kerasnb.show_editor(model)

    Args:
        model: A built functional or Sequential model (a keras-hub backbone or task too).
        probe: A small batch the model takes; the report then compares every layer's output
            on it in the edited model and the original.
        data: Examples to measure channels on when pruning (``"apoz"``, ``"taylor"``), and the
            output drift of each layer quantized alone ("Quantize model...").

    Attributes:
        model: The edited model (the original until the first edit).
        original: The model the editor was opened on.
        report: The ``WeightReport`` of ``model`` against ``original``.
        edits: The core edits that turn ``original`` into ``model``, in order:
            ``kerasnb.apply(editor.original, editor.edits)`` makes the same model.
        notes: The notes of the current result.
        steps: The current steps in words.
        selected: The selected row: a path, or ``(path, call_index)``.
        widget: The panel's root widget.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(6, activation="relu", name="hidden")(inputs)
        >>> dropped = keras.layers.Dropout(0.1, name="drop")(hidden)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(dropped))
        >>> editor = kerasnb.show_editor(model)
        >>> editor.select("drop")
        >>> editor.replace("Dropout", rate=0.5)
        >>> editor.model.get_layer(editor.report.with_status("new")[0]).rate
        0.5
        >>> len(editor.edits), editor.report.status("out")
        (1, 'kept_input_changed')
        >>> editor.undo()
        >>> editor.edits
        ()
        >>> editor.close()
    """

    def __init__(self, model, probe=None, data=None):
        started = time.perf_counter()
        self.session = Session(model, probe=probe, data=data)
        self.selected = None  # a layer path, or (path, call_index) for one call of a shared layer
        self._prune_open = None  # the path whose prune controls were opened with "Prune..."
        self._input_open = None  # the input row whose controls were opened with "Change input..."
        self._widen_open = None  # the row whose controls were opened with "Widen..."
        self._heads_open = None  # the MultiHeadAttention row whose controls were opened with "Heads..."
        self._configure_open = None  # the row whose controls were opened with "Configure..."
        self._syncing = False  # set while the panel updates its own widgets, so observers stay quiet
        self._shown_in_cell = None
        self._seq = 0  # messages shown so far: each one is a new value, even with the same text
        self._message_plain = ""
        self._shown_error = None  # id of the error the message line shows (so it is not shown twice)
        self._closed = False
        self._predicted = False  # statuses from shapes are shown for the edit under way
        self._early_problems: list = []  # parts that failed to draw before the rebuild ended

        self._build_views(model)
        self._build_row_controls()
        self._build_row_transforms()
        self._build_row_options()
        self._build_model_controls()
        self._build_history_and_save(model)
        self._build_details()
        self._build_global_prune()
        self._build_quantize()
        self._build_inspect()
        self._assemble()
        self._connect()

        self._show_problems(self._redraw(select=self.session.default_key()))
        self.open_seconds = time.perf_counter() - started

    # ------------------------------------------------------------------ building the panel

    def _build_views(self, model) -> None:
        """A title, the summary and message lines, the legend, the search box, the table and the graph."""
        name = html.escape(model.name)
        self.title = w.HTML(f"<b>kerasnb editor</b> &mdash; model <code>{name}</code>")
        self.summary = w.HTML()
        self.summary.add_class("kn-summary")
        self.message = w.HTML()
        self.message.add_class("kn-message")
        self.legend = w.HTML(table.legend())

        self.search = w.Text(placeholder="search layers by name, type or edit", description="Search",
                             layout=w.Layout(width="360px"))
        self.search.add_class("kn-search")
        # The table: click a row to select it; the selected row carries its Type dropdown and
        # parameter fields (see table.LayerTable). The graph picture selects the same layer.
        self.table = table.LayerTable()
        self.graph = GraphView(height=420) if GraphView is not None else None
        self._graph_model = None  # the model the picture shows

    def _build_row_controls(self) -> None:
        """The controls of the selected row: layer picker, trainable, insert, delete, prune (its box opens)."""
        # Every row (each call of a shared layer) by name: a keyboard way to reach any layer.
        self.layer_picker = w.Dropdown(description="Layer", layout=w.Layout(width="auto", min_width="320px"))
        self.layer_picker.add_class("kn-layer")
        self.trainable_box = w.Checkbox(description="trainable", indent=False, layout=w.Layout(width="100px"))
        self.trainable_box.add_class("kn-trainable")
        self.insert_picker = w.Dropdown(description="Insert", layout=w.Layout(width="auto", min_width="260px"))
        self.insert_picker.add_class("kn-insert-type")
        self.insert_button = w.Button(description="Insert after", icon="plus", layout=_grows(120))
        self.insert_button.add_class("kn-insert")
        self.delete_button = w.Button(description="Delete", icon="trash", layout=_grows(115))
        self.delete_button.add_class("kn-delete")
        self.prune_button = w.Button(description="Prune\u2026", icon="cut", layout=_grows(90))
        self.prune_button.add_class("kn-prune")
        # Shown once "Prune..." is clicked (or the row is pruned): how much to keep, and what it saves.
        self.prune_slider = w.FloatSlider(value=1.0, min=0.05, max=1.0, step=0.05, description="keep",
                                          readout_format=".0%", continuous_update=False,
                                          layout=w.Layout(width="320px"))
        self.prune_slider.add_class("kn-prune-keep")
        # What ranks the channels: kernel norms, BatchNorm scales; with data=, measured on examples too.
        self.prune_by = w.Dropdown(options=self.session.criteria(), value="l1", description="by",
                                   layout=w.Layout(width="160px"))
        self.prune_by.add_class("kn-prune-by")
        self.prune_info = w.HTML()
        self.prune_info.add_class("kn-prune-info")
        self.prune_box = w.HBox([self.prune_slider, self.prune_by, self.prune_info],
                                layout=w.Layout(width="auto", display="none"))
        self.prune_box.add_class("kn-prune-box")

    def _build_row_transforms(self) -> None:
        """Whole-model actions started from a row: replace_all, truncate, change the input (its box opens)."""
        # Whole-model actions on a row: give its type to every layer like it; truncate the model there;
        # on an input row, a new input shape (shown once "Change input..." is clicked).
        self.like_button = w.Button(description="Apply to all like this", icon="clone", layout=w.Layout(width="auto"))
        self.like_button.add_class("kn-like")
        self.cut_button = w.Button(description="Cut here", icon="crop", layout=_grows(100))
        self.cut_button.add_class("kn-cut")
        # Net2DeeperNet: a layer set to the identity after this row; the model computes what it did.
        self.deepen_button = w.Button(description="Add identity layer after", icon="plus-square", layout=_grows(180),
                                      tooltip="insert after this layer a layer set to the identity (same outputs)")
        self.deepen_button.add_class("kn-deepen")
        # Block expansion: a copy of this block whose output projections are zero; same outputs.
        self.grow_button = w.Button(description="Grow a block after", icon="clone", layout=_grows(150),
                                    tooltip="add after this block a copy of it that adds nothing yet (same outputs)")
        self.grow_button.add_class("kn-grow")
        # Net2WiderNet: more units or filters, copies of existing ones (shown once "Widen..." is clicked).
        self.widen_button = w.Button(description="Widen\u2026", icon="arrows-h", layout=_grows(100),
                                     tooltip="more units or filters, copies of existing ones (same outputs)")
        self.widen_button.add_class("kn-widen")
        self.widen_width = w.BoundedIntText(value=2, min=2, max=1_000_000, description="width",
                                            layout=w.Layout(width="200px"))
        self.widen_width.add_class("kn-widen-width")
        self.widen_apply = w.Button(description="Apply", icon="check", layout=_grows(90))
        self.widen_apply.add_class("kn-widen-apply")
        self.widen_info = w.HTML()
        self.widen_box = w.HBox([self.widen_width, self.widen_apply, self.widen_info],
                                layout=w.Layout(width="auto", display="none"))
        self.widen_box.add_class("kn-widen-box")
        self.input_button = w.Button(description="Change input\u2026", icon="sign-in", layout=_grows(150))
        self.input_button.add_class("kn-change-input")
        self.input_shape = w.Text(description="shape", placeholder="e.g. 8, 8, 1", layout=w.Layout(width="220px"))
        self.input_shape.add_class("kn-input-shape")
        self.channels_picker = w.Dropdown(options=CHANGE_INPUT_MODES, value="sum", description="mode",
                                          layout=w.Layout(width="200px"))
        self.channels_picker.add_class("kn-channels")
        self.input_apply = w.Button(description="Apply", icon="check", layout=_grows(90))
        self.input_apply.add_class("kn-input-apply")
        self.input_info = w.HTML(value="<span style='font-size:11px;color:#666'>mode: how the first layers take a "
                                       "new number of channels (sum: exact for grey copies; repeat; reinit)</span>")
        self.input_box = w.HBox([self.input_shape, self.channels_picker, self.input_apply, self.input_info],
                                layout=w.Layout(width="auto", display="none"))
        self.input_box.add_class("kn-input-box")

    def _build_row_options(self) -> None:
        """Row actions with a box that opens: remove attention heads, rebuild the layer with changed options."""
        # "Heads...": on a MultiHeadAttention row, how many heads to keep (the weakest go), and Apply.
        self.heads_button = w.Button(description="Heads\u2026", icon="scissors", layout=_grows(95),
                                     tooltip="remove the weakest attention heads of this MultiHeadAttention")
        self.heads_button.add_class("kn-heads")
        self.heads_slider = w.IntSlider(value=1, min=1, max=1, description="heads kept", continuous_update=False,
                                        layout=w.Layout(width="320px"))
        self.heads_slider.add_class("kn-heads-keep")
        self.heads_apply = w.Button(description="Apply", icon="check", layout=_grows(90))
        self.heads_apply.add_class("kn-heads-apply")
        self.heads_info = w.HTML()
        self.heads_info.add_class("kn-heads-info")
        self.heads_box = w.HBox([self.heads_slider, self.heads_apply, self.heads_info],
                                layout=w.Layout(width="auto", display="none"))
        self.heads_box.add_class("kn-heads-box")
        # "Configure...": the layer rebuilt from its config with some options changed (its weights reinitialized).
        self.configure_button = w.Button(description="Configure\u2026", icon="sliders", layout=_grows(120),
                                         tooltip="rebuild this layer from its config with some options changed")
        self.configure_button.add_class("kn-configure")
        self.configure_text = w.Text(description="options", placeholder='e.g. activation="gelu", units=32',
                                     layout=w.Layout(width="420px"))
        self.configure_text.add_class("kn-configure-options")
        self.configure_apply = w.Button(description="Apply", icon="check", layout=_grows(90))
        self.configure_apply.add_class("kn-configure-apply")
        self.configure_info = w.HTML(value="<span style='font-size:11px;color:#666'>option=value, ... with Python "
                                           "literals (quote strings); the layer's weights are made anew</span>")
        self.configure_box = w.HBox([self.configure_text, self.configure_apply, self.configure_info],
                                    layout=w.Layout(width="auto", display="none"))
        self.configure_box.add_class("kn-configure-box")

    def _build_model_controls(self) -> None:
        """Whole-model actions: swap an activation, fold BatchNorm, LoRA (on the row and on attention), merge."""
        # Whole-model actions: swap an activation everywhere (from / to shown once opened), fold BatchNorm.
        self.swap_button = w.Button(description="Swap activation\u2026", icon="exchange", layout=_grows(175))
        self.swap_button.add_class("kn-swap")
        self.swap_from = w.Dropdown(description="from", layout=w.Layout(width="180px"))
        self.swap_from.add_class("kn-swap-from")
        self.swap_to = w.Dropdown(description="to", layout=w.Layout(width="180px"))
        self.swap_to.add_class("kn-swap-to")
        self.swap_apply = w.Button(description="Swap", icon="check", layout=_grows(90))
        self.swap_apply.add_class("kn-swap-apply")
        self.swap_box = w.HBox([self.swap_from, self.swap_to, self.swap_apply],
                               layout=w.Layout(width="auto", display="none"))
        self.swap_box.add_class("kn-swap-box")
        self.fold_button = w.Button(description="Fold BatchNorm", icon="compress", layout=_grows(140))
        self.fold_button.add_class("kn-fold")
        self.split_button = w.Button(description="Split activations", icon="chain-broken", layout=_grows(150))
        self.split_button.add_class("kn-split")
        # LoRA on the selected row (its layer, or a block's attention projections), and off again.
        self.lora_rank = w.IntText(value=LORA_RANK, description="LoRA rank", continuous_update=False,
                                   layout=w.Layout(width="150px"))
        self.lora_rank.add_class("kn-lora-rank")
        self.lora_button = w.Button(description=f"LoRA (rank {LORA_RANK})", icon="compress",
                                    layout=_grows(130))
        self.lora_button.add_class("kn-lora")
        self.lora_off_button = w.Button(description="LoRA off", icon="times", layout=_grows(100))
        self.lora_off_button.add_class("kn-lora-off")
        self.lora_info = w.HTML()
        self.lora_info.add_class("kn-lora-info")
        self.lora_row = w.HBox([self.lora_rank, self.lora_button, self.lora_off_button, self.lora_info],
                               layout=_item())
        self.lora_row.add_class("kn-lora-row")
        # LoRA on every attention projection (rank and which projections shown once opened), and merging it.
        self.lora_all_button = w.Button(description="LoRA on attention\u2026", icon="compress",
                                        layout=_grows(170))
        self.lora_all_button.add_class("kn-lora-all")
        self.lora_all_rank = w.IntText(value=LORA_RANK, description="rank", continuous_update=False,
                                       layout=w.Layout(width="130px"))
        self.lora_all_rank.add_class("kn-lora-all-rank")
        self.lora_which = w.Dropdown(options=tuple(LORA_PROJECTIONS), value="query, value", description="projections",
                                     layout=w.Layout(width="auto", min_width="300px"))
        self.lora_which.add_class("kn-lora-which")
        self.lora_all_apply = w.Button(description="Apply LoRA", icon="check", layout=_grows(125))
        self.lora_all_apply.add_class("kn-lora-all-apply")
        self.lora_all_off = w.Button(description="LoRA off", icon="times", layout=_grows(100))
        self.lora_all_off.add_class("kn-lora-all-off")
        self.lora_all_info = w.HTML()
        self.lora_all_info.add_class("kn-lora-all-info")
        self.lora_box = w.HBox([self.lora_all_rank, self.lora_which, self.lora_all_apply, self.lora_all_off,
                                self.lora_all_info], layout=w.Layout(width="auto", display="none"))
        self.lora_box.add_class("kn-lora-box")
        self.merge_button = w.Button(description="Merge LoRA", icon="compress", layout=_grows(120))
        self.merge_button.add_class("kn-merge-lora")
        self.global_prune_button = w.Button(description="Prune model\u2026", icon="cut", layout=_grows(140),
                                            tooltip="remove the weakest channels of the whole model, to a budget")
        self.global_prune_button.add_class("kn-global-prune-open")
        self.model_row = w.HBox([w.HTML("<b style='font-size:12px'>Whole model:</b>"), self.swap_button,
                                 self.fold_button, self.split_button, self.lora_all_button, self.merge_button,
                                 self.global_prune_button],
                                layout=_item())
        self.model_row.add_class("kn-model-actions")

    def _build_history_and_save(self, model) -> None:
        """Undo, redo, reset, the history, and saving."""
        self.undo_button = w.Button(description="Undo", icon="undo", layout=_grows(80))
        self.redo_button = w.Button(description="Redo", icon="repeat", layout=_grows(80))
        self.reset_button = w.Button(description="Reset", icon="refresh", layout=_grows(80))
        for button, cls in ((self.undo_button, "kn-undo"), (self.redo_button, "kn-redo"), (self.reset_button, "kn-reset")):
            button.add_class(cls)
        self.history_view = w.HTML()
        self.history_view.add_class("kn-history")

        self.save_path = w.Text(value=f"{model.name}_edited.keras", description="Save as", layout=w.Layout(width="320px"))
        self.save_path.add_class("kn-save-path")
        self.save_button = w.Button(description="Save .keras", icon="save", tooltip="save the edited model as a .keras file",
                                    layout=w.Layout(width="auto", min_width="125px"))
        self.save_button.add_class("kn-save")

    def _build_details(self) -> None:
        """The folded sections: the full report (and comparison), the chart, the code."""
        # The full report, the chart and the code are drawn only while their section is open.
        self.report_view = w.HTML()
        self.compare_view = w.HTML()  # with a probe batch: every layer's output, edited vs original
        self.compare_view.add_class("kn-compare")
        self.chart_view = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.chart_view.add_class("kn-chart")
        self.code_view = w.HTML()
        self.details = w.Accordion(children=[w.VBox([self.report_view, self.compare_view]), self.chart_view,
                                             self.code_view], selected_index=None)
        for i, title in enumerate(("Weight report", "Parameters per layer (chart)", "Python code of the edited model")):
            self.details.set_title(i, title)
        self.details.add_class("kn-details")

    def _build_global_prune(self) -> None:
        """"Prune model...": the budget, its slider, criterion and rounding (its box opens)."""
        # "Prune model...": kerasnb.prune_global to a budget, with params and MACs before -> after
        # worked out without building as the slider moves (shown once opened).
        self.global_budget = w.Dropdown(options=[(text, kind) for kind, text in _GLOBAL_BUDGET_TEXT.items()],
                                        value="macs", description="budget", layout=w.Layout(width="auto"))
        self.global_budget.add_class("kn-global-prune-budget")
        self.global_target = w.FloatSlider(value=0.5, min=0.05, max=1.0, step=0.05, description="keep at most",
                                           readout_format=".0%", continuous_update=True,
                                           layout=w.Layout(width="340px"))
        self.global_target.add_class("kn-global-prune-target")
        self.global_by = w.Dropdown(options=self.session.criteria(), value="l1", description="by",
                                    layout=w.Layout(width="160px"))
        self.global_by.add_class("kn-global-prune-by")
        self.global_round = w.Dropdown(options=[("none", None), ("8", 8)], value=None, description="round to",
                                       layout=w.Layout(width="160px"))
        self.global_round.add_class("kn-global-prune-round")
        self.global_apply = w.Button(description="Apply", icon="check", layout=_grows(90))
        self.global_apply.add_class("kn-global-prune-apply")
        self.global_info = w.HTML()
        self.global_info.add_class("kn-global-prune-info")
        self.global_prune_box = w.VBox([
            w.HBox([self.global_budget, self.global_target, self.global_by, self.global_round, self.global_apply],
                   layout=_item()),
            self.global_info,
        ], layout=w.Layout(width="auto", display="none"))
        self.global_prune_box.add_class("kn-global-prune")

    def _build_quantize(self) -> None:
        """"Quantize" on a row (its mode beside it) and "Quantize model..." (mode, layers kept float,
        the sensitivity table with data, the size before -> after; its box opens)."""
        from ..quantization import MODES

        self.quantize_mode = w.Dropdown(options=MODES, value="int8", description="quantize",
                                        layout=w.Layout(width="190px"))
        self.quantize_mode.add_class("kn-quantize-mode")
        self.quantize_button = w.Button(description="Quantize", icon="compress", layout=_grows(110),
                                        tooltip="store this layer's weights in fewer bits with Keras's quantize()")
        self.quantize_button.add_class("kn-quantize")
        self.quantize_info = w.HTML()
        self.quantize_info.add_class("kn-quantize-info")
        self.quantize_row = w.HBox([self.quantize_mode, self.quantize_button, self.quantize_info], layout=_item())
        self.quantize_row.add_class("kn-quantize-row")
        self.quantize_model_button = w.Button(description="Quantize model\u2026", icon="compress", layout=_grows(160),
                                              tooltip="quantize every layer Keras can quantize; undo restores floats")
        self.quantize_model_button.add_class("kn-quantize-model-open")
        self.model_row.children = tuple(self.model_row.children) + (self.quantize_model_button,)
        self.quantize_model_mode = w.Dropdown(options=MODES, value="int8", description="mode",
                                              layout=w.Layout(width="170px"))
        self.quantize_model_mode.add_class("kn-quantize-model-mode")
        self.quantize_keep = w.BoundedIntText(value=0, min=0, max=1_000_000, description="keep float",
                                              layout=w.Layout(width="170px"))
        self.quantize_keep.add_class("kn-quantize-keep")
        self.quantize_model_apply = w.Button(description="Apply", icon="check", layout=_grows(90))
        self.quantize_model_apply.add_class("kn-quantize-model-apply")
        self.quantize_model_info = w.HTML()
        self.quantize_model_info.add_class("kn-quantize-model-info")
        self.quantize_box = w.VBox([
            w.HBox([self.quantize_model_mode, self.quantize_keep, self.quantize_model_apply], layout=_item()),
            self.quantize_model_info,
        ], layout=w.Layout(width="auto", display="none"))
        self.quantize_box.add_class("kn-quantize-box")

    def _build_inspect(self) -> None:
        """"Ablate" (the row's output patched to zeros) and, with data=, each layer's activation statistics."""
        self.ablate_button = w.Button(description="Ablate", icon="ban", layout=_grows(90),
                                      tooltip="replace this layer's output by zeros (kerasnb.patch): what depends on it?")
        self.ablate_button.add_class("kn-ablate")
        self.stats_order = w.Dropdown(options=list(table.STATS_ORDERS), value="", description="sort by",
                                      layout=w.Layout(width="auto"))
        self.stats_order.add_class("kn-stats-order")
        self.stats_view = w.HTML()
        self.stats_view.add_class("kn-stats")
        self.stats_box = w.VBox([self.stats_order, self.stats_view],
                                layout=w.Layout(width="auto", display=None if self.session.data is not None else "none"))
        self.stats_box.add_class("kn-stats-box")

    def _assemble(self) -> None:
        """The panel's widget tree, and its finalizer (closes every widget once the editor is closed or freed)."""
        self.controls = w.VBox([
            w.HBox([self.layer_picker, self.trainable_box, self.like_button], layout=_item()),
            w.HBox([self.insert_picker, self.insert_button, self.delete_button, self.prune_button, self.cut_button,
                    self.widen_button, self.deepen_button, self.grow_button, self.input_button, self.heads_button,
                    self.configure_button, self.ablate_button],
                   layout=_item()),
            self.prune_box,
            self.input_box,
            self.heads_box,
            self.widen_box,
            self.configure_box,
            self.lora_row,
            self.quantize_row,
            self.model_row,
            self.swap_box,
            self.lora_box,
            self.global_prune_box,
            self.quantize_box,
        ])
        views = [self.graph, self.table] if self.graph is not None else [self.table]
        self.widget = w.VBox([
            self.title, self.summary, self.message, self.legend,
            self.search, *views, self.stats_box, self.controls,
            w.HBox([self.undo_button, self.redo_button, self.reset_button, self.save_path, self.save_button],
                   layout=_item()),
            self.history_view, self.details,
        ])
        self.widget.add_class("kn-editor")
        for control in _tree(self.widget):  # descriptions ("projections", "LoRA rank") in full
            if hasattr(getattr(control, "style", None), "description_width"):
                control.style.description_width = "initial"
        # Closes every widget of the panel once the editor is closed or freed. It holds the root
        # widget, never the editor: the callbacks below reach the editor through weak references.
        self._finalizer = weakref.finalize(self, _close_tree, self.widget)
        self._finalizer.atexit = False

    def _connect(self) -> None:
        """Every control to its method, through weak references (the widgets never keep the editor alive)."""
        self.search.observe(_Weak(self, "_on_search"), "value")
        self.layer_picker.observe(_Weak(self, "_on_layer_picked"), "value")
        self.table.observe(_Weak(self, "_on_table_select"), ["selected", "selected_call"])
        self.table.observe(_Weak(self, "_on_table_action"), "action")
        self.table.observe(_Weak(self, "_on_table_fold"), "collapsed")
        if self.graph is not None:
            self.graph.observe(_Weak(self, "_on_graph_select"), "selected")
        self.session.on_predict = _Weak(self, "_show_predicted")
        self.trainable_box.observe(_Weak(self, "_on_trainable"), "value")
        self.insert_button.on_click(_Weak(self, "_click", "_insert_from_widgets"))
        self.delete_button.on_click(_Weak(self, "_click", "_delete_selected"))
        self.prune_button.on_click(_Weak(self, "_click", "_open_prune"))
        self.prune_slider.observe(_Weak(self, "_on_prune_keep"), "value")
        self.prune_by.observe(_Weak(self, "_on_prune_by"), "value")
        self.global_prune_button.on_click(_Weak(self, "_click", "_open_global_prune"))
        self.global_budget.observe(_Weak(self, "_on_global_budget"), "value")
        for control in (self.global_target, self.global_by, self.global_round):
            control.observe(_Weak(self, "_on_global_change"), "value")
        self.global_apply.on_click(_Weak(self, "_click", "_global_prune_from_widgets"))
        self.like_button.on_click(_Weak(self, "_click", "_replace_all_selected"))
        self.cut_button.on_click(_Weak(self, "_click", "_truncate_selected"))
        self.deepen_button.on_click(_Weak(self, "_click", "deepen"))
        self.ablate_button.on_click(_Weak(self, "_click", "patch"))
        self.stats_order.observe(_Weak(self, "_on_stats_order"), "value")
        self.grow_button.on_click(_Weak(self, "_click", "grow_blocks"))
        self.widen_button.on_click(_Weak(self, "_click", "_open_widen"))
        self.widen_apply.on_click(_Weak(self, "_click", "_widen_from_widgets"))
        self.input_button.on_click(_Weak(self, "_click", "_open_change_input"))
        self.input_apply.on_click(_Weak(self, "_click", "_change_input_from_widgets"))
        self.swap_button.on_click(_Weak(self, "_click", "_open_swap"))
        self.swap_apply.on_click(_Weak(self, "_click", "_swap_from_widgets"))
        self.swap_from.observe(_Weak(self, "_on_swap_from"), "value")
        self.fold_button.on_click(_Weak(self, "_click", "fold_batchnorm"))
        self.split_button.on_click(_Weak(self, "_click", "split_activations"))
        self.heads_button.on_click(_Weak(self, "_click", "_open_heads"))
        self.heads_apply.on_click(_Weak(self, "_click", "_heads_from_widgets"))
        self.configure_button.on_click(_Weak(self, "_click", "_open_configure"))
        self.configure_apply.on_click(_Weak(self, "_click", "_configure_from_widgets"))
        self.lora_rank.observe(_Weak(self, "_on_lora_rank"), "value")
        self.lora_button.on_click(_Weak(self, "_click", "_lora_from_widgets"))
        self.lora_off_button.on_click(_Weak(self, "_click", "disable_lora"))
        self.lora_all_button.on_click(_Weak(self, "_click", "_open_lora"))
        self.lora_all_apply.on_click(_Weak(self, "_click", "_lora_all_from_widgets"))
        self.lora_all_off.on_click(_Weak(self, "_click", "disable_lora_attention"))
        self.merge_button.on_click(_Weak(self, "_click", "merge_lora"))
        self.quantize_button.on_click(_Weak(self, "_click", "_quantize_from_widgets"))
        self.quantize_model_button.on_click(_Weak(self, "_click", "_open_quantize_model"))
        self.quantize_model_mode.observe(_Weak(self, "_on_quantize_model_mode"), "value")
        self.quantize_model_apply.on_click(_Weak(self, "_click", "_quantize_model_from_widgets"))
        self.undo_button.on_click(_Weak(self, "_click", "undo"))
        self.redo_button.on_click(_Weak(self, "_click", "redo"))
        self.reset_button.on_click(_Weak(self, "_click", "reset"))
        self.save_button.on_click(_Weak(self, "_click", "_save_from_widgets"))
        self.details.observe(_Weak(self, "_on_details"), "selected_index")

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
        return [edits_of(steps) for steps in self.session.history]

    @property
    def steps(self) -> list[str]:
        """The current edits in words, e.g. ``["replace 'dense_1' with Dropout(rate=0.2)"]``."""
        return [s.describe() for s in self.session.steps]

    def code(self) -> str:
        """Python source (functional API) that rebuilds the edited model's architecture (``kerasnb.codegen.code``).

        Returns:
            str: the source; executing it leaves the model in a variable ``model``.

        Examples:
            >>> editor.delete("drop")
            >>> print(editor.code().splitlines()[5])
                hidden = layers.Dense(units=6, activation='relu', name='hidden')(x)
        """
        from ..codegen import code

        return code(self.model)

    def chart(self):
        """A matplotlib figure of the parameters per layer, coloured by weight status.

        Returns:
            matplotlib.figure.Figure: one bar per layer.

        Examples:
            >>> figure = editor.chart()
            >>> type(figure).__name__
            'Figure'
        """
        from ..plotting import params_chart

        return params_chart(self.report)

    def save(self, path: str) -> str:
        """Save the edited model as a ``.keras`` file.

        Args:
            path: The file, ending in ``.keras``.

        Returns:
            str: the path written.

        Raises:
            SaveFailed: the name does not end in ``.keras``, the folder does not exist, or
                writing fails; the message says what would work.

        Examples:
            >>> import os, tempfile
            >>> path = editor.save(os.path.join(tempfile.mkdtemp(), "edited.keras"))
            >>> keras.saving.load_model(path).count_params() == model.count_params()
            True
        """
        return self._attempt(lambda: self._save(path))

    def _save(self, path) -> str:
        received = path
        path = os.path.expanduser(str(path).strip())
        if not path.endswith(".keras"):
            raise SaveFailed(f"Keras saves whole models to files ending in .keras, e.g. "
                             f"{os.path.splitext(path)[0] or self.original.name}.keras. Received: path={received!r}")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise SaveFailed(
                f"The folder {folder!r} does not exist, so {os.path.basename(path)!r} cannot be saved there. "
                f"Create it first (os.makedirs({folder!r})) or save into an existing folder, e.g. the current "
                f"one: {os.path.basename(path)!r}. Received: path={received!r}"
            )
        try:
            self.model.save(path)
        except OSError as error:
            raise SaveFailed(f"Could not write {path!r}: {first_line(error)}. Received: path={received!r}") from error
        self._say(f"Saved the edited model to {path}.", "ok")
        return path

    # ------------------------------------------------------------------ actions (what the controls call)

    def select(self, key) -> None:
        """Make ``key`` the row the row actions act on (what a click on the row does).

        Args:
            key: A row's path (``"hidden"``, ``"outer/inner"``), or ``(path, call_index)`` for
                one call of a shared layer (a shared layer's bare path selects its first call).

        Raises:
            LayerNotFound: no row has that path, or the layer has no such call.

        Examples:
            >>> editor.select("hidden")
            >>> editor.selected
            'hidden'
        """
        self._attempt(lambda: self._select(key))

    def _select(self, key) -> None:
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
        self._show_problems(self._render([("the controls", self._sync_controls), ("the table", self._show_selection),
                                          ("the graph", self._select_in_graph)]))

    def _go_to(self, key) -> None:
        """Select ``key`` first when a row verb is given one (what a click on that row does)."""
        if key is not None and key != self.selected:
            self.select(key)

    def replace(self, label: str, *, key=None, **params) -> None:
        """Give the selected row the type ``label`` from the catalog, and rebuild (the Type dropdown).

        Types are those of ``kerasnb.catalog`` (``kerasnb.register_replacement`` adds more);
        everything is checked before anything is built.

        Args:
            label: The type's label, e.g. ``"Dropout"``, ``"Dense"``, ``"Remove (identity)"``.
            **params: Its parameters, e.g. ``rate=0.5``; the others take their defaults.
            key: The row to act on, selected first; default the selected row.

        Raises:
            UnknownType: no type has that label (the known ones are listed).
            InvalidParameter: an unknown or out-of-range parameter (its valid range is given).
            IncompatibleShape: the type does not fit there (``DoesNotFit``, or the type's own
                check, e.g. a backbone that needs images).

        Examples:
            >>> editor.select("drop")
            >>> editor.replace("Dropout", rate=0.5)
            >>> editor.report.status("drop")
            'removed'
        """
        self._go_to(key)
        self._edit(lambda: self.session.replace(self.selected, label, params or None), follow=True)

    def set_params(self, *, key=None, **params) -> None:
        """Change the parameters of the selected row's chosen type, and rebuild.

        Args:
            **params: The parameters to change, e.g. ``rate=0.3``.
            key: The row to act on, selected first; default the selected row.

        Raises:
            InvalidParameter: an unknown or out-of-range parameter.
            InvalidEdit: the selected row has no type chosen.

        Examples:
            >>> editor.select("drop")
            >>> editor.replace("Dropout", rate=0.5)
            >>> editor.set_params(rate=0.3)
            >>> editor.model.get_layer(editor.report.with_status("new")[0]).rate
            0.3
        """
        self._go_to(key)

        self._edit(lambda: self.session.set_params(self.selected, params), follow=True)

    def insert(self, label: str, *, key=None, **params) -> None:
        """Insert a layer of type ``label`` after the selected row, and rebuild ("insert after").

        Args:
            label: A type of ``kerasnb.catalog`` that may be inserted, e.g. ``"Dropout"``.
            **params: Its parameters; the others take their defaults.
            key: The row to act on, selected first; default the selected row.

        Raises:
            UnknownType: no type has that label.
            InvalidParameter: an unknown or out-of-range parameter.
            InvalidEdit: the type cannot be inserted (the insertable ones are listed).
            IncompatibleShape: the type does not fit after that row (``DoesNotFit``).

        Examples:
            >>> editor.select("hidden")
            >>> editor.insert("Dropout", rate=0.2)
            >>> editor.report.with_status("new")
            ['hidden_dropout']
        """
        self._go_to(key)
        self._edit(lambda: self.session.insert(self.selected, label, params or None), follow=True)

    def delete(self, key=None) -> None:
        """Delete the selected row's layer (or ``key``'s), and rebuild; its input flows on.

        Args:
            key: The row to delete, selected first; default the selected row.

        Raises:
            LayerNotFound: ``key`` names no row.
            InputLayerEdit: the row is an input.
            InvalidEdit: nothing is selected, or the layer cannot be deleted there.

        Examples:
            >>> editor.delete("drop")
            >>> editor.report.status("drop")
            'removed'
        """
        self._go_to(key)
        self._edit(lambda: self.session.delete(self.selected), follow=True)

    def prune(self, keep: float, by: str = "l1", *, key=None) -> None:
        """Keep the fraction ``keep`` of the selected layer's channels, the strongest by ``by`` (the "Prune..." slider).

        One prune step per layer: pruning it again changes that step; ``keep=1`` takes it back.

        Args:
            keep: The fraction of the channels kept, in (0, 1].
            by: ``"l1"`` (default), ``"l2"``, ``"bn_scale"``, and ``"apoz"`` / ``"taylor"``
                when the editor was opened with ``data=`` (see ``kerasnb.importance``).
            key: The row to act on, selected first; default the selected row.

        Raises:
            InvalidEdit: the selected layer's channels cannot be pruned (the reason says why),
                ``keep`` is out of range, or the criterion is one the editor cannot use.

        Examples:
            >>> editor.select("hidden")
            >>> editor.prune(0.5)
            >>> editor.model.get_layer("hidden").units, editor.report.status("hidden")
            (3, 'pruned')
        """
        self._go_to(key)
        self._prune_open = path_of(self.selected)
        self._edit(lambda: self.session.prune(self.selected, keep, by), follow=True)

    def prune_global(self, keep=None, *, params=None, macs=None, by: str = "l1", round_to=None) -> None:
        """Prune the whole model to one budget, as one step ("Prune model..." and Apply).

        One budget, as ``kerasnb.prune_global`` takes it.

        Args:
            keep: The fraction of the prunable channels kept, in (0, 1].
            params: The fraction of the current parameters kept, at most.
            macs: The fraction of the current multiply-accumulates per sample kept, at most.
            by: The criterion, as for ``prune``.
            round_to: None, or 8: every pruned channel count a multiple of it.

        Raises:
            BudgetNotReachable: the budget asks for less than pruning can reach.
            InvalidEdit: no budget or several, or one out of range.

        Examples:
            >>> editor.prune_global(keep=0.5)
            >>> editor.model.get_layer("hidden").units
            3
        """
        self._edit(lambda: self.session.prune_global(keep, params=params, macs=macs, by=by, round_to=round_to))

    def set_trainable(self, trainable: bool, *, key=None) -> None:
        """Freeze (False) or unfreeze (True) the selected row's layer (the "trainable" checkbox).

        Args:
            trainable: False freezes, True unfreezes.
            key: The row to act on, selected first; default the selected row.

        Raises:
            InvalidEdit: nothing is selected, or ``trainable`` is not a bool.

        Examples:
            >>> editor.select("hidden")
            >>> editor.set_trainable(False)
            >>> editor.report.row("hidden").trainable
            False
        """
        self._go_to(key)
        self._edit(lambda: self.session.set_trainable(self.selected, trainable))

    def change_input(self, shape, mode: str | None = None, input: str | None = None) -> None:
        """Give the model's input a new shape, as one step (the "Change input..." controls).

        Args:
            shape: The new shape without the batch axis: a tuple, or text such as ``"8, 8, 1"``.
            mode: How the first layers adapt to a new number of channels: ``"sum"``,
                ``"repeat"`` or ``"reinit"`` (see ``kerasnb.change_input``); default chosen
                from the channel counts.
            input: Which input, for a model with several.

        Raises:
            InvalidEdit: a shape that is not one, or an unknown ``mode``.
            UnsupportedLayer: a layer on the way that cannot be adapted.

        Examples:
            >>> editor.change_input((4,), mode="reinit")
            >>> editor.model.input.shape, editor.report.status("hidden")
            ((None, 4), 'reinitialized')
        """
        self._edit(lambda: self.session.change_input(shape, mode, input), follow=True)

    def replace_all(self, *, key=None) -> None:
        """Give the selected row's chosen type to every other layer of its class ("Apply to all N ... like this").

        Args:
            key: The row to act on, selected first; default the selected row.

        Raises:
            InvalidEdit: the selected row has no type chosen.

        Examples:
            >>> editor.select("drop")
            >>> editor.replace("Dropout", rate=0.5)
            >>> editor.replace_all()
            >>> editor.report.status("drop")
            'removed'
        """
        self._go_to(key)
        self._edit(lambda: self.session.replace_all(self.selected) and self.selected, follow=True)

    def prune_heads(self, heads=None, *, keep=None, key=None) -> None:
        """Remove attention heads of the selected MultiHeadAttention, as one step (``kerasnb.prune_heads``).

        One heads step per layer: pruning its heads again changes that step.

        Args:
            heads: Indices of the heads to remove, e.g. ``[0, 3]``. Give this or ``keep``.
            keep: How many heads to keep: a fraction in (0, 1] or a count; the weakest go.
            key: The row to act on, selected first; default the selected row.

        Raises:
            InvalidEdit: the row is no MultiHeadAttention, neither or both of ``heads`` /
                ``keep`` are given, or none or all heads would go.

        Examples:
            >>> tokens = keras.Input((4, 8), name="tokens")
            >>> mha = keras.layers.MultiHeadAttention(num_heads=4, key_dim=2, name="mha")
            >>> attention_editor = kerasnb.show_editor(keras.Model(tokens, mha(tokens, tokens)))
            >>> attention_editor.select("mha")
            >>> attention_editor.prune_heads([0, 3])
            >>> attention_editor.model.get_layer("mha").num_heads, attention_editor.report.status("mha")
            (2, 'pruned')
        """
        self._go_to(key)
        self._edit(lambda: self.session.prune_heads(self.selected, heads, keep=keep), follow=True)

    def widen(self, width: int, *, key=None) -> None:
        """Give the selected row's layer ``width`` units or filters, as one step ("Widen...").

        See ``kerasnb.widen`` (Net2WiderNet): the new units copy existing ones, the layers reading
        them divide their weights among the copies, and the layers its channels are tied to (by
        Add, BatchNormalization ...) widen too; the model computes what it did.

        Args:
            width: The new number of units or filters, larger than today's.
            key: The row to act on, selected first; default the selected row.

        Raises:
            InvalidEdit: ``width`` is not a whole number larger than today's, or the channels reach
                a layer that cannot widen exactly (the reason names it).

        Examples:
            >>> editor.select("hidden")
            >>> editor.widen(8)
            >>> editor.model.get_layer("hidden").units, editor.report.status("hidden")
            (8, 'adapted')
        """
        self._go_to(key)
        self._edit(lambda: self.session.widen(self.selected, width), follow=True)

    def deepen(self, activation=None, *, key=None) -> None:
        """Insert after the selected row's layer a layer set to the identity, as one step ("Add identity layer after").

        See ``kerasnb.deepen`` (Net2DeeperNet): the model computes exactly what it did.

        Args:
            activation: ``"linear"`` (default) or ``"relu"`` where the row's output is never negative.
            key: The row to act on, selected first; default the selected row.

        Raises:
            InvalidEdit: ``activation`` is another one, or ``"relu"`` after a layer that can give negatives.

        Examples:
            >>> editor.select("hidden")
            >>> editor.deepen()
            >>> editor.report.with_status("new")
            ['hidden_identity']
        """
        self._go_to(key)
        self._edit(lambda: self.session.deepen(self.selected, activation), follow=True)

    def patch(self, *, key=None) -> None:
        """Ablate the selected row's layer: its output replaced by zeros, as one step ("Ablate").

        See ``kerasnb.patch``. The layers after it compute on zeros (``kept_input_changed``); with a
        probe, the comparison in the weight report shows how far each output moved.

        Args:
            key: The row to act on, selected first; default the selected row.

        Raises:
            IncompatibleShape: the layer gives several tensors (patch the one that makes the one meant).

        Examples:
            >>> editor.patch(key="hidden")
            >>> editor.report.with_status("new")
            ['hidden_patch']
        """
        self._go_to(key)
        self._edit(lambda: self.session.patch(self.selected), follow=True)

    def activation_stats(self) -> dict:
        """Each layer's activation statistics on the editor's ``data``, from one ``kerasnb.trace``.

        ``{path: {"mean", "std", "min", "max", "zeros", "nonfinite"}}`` of the current model (every
        call of a layer together), traced again after each edit; ``{}`` when the editor has no data.

        Examples:
            >>> editor.activation_stats()
            {}
        """
        return self.session.activation_stats()

    def _on_stats_order(self, change) -> None:
        if not self._syncing:
            self._show_problems(self._render([("the activation statistics", self._draw_stats)]))

    def _draw_stats(self) -> None:
        """Each row's activation statistics on data (traced again after each edit), sorted as chosen."""
        if self.session.data is None:
            return
        self.stats_view.value = ""  # a failure below leaves nothing stale
        self.stats_view.value = table.stats_html(self._rows, self.session.activation_stats(), self.stats_order.value)

    def grow_blocks(self, *, key=None) -> None:
        """Add after the selected block a copy of it that adds nothing yet, as one step ("Grow a block after").

        See ``kerasnb.grow_blocks`` (block expansion): the copy's output projections are zero, so the
        model computes exactly what it did. The row is a transformer block (keras-hub's decoders) or the
        Add that closes a residual block ``x + f(x)``.

        Args:
            key: The row to act on, selected first; default the selected row.

        Raises:
            UnsupportedLayer: the row is no block kerasnb can grow (a post-norm block, another layer).

        Examples:
            >>> inputs = keras.Input((8,), name="x")
            >>> block = keras.layers.Add(name="block")([inputs, keras.layers.Dense(8, name="f")(inputs)])
            >>> residual = kerasnb.show_editor(keras.Model(inputs, keras.layers.Dense(2, name="out")(block)))
            >>> residual.grow_blocks(key="block")
            >>> residual.report.with_status("new")
            ['f_copy', 'block_copy']
        """
        self._go_to(key)
        self._edit(lambda: self.session.grow_blocks(self.selected), follow=True)

    def configure(self, *, key=None, **changes) -> None:
        """Rebuild the selected row's layer from its config with ``changes`` (``kerasnb.configure``).

        Args:
            **changes: Config options and their new values, e.g. ``activation="gelu"``.
            key: The row to act on, selected first; default the selected row.

        Raises:
            InvalidEdit: nothing is selected, or an option the layer's config does not take.
            NameClash: ``name=`` is taken by another layer.

        Examples:
            >>> editor.select("hidden")
            >>> editor.configure(activation="gelu")
            >>> editor.model.get_layer("hidden").activation.__name__
            'gelu'
        """
        self._go_to(key)
        self._edit(lambda: self.session.configure(self.selected, **changes), follow=True)

    def swap_activation(self, old: str, new: str) -> None:
        """Use activation ``new`` wherever the model applies ``old``, as one step; every weight is kept.

        Args:
            old: The activation swapped out, e.g. ``"relu"``.
            new: The activation used instead, e.g. ``"gelu"``.

        Raises:
            LayerNotFound: no layer applies ``old`` (the activations used are listed).
            InvalidEdit: an activation Keras does not know, or ``old`` equal to ``new``.

        Examples:
            >>> editor.swap_activation("relu", "gelu")
            >>> editor.model.get_layer("hidden").activation.__name__
            'gelu'
        """
        self._edit(lambda: self.session.swap_activation(old, new))

    def fold_batchnorm(self) -> None:
        """Fold each BatchNormalization into the Conv / Dense layer before it, as one step.

        See ``kerasnb.fold_batchnorm``; the message line says what was folded and what was left.

        Raises:
            InvalidEdit: no BatchNormalization can be folded (the reasons are given), or one is
                called with ``training=True``.

        Examples:
            >>> image = keras.Input((8, 8, 3), name="image")
            >>> conv = keras.layers.Conv2D(4, 3, name="conv")(image)
            >>> bn_editor = kerasnb.show_editor(keras.Model(image, keras.layers.BatchNormalization(name="bn")(conv)))
            >>> bn_editor.fold_batchnorm()
            >>> bn_editor.report.status("conv"), bn_editor.report.status("bn")
            ('folded', 'removed')
        """
        self._edit(self.session.fold_batchnorm)

    def split_activations(self) -> None:
        """Split each fused activation into the layer and an Activation layer after it, as one step.

        See ``kerasnb.split_activations``: the model computes exactly what it did.

        Raises:
            LayerNotFound: no layer has a fused activation.

        Examples:
            >>> editor.split_activations()
            >>> editor.report.with_status("new")
            ['hidden_relu']
        """
        self._edit(self.session.split_activations)

    def truncate(self, key=None) -> None:
        """Make the selected row's output (or ``key``'s) the model's output, as one step ("Cut here").

        The layers after it are removed.

        Args:
            key: The row to cut at, selected first; default the selected row.

        Raises:
            LayerNotFound: ``key`` names no row.

        Examples:
            >>> editor.truncate("hidden")
            >>> editor.model.output.shape, editor.report.status("out")
            ((None, 6), 'removed')
        """
        self._go_to(key)
        self._edit(lambda: self.session.truncate(self.selected) or self.selected, follow=True)

    def enable_lora(self, rank: int = LORA_RANK, *, key=None) -> None:
        """Turn on LoRA of ``rank`` for the selected row ("LoRA (rank r)"); afterwards only the LoRA factors train.

        The row's layer (a Dense, EinsumDense, Embedding or convolution) or, on a block, its
        attention query and value projections. Again with another rank changes that step.

        Args:
            rank: The rank of the LoRA factors (default 8).
            key: The row to act on, selected first; default the selected row.

        Raises:
            InvalidEdit: the row has no layer LoRA can go on, or ``rank`` is not a whole number
                of at least 1.

        Examples:
            >>> editor.select("hidden")
            >>> editor.enable_lora(rank=2)
            >>> editor.report.row("hidden").reason
            'LoRA rank 2'
        """
        self._go_to(key)
        self._edit(lambda: self.session.enable_lora(self.selected, rank), follow=True)

    def disable_lora(self) -> None:
        """Take back the selected row's LoRA step ("LoRA off").

        Raises:
            InvalidEdit: the selected row has no LoRA step.

        Examples:
            >>> editor.select("hidden")
            >>> editor.enable_lora(rank=2)
            >>> editor.disable_lora()
            >>> editor.edits
            ()
        """
        self._edit(lambda: self.session.disable_lora(self.selected), follow=True)

    def enable_lora_attention(self, rank: int = LORA_RANK, projections: str = "query, value") -> None:
        """Turn on LoRA of ``rank`` on every attention projection of the model, as one step ("LoRA on attention...").

        Args:
            rank: The rank of the LoRA factors (default 8).
            projections: Which projections: ``"query, value"`` (default) or
                ``"query, key, value, output"``.

        Raises:
            InvalidEdit: the model has no attention layer, an unknown ``projections``, or a bad
                ``rank``.

        Examples:
            >>> tokens = keras.Input((4, 8), name="tokens")
            >>> mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")
            >>> attention_editor = kerasnb.show_editor(keras.Model(tokens, mha(tokens, tokens)))
            >>> attention_editor.enable_lora_attention(rank=2)
            >>> sorted(kerasnb.lora.lora_layers(attention_editor.model))
            ['mha/query', 'mha/value']
        """
        self._edit(lambda: self.session.enable_lora_attention(rank, projections))

    def disable_lora_attention(self) -> None:
        """Take back the "LoRA on attention" step.

        Raises:
            InvalidEdit: there is no such step.

        Examples:
            >>> tokens = keras.Input((4, 8), name="tokens")
            >>> mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")
            >>> attention_editor = kerasnb.show_editor(keras.Model(tokens, mha(tokens, tokens)))
            >>> attention_editor.enable_lora_attention(rank=2)
            >>> attention_editor.disable_lora_attention()
            >>> kerasnb.lora.lora_layers(attention_editor.model)
            {}
        """
        self._edit(self.session.disable_lora_attention)

    def merge_lora(self) -> None:
        """Fold every LoRA factor into its kernel, as one step ("Merge LoRA"): the same outputs, no LoRA.

        Raises:
            InvalidEdit: no layer has LoRA.

        Examples:
            >>> editor.select("hidden")
            >>> editor.enable_lora(rank=2)
            >>> editor.merge_lora()
            >>> editor.report.status("hidden"), kerasnb.lora.lora_layers(editor.model)
            ('folded', {})
        """
        self._edit(self.session.merge_lora)

    def quantize(self, mode: str = "int8", *, key=None) -> None:
        """Quantize the selected row's layer with Keras's own quantize(), as one step ("Quantize").

        See ``kerasnb.quantize``: on a block, the layers inside it Keras can quantize. Again with
        another mode changes that step; undo brings the float layer back.

        Args:
            mode: ``"int8"`` (default), ``"int4"`` or ``"float8"``.
            key: The row to act on, selected first; default the selected row.

        Raises:
            QuantizationRefused: Keras cannot quantize the row's layer in that mode (the reason
                names it).

        Examples:
            >>> editor.select("hidden")
            >>> editor.quantize("int8")
            >>> editor.report.status("hidden"), editor.model.get_layer("hidden").kernel.dtype
            ('quantized', 'int8')
            >>> editor.undo()
            >>> editor.model.get_layer("hidden").kernel.dtype
            'float32'
        """
        self._go_to(key)
        self._edit(lambda: self.session.quantize(self.selected, mode), follow=True)

    def quantize_model(self, mode: str = "int8", keep_float=None) -> None:
        """Quantize every layer Keras can quantize, as one step ("Quantize model...").

        See ``kerasnb.quantize``; the message line gives the size before -> after. Again changes
        that step; undo restores the float model.

        Args:
            mode: ``"int8"`` (default), ``"int4"`` or ``"float8"``.
            keep_float: How many layers stay float: those with the most output drift per byte
                saved on the editor's ``data`` (needs ``data=``); None or 0 keeps none.

        Raises:
            QuantizationRefused: nothing in the model can be quantized in that mode.
            InvalidEdit: ``keep_float`` without the editor's ``data``.

        Examples:
            >>> editor.quantize_model("int4")
            >>> editor.report.with_status("quantized")
            ['hidden', 'out']
        """
        self._edit(lambda: self.session.quantize_model(mode, keep_float))

    def compare(self, x=None):
        """Run the edited model and the original on ``x`` and compare every layer's output.

        Args:
            x: The input batch; default the ``probe`` the editor was opened with.

        Returns:
            Comparison: ``.frame`` (a pandas DataFrame as ``SurgeryResult.compare`` gives)
            and ``.note``.

        Raises:
            InvalidEdit: no ``x`` and no probe, or an ``x`` the model does not take.

        Examples:
            >>> editor.delete("drop")
            >>> comparison = editor.compare(np.ones((2, 8), "float32"))
            >>> list(comparison.frame["layer"])
            ['x', 'hidden', 'out']
        """
        return self._attempt(lambda: self.session.answers.compare(x))

    def undo(self) -> None:
        """Take the last step back (the Undo button).

        With nothing to undo, nothing changes (the message line says so).

        Examples:
            >>> editor.delete("drop")
            >>> editor.undo()
            >>> editor.edits, editor.report.status("drop")
            ((), 'no_weights')
        """
        self._edit(self.session.undo, verb="Undo")

    def redo(self) -> None:
        """Make the step undo took back again (the Redo button).

        With nothing to redo, nothing changes (the message line says so).

        Examples:
            >>> editor.delete("drop")
            >>> editor.undo()
            >>> editor.redo()
            >>> editor.report.status("drop")
            'removed'
        """
        self._edit(self.session.redo, verb="Redo")

    def reset(self) -> None:
        """Go back to the original model, as one step that undo takes back (the Reset button).


        Examples:
            >>> editor.delete("drop")
            >>> editor.reset()
            >>> editor.model is editor.original
            True
        """
        self._edit(self.session.reset, verb="Reset to the original model")

    def close(self) -> None:
        """Close every widget of the panel (it disappears from the notebook) and let it be freed.

        ``editor.model``, ``.edits`` and the other results still work from Python afterwards.

        Examples:
            >>> editor.close()
            >>> editor.report.status("hidden")
            'kept'
        """
        self._closed = True
        self._finalizer()  # closes the widget tree once; later calls do nothing
        if _SHOWN.get(id(self.original)) is self:
            del _SHOWN[id(self.original)]

    # ------------------------------------------------------------------ plumbing

    def _state(self) -> tuple:
        """What a commit changes: the history's length, the cursor and the current steps."""
        s = self.session
        return len(s.history), s.cursor, id(s.steps)

    def _edit(self, action, follow: bool = False, verb: str = "") -> None:
        """Run an action that may rebuild, with the controls disabled while it runs.

        Not committed (an error, an interrupt): its error is shown, the controls show the model
        as it still is, and the error is raised. Committed: the panel is redrawn and the message
        says what changed; a part that fails to draw is reported as such, the edit stands.
        """
        before, old_steps = self._state(), self.session.steps
        self._say("Rebuilding\u2026", "busy")  # reaches the browser before the rebuild starts
        self._predicted = False
        self._early_problems = []
        error = None
        try:
            with self._controls_disabled(), facade.progress(self._progress_bar()):
                outcome = action()
        except BaseException as caught:  # KeyboardInterrupt too: the panel must not stay "Rebuilding"
            error, outcome = caught, None
        finally:
            self.table.progress = {}
        if error is not None and self._state() == before:
            self._say_error(error)
            parts = [("the controls", self._sync_controls)]
            if self._predicted:  # the statuses foretold for the edit that did not happen: put back
                parts += [("the table", self._draw_table), ("the graph", self._draw_graph),
                          ("the summary", self._draw_summary)]
            self._show_problems(self._render(parts), kind="error")
            raise error
        problems = self._early_problems + self._redraw(select=outcome if follow and outcome else self.selected)
        if error is not None:  # committed, then something failed: the edit stands
            problems.append(("the rest of the action", error))
        done = change_text(old_steps, self.session.steps)
        self._say(f"{verb}. {done}" if verb else done, "ok")
        self._show_problems(problems)

    def _attempt(self, action):
        """Run a non-rebuilding action; its error is shown in the panel, then raised."""
        try:
            return action()
        except BaseException as error:
            self._say_error(error)
            raise

    def _guard(self, action) -> None:
        """Callbacks must not raise into the frontend: every error is shown in the panel."""
        self._shown_error = None
        try:
            action()
        except (Exception, KeyboardInterrupt) as error:  # the interrupt ends this callback, said in the panel
            if id(error) != self._shown_error:
                self._say_error(error)
        finally:
            self._shown_error = None

    def _click(self, name: str, _button=None) -> None:
        self._guard(getattr(self, name))

    @contextmanager
    def _quietly(self):
        """Set widgets from Python without their observers taking it for the user's choice."""
        was, self._syncing = self._syncing, True
        try:
            yield
        finally:
            self._syncing = was

    @contextmanager
    def _controls_disabled(self):
        """Disable every control while a rebuild runs; put each back as it was, however it ends."""
        controls = [self.search, self.layer_picker, self.trainable_box, self.insert_picker,
                    self.insert_button, self.delete_button, self.prune_button, self.prune_slider,
                    self.undo_button, self.redo_button, self.reset_button, self.save_path, self.save_button,
                    self.like_button, self.cut_button, self.deepen_button, self.grow_button, self.widen_button,
                    self.widen_width,
                    self.widen_apply, self.input_button, self.input_shape,
                    self.channels_picker,
                    self.input_apply, self.swap_button, self.swap_from, self.swap_to, self.swap_apply,
                    self.fold_button, self.split_button, self.heads_button, self.heads_slider, self.heads_apply,
                    self.configure_button, self.configure_text, self.configure_apply, self.lora_rank, self.lora_button,
                    self.lora_off_button, self.lora_all_button,
                    self.lora_all_rank, self.lora_which, self.lora_all_apply, self.lora_all_off, self.merge_button,
                    self.prune_by, self.global_prune_button, self.global_budget, self.global_target, self.global_by,
                    self.global_round, self.global_apply, self.quantize_mode, self.quantize_button,
                    self.quantize_model_button, self.quantize_model_mode, self.quantize_keep, self.quantize_model_apply,
                    self.ablate_button, self.stats_order]
        was = [(c, c.disabled) for c in controls if hasattr(c, "disabled")]
        for c, _ in was:
            c.disabled = True
        self.table.busy = True  # the selected row's Type dropdown and fields
        try:
            yield
        finally:
            self.table.busy = False
            for c, disabled in was:
                c.disabled = disabled

    def _progress_bar(self):
        """A callback for :func:`kerasnb.actions.progress`: once a rebuild has run for half a
        second, the table shows "layers rebuilt / total" (about 50 updates, not one per layer)."""
        started = time.perf_counter()
        shown = [-1]

        def tell(done: int, total: int) -> None:
            if total <= 0 or time.perf_counter() - started < PROGRESS_AFTER:
                return
            step = max(1, total // 50)
            if done == total or done - shown[0] >= step:
                shown[0] = done
                self.table.progress = {"done": int(done), "total": int(total)}

        return tell

    def _render(self, parts) -> list:
        """Draw each ``(name, function)``; a part that fails is reported, the others still drawn."""
        problems = []
        with facade.memo():  # the parts walk the same graphs again and again (about 20 walks of each model)
            for name, draw in parts:
                try:
                    draw()
                except (Exception, KeyboardInterrupt) as error:  # an interrupted chart is a drawing problem too
                    problems.append((name, error))
        return problems

    def _redraw(self, select: str | None = None) -> list:
        """Draw the whole panel from the session; returns the parts that failed to draw."""
        try:
            with facade.memo():
                self._rows = table.table_rows(self.session)
        except Exception as error:  # nothing stale is shown: no rows rather than the old ones
            self._rows = []
            failed = [("the table", error)]
        else:
            failed = []
        keys = self._all_keys()
        if select is not None:
            select = self.session.key(select)  # a shared layer's bare path: its first call
        if select not in keys:  # the selected layer vanished (undo of an insert, ...)
            select = self.session.default_key(keys)
        self.selected = select
        return failed + self._render([
            ("the summary", self._draw_summary),
            ("the table", self._draw_table),
            ("the graph", self._draw_graph),
            ("the layer list", self._fill_layer_picker),
            ("the controls", self._sync_controls),
            ("the whole-model actions", self._sync_model_actions),
            ("the history", self._draw_history),
            ("the activation statistics", self._draw_stats),
            (self._details_name(), self._draw_details),
        ])

    def _draw_summary(self) -> None:
        self.summary.value = f"<b>{html.escape(self.report.summary())}</b>"

    def _draw_table(self, rows=None) -> None:
        """List the rows (``rows``, or the current model's) as the search and the folds say."""
        self._reveal_selected()
        query = self.search.value
        listed = table.visible_rows(self._rows if rows is None else rows, query=query,
                                    collapsed=self.table.collapsed, stats=self._stats_for_table())
        with self._quietly():
            with self.table.hold_sync():
                self._mark_selected()
                self.table.show(listed, empty=f"No layer matches {query.strip()!r}." if query.strip() else "")

    def _stats_for_table(self):
        """The activation statistics the table's "activations" column shows, or None (no data, or a
        trace that failed: the statistics box below the table says why)."""
        if self.session.data is None:
            return None
        try:
            return self.session.activation_stats()
        except Exception:  # drawn as a problem by _draw_stats, where it is the whole story
            return None

    def _show_selection(self) -> None:
        """The table marks the selected row (on its page; a folded nested model holding it opens)."""
        if self._reveal_selected():
            self._draw_table()
            return
        with self._quietly():
            with self.table.hold_sync():
                self._mark_selected()
                self.table.follow()

    def _mark_selected(self) -> None:
        call = call_of(self.selected)
        self.table.selected_call = -1 if call is None else int(call)
        self.table.selected = "" if self.selected is None else str(path_of(self.selected))

    def _reveal_selected(self) -> bool:
        """Unfold the nested models holding the selected row; True when one was folded."""
        path = "" if self.selected is None else str(path_of(self.selected))
        folded = [p for p in self.table.collapsed if path.startswith(p + "/")]
        if folded:
            with self._quietly():
                self.table.collapsed = [p for p in self.table.collapsed if p not in folded]
        return bool(folded)

    def _draw_graph(self) -> None:
        """The picture of the current model: laid out again when the model changed, else recoloured."""
        if self.graph is None:
            return
        with self._quietly():
            with self.graph.hold_sync():
                if self._graph_model is not self.model:
                    self.graph.show_model(self.model, self.report)
                    self._graph_model = self.model
                else:
                    self.graph.statuses = status_map(self.report)
                self.graph.selected = "" if self.selected is None else str(path_of(self.selected))

    def _select_in_graph(self) -> None:
        if self.graph is None:
            return
        with self._quietly():
            self.graph.selected = "" if self.selected is None else str(path_of(self.selected))

    def _show_predicted(self, report, step) -> None:
        """Before a rebuild: the statuses the session worked out from shapes, in the table and the
        graph, so they show while the model is built (the real report replaces them after)."""
        self._predicted = True

        def graph():
            if self.graph is not None:
                self.graph.statuses = status_map(report)

        self._early_problems += self._render([
            ("the foretold statuses", lambda: self._draw_table(table.predicted_rows(self._rows, report, step))),
            ("the graph's foretold colours", graph),
            ("the summary", lambda: setattr(self.summary, "value", f"<b>{html.escape(report.summary())}</b> <span "
                                            "style='color:#666'>(from shapes; rebuilding the model\u2026)</span>")),
        ])

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
        with self._quietly():
            self.layer_picker.options = options
            self.layer_picker.value = self.selected

    def _sync_controls(self) -> None:
        """Show what the session says about the selected row: its type, parameters, flag, and the
        types and actions it may take (each disabled one says why in its tooltip)."""
        key = self.selected
        with self._quietly():
            if key is None:
                self.insert_picker.options = []
                self.table.inline = {}
                self.prune_button.disabled = True
                self.prune_box.layout.display = "none"
                for button in (self.like_button, self.cut_button, self.deepen_button, self.grow_button, self.widen_button,
                               self.input_button,
                               self.lora_button, self.lora_off_button, self.heads_button, self.configure_button,
                               self.ablate_button):
                    button.disabled = True
                for box in (self.input_box, self.heads_box, self.widen_box, self.configure_box):
                    box.layout.display = "none"
                self.lora_info.value = ""
                self.quantize_button.disabled, self.quantize_info.value = True, ""
                return
            if self.layer_picker.value != key and key in [k for _, k in self.layer_picker.options]:
                self.layer_picker.value = key
            actions = self.session.answers.row_actions(key)
            self.table.inline = _inline(actions)
            self.insert_picker.options = actions.insertable
            self.insert_button.disabled = not actions.can_insert
            self.insert_button.tooltip = actions.insert_reason or "insert the chosen type right after this layer"
            self.delete_button.description = actions.delete_label
            self.delete_button.disabled = not actions.can_delete
            self.delete_button.tooltip = actions.delete_reason or (
                "drop this block: the hidden states it receives flow on to the next layer"
                if actions.delete_label == "Drop block" else "remove this layer; its input flows on")
            self.trainable_box.value = actions.trainable
            self.trainable_box.disabled = not actions.can_freeze
            self.trainable_box.tooltip = actions.freeze_reason
            self._sync_prune(path_of(key), actions.prune)
            self._sync_like(actions.like)
            self.cut_button.disabled = not actions.can_cut
            self.cut_button.tooltip = actions.cut_reason or "make this layer's output the model's output; remove what follows"
            self._sync_input(actions)
            self._sync_heads(actions)
            self._sync_widen(actions)
            self._sync_deepen(actions)
            self._sync_patch(actions)
            self._sync_grow(actions)
            self._sync_configure(actions)
            self._sync_lora(actions.lora)
            self._sync_quantize(actions)

    def _sync_heads(self, actions) -> None:
        """Offer "Heads..." on a MultiHeadAttention row; its slider (1 .. heads - 1) once opened there."""
        self.heads_button.disabled = not actions.can_prune_heads
        self.heads_button.tooltip = actions.heads_reason or (
            f"remove the weakest of its {actions.heads} attention heads (by the norm of their output projection)")
        if not actions.can_prune_heads or self._heads_open != path_of(actions.key):
            self.heads_box.layout.display = "none"
            return
        self.heads_box.layout.display = None
        self.heads_slider.min, self.heads_slider.max = 1, max(1, actions.heads - 1)
        self.heads_slider.value = min(actions.heads_kept, actions.heads - 1)
        self.heads_info.value = (f"<span style='font-size:11px;color:#666'>{actions.heads_kept} of "
                                 f"{actions.heads} heads now</span>")

    def _sync_widen(self, actions) -> None:
        """Offer "Widen..." on a row with units or filters; its width box once opened there."""
        self.widen_button.disabled = not actions.can_widen
        self.widen_button.tooltip = actions.widen_reason or "more units or filters, copies of existing ones (same outputs)"
        if not actions.can_widen or self._widen_open != path_of(actions.key):
            self.widen_box.layout.display = "none"
            return
        self.widen_box.layout.display = None
        self.widen_width.value = max(int(self.widen_width.value), actions.width + 1)
        self.widen_info.value = f"<span style='font-size:11px;color:#666'>{actions.width} now</span>"

    def _sync_quantize(self, actions) -> None:
        """Offer "Quantize" on a row Keras can quantize (a block: one holding such layers)."""
        self.quantize_button.disabled = not actions.can_quantize
        self.quantize_button.tooltip = actions.quantize_reason or (
            "store this layer's weights in fewer bits with Keras's quantize(); undo brings the float layer back")
        if actions.quantized:
            self.quantize_mode.value = actions.quantized
        text = f"quantized to {actions.quantized} by its own step" if actions.quantized else ""
        self.quantize_info.value = f"<span style='font-size:11px;color:#666'>{html.escape(text)}</span>" if text else ""

    def _sync_deepen(self, actions) -> None:
        """Offer "Add identity layer after" on a row that stands in the current model."""
        self.deepen_button.disabled = not actions.can_deepen
        self.deepen_button.tooltip = actions.deepen_reason or (
            "insert after this layer a layer set to the identity (same outputs)")

    def _sync_patch(self, actions) -> None:
        """Offer "Ablate" where a layer of the current model stands (as "Add identity layer after")."""
        self.ablate_button.disabled = not actions.can_deepen
        self.ablate_button.tooltip = ("replace this layer's output by zeros (kerasnb.patch): what depends on it?"
                                      if actions.can_deepen else "this row's layer was replaced or deleted; ablate "
                                      "what stands there now")

    def _sync_grow(self, actions) -> None:
        """Offer "Grow a block after" on a transformer block's row or a residual block's Add."""
        self.grow_button.disabled = not actions.can_grow
        self.grow_button.tooltip = actions.grow_reason or (
            "add after this block a copy of it that adds nothing yet (same outputs)")

    def _sync_configure(self, actions) -> None:
        """Offer "Configure..." on a layer's row; its options text once opened there."""
        self.configure_button.disabled = not actions.can_configure
        self.configure_button.tooltip = actions.configure_reason or (
            "rebuild this layer from its config with some options changed")
        if not actions.can_configure or self._configure_open != path_of(actions.key):
            self.configure_box.layout.display = "none"
            return
        self.configure_box.layout.display = None
        if actions.configure_changes:
            self.configure_text.value = options_text(actions.configure_changes)

    def _sync_lora(self, info) -> None:
        """"LoRA (rank r)" and "LoRA off" for the selected row, as the session answers."""
        if info is None:
            self.lora_button.disabled = self.lora_off_button.disabled = True
            self.lora_info.value = ""
            return
        if info.rank:
            self.lora_rank.value = info.rank
        self.lora_button.description = f"LoRA (rank {self.lora_rank.value})"
        self.lora_button.disabled = not info.can_enable
        self.lora_button.tooltip = info.reason or (
            f"LoRA on {info.what}: the kernel is kept and frozen, two small factors train")
        self.lora_off_button.disabled = not info.can_disable
        self.lora_off_button.tooltip = info.off_reason or "take this row's LoRA step back"
        if info.on:
            ranks = sorted(set(info.on.values()))
            text = (f"LoRA on {len(info.on)} layer(s) here (rank {', '.join(map(str, ranks))})"
                    + ("" if info.rank else "; from another step"))
        elif info.can_enable:
            text = f"LoRA would go on {info.what}"
        else:
            text = ""
        self.lora_info.value = f"<span style='font-size:11px;color:#666'>{html.escape(text)}</span>" if text else ""

    def _on_lora_rank(self, change) -> None:
        self.lora_button.description = f"LoRA (rank {change['new']})"

    def _sync_like(self, like) -> None:
        """"Apply to all N <type> layers like this one" where the session says it can."""
        if like is None or not like.can_apply:
            self.like_button.description = "Apply to all like this"
            self.like_button.disabled = True
            self.like_button.tooltip = like.reason if like is not None else ""
            return
        self.like_button.description = f"Apply to all {like.count} {like.type} layers like this one"
        self.like_button.disabled = False
        self.like_button.tooltip = (f"give {like.label} to the {like.others} other {like.type} layer(s) too, "
                                    "where it fits")

    def _sync_input(self, actions) -> None:
        """Offer "Change input..." on an input row; its shape and channels once opened there."""
        self.input_button.disabled = not actions.can_change_input
        self.input_button.tooltip = actions.input_reason or "give the model's input a new shape"
        if not actions.can_change_input or self._input_open != path_of(actions.key):
            self.input_box.layout.display = "none"
            return
        self.input_box.layout.display = None
        self.input_shape.value = ", ".join("None" if d is None else str(d) for d in actions.input_shape)

    def _sync_model_actions(self) -> None:
        """The whole-model row: what "Swap activation..." can swap, and whether there is BatchNorm to fold."""
        answer = self.session.answers.model_actions()
        with self._quietly():
            self._draw_model_actions(answer)

    def _draw_model_actions(self, answer) -> None:
        self.swap_button.disabled = not answer.can_swap
        self.swap_button.tooltip = answer.swap_reason or "use another activation wherever the model applies one"
        self.split_button.disabled = not answer.can_split
        self.split_button.tooltip = answer.split_reason or (
            f"make the fused activation of {answer.fused} layer(s) an Activation layer after each; the outputs "
            "stay bit-identical")
        self.fold_button.disabled = not answer.can_fold
        self.fold_button.tooltip = answer.fold_reason or (
            f"fold the model's {answer.batchnorms} BatchNormalization layer(s) into the Conv / Dense layer before "
            "each; inference outputs stay the same")
        if not answer.can_swap:
            self.swap_box.layout.display = "none"
        self._draw_lora_actions(answer)
        self._draw_global_prune()
        was, used = self.swap_from.value, answer.activations
        self.swap_from.options = used  # (a Dropdown picks its first option when its options change)
        self.swap_from.value = was if was in used else (used[0] if used else None)
        self._sync_swap_to(answer.swap_to)

    def _draw_lora_actions(self, answer) -> None:
        """"LoRA on attention..." (its rank and projections once opened or while its step stands) and "Merge LoRA"."""
        self.lora_all_button.disabled = not answer.can_lora
        counts = ", ".join(f"{n} for {which}" for which, n in answer.lora_projections.items())
        self.lora_all_button.tooltip = answer.lora_reason or f"LoRA on every attention projection ({counts})"
        self.lora_all_off.disabled = not answer.can_lora_off
        self.lora_all_off.tooltip = answer.lora_off_reason or "take the \u201cLoRA on attention\u201d step back"
        self.merge_button.disabled = not answer.can_merge
        self.merge_button.tooltip = answer.merge_reason or (
            f"fold the LoRA factors of {answer.lora_on} layer(s) into their kernels: the same outputs, no LoRA")
        if answer.lora_rank:
            self.lora_all_rank.value = answer.lora_rank
            self.lora_which.value = answer.lora_which
            self.lora_box.layout.display = None
        elif not answer.can_lora:
            self.lora_box.layout.display = "none"
        self.lora_all_info.value = (f"<span style='font-size:11px;color:#666'>{answer.lora_on} layer(s) with LoRA; "
                                    f"{answer.trainable_params:,} parameters train</span>")

    def _sync_swap_to(self, names) -> None:
        """What "to" offers: every name but the one swapped from; gelu first time, the user's pick after."""
        was = self.swap_to.value
        offered = tuple(a for a in names if a != self.swap_from.value)
        self.swap_to.options = offered
        self.swap_to.value = next((a for a in (was, "gelu") if a in offered), offered[0] if offered else None)

    def _on_swap_from(self, change) -> None:
        if self._syncing:
            return
        with self._quietly():
            self._sync_swap_to(SWAP_TO)

    def _sync_prune(self, path, info) -> None:
        """Offer "Prune..." where it applies; show the slider and the parameter counts once opened."""
        self.prune_button.disabled = not info.can_prune
        self.prune_button.tooltip = info.reason or "remove the weakest channels and slice the layers that read them"
        if info.keep is None and (info.reason or self._prune_open != path):
            self.prune_box.layout.display = "none"
            return
        self.prune_box.layout.display = None
        if info.keep is not None:
            self.prune_slider.value = info.keep
            self.prune_by.value = info.by
            self.prune_info.value = _prune_text(info)
        else:
            self.prune_slider.value = 1.0
            macs = self.session.answers.macs()
            self.prune_info.value = (f"<span style='font-size:12px'>model parameters: <b>{info.before:,}</b>"
                                     + (f"; MACs per sample: <b>{macs:,}</b>" if macs else "")
                                     + "; move the slider to keep fewer channels</span>")

    def _draw_history(self) -> None:
        s = self.session
        steps = s.steps
        self.undo_button.disabled = not s.can_undo
        self.redo_button.disabled = not s.can_redo
        self.reset_button.disabled = not s.can_reset
        items = "".join(f"<li><code>{html.escape(step.describe())}</code></li>" for step in steps)
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        self.history_view.value = (
            f"<div style='font-size:12px'><b>Edits</b> (history step {s.cursor} of {len(s.history) - 1}): "
            + (f"<ol>{items}</ol>" if items else "none yet: the model is the original.")
            + (f"<div><b>Notes</b><ul>{notes}</ul></div>" if notes else "") + "</div>"
        )

    def _details_name(self) -> str:
        index = self.details.selected_index
        return {0: "the weight report", 1: "the chart", 2: "the code"}.get(index, "the details")

    def _draw_details(self) -> None:
        index = self.details.selected_index
        if index == 0:
            self.report_view.value = ""  # a failure below leaves no stale report behind
            self.compare_view.value = ""
            self.report_view.value = self.report._repr_html_()
            if self.session.probe is not None:
                try:
                    comparison = self.session.answers.compare()
                except SurgeryError as error:  # the models cannot run on it: an answer, shown in its place
                    self.compare_view.value = table.compare_html(None, _plain(error))
                else:
                    self.compare_view.value = table.compare_html(comparison.frame, comparison.note)
        elif index == 1:
            # PNG bytes in an Image widget: shows the same in every frontend, with or without
            # a matplotlib backend set up for the notebook.
            self.chart_view.value = b""
            buffer = io.BytesIO()
            self.chart().savefig(buffer, format="png", dpi=96)
            self.chart_view.value = buffer.getvalue()
        elif index == 2:
            self.code_view.value = ""
            self.code_view.value = f"<pre style='font-size:11px'>{html.escape(self.code())}</pre>"

    @property
    def message_text(self) -> str:
        """The message line as plain text (what the user reads), or ``""``."""
        return self._message_plain

    def _say(self, text: str, kind: str) -> None:
        """Show ``text`` (plain text: escaped here, so names from model files stay text)."""
        colors = {"error": "#c62828", "busy": "#555", "ok": "#2e7d32", "warn": "#e65100"}
        self._seq += 1
        self._message_plain = text
        if not text:
            self.message.value = ""
            return
        icon = "\u26a0 " if kind in ("error", "warn") else ""
        when = time.strftime("%H:%M:%S")
        self.message.value = (
            f"<div class='kn-{kind}' data-seq='{self._seq}' style='color:{colors[kind]}'>{html.escape(icon + text)}"
            f" <span class='kn-when' style='color:#999;font-size:10px'>{when}</span></div>"
        )

    def _say_error(self, error: BaseException) -> None:
        """Show why an action did not happen (nothing was committed)."""
        self._shown_error = id(error)
        if isinstance(error, KeyboardInterrupt):
            self._say("Interrupted: the rebuild was stopped; the model and the history are as they were.", "error")
        else:
            self._say(_plain(error), "error")

    def _show_problems(self, problems, kind: str = "warn") -> None:
        """Add to the message which parts of the panel could not be drawn: a drawing problem, not
        a failed edit (what the message already says about the action stands)."""
        if not problems:
            return
        parts = "; ".join(f"{name} ({type(error).__name__}: {first_line(error, 300) if str(error) else 'stopped'})"
                          for name, error in problems)
        lead = f"{self._message_plain} " if self._message_plain else ""
        self._say(f"{lead}Drawing problem: the panel could not draw {parts}; that part may be out of date.", kind)

    # ------------------------------------------------------------------ observers

    def _on_search(self, change) -> None:
        self._show_problems(self._render([("the table", self._draw_table), ("the layer list", self._fill_layer_picker)]))

    def _on_details(self, change) -> None:
        if change["new"] is not None:
            self._show_problems(self._render([(self._details_name(), self._draw_details)]))

    def _on_layer_picked(self, change) -> None:
        if self._syncing or change["new"] is None:
            return
        self._guard(lambda: self.select(change["new"]))

    def _on_table_select(self, change) -> None:
        """A row clicked (or an arrow key) in the table; both selection traits may change at once."""
        if self._syncing or not self.table.selected:
            return
        call = self.table.selected_call
        key = self.table.selected if call < 0 else (self.table.selected, call)
        if key != self.selected:
            self._guard(lambda: self.select(key))

    def _on_graph_select(self, change) -> None:
        if self._syncing or not change["new"] or change["new"] == path_of(self.selected):
            return
        self._guard(lambda: self.select(change["new"]))

    def _on_table_fold(self, change) -> None:
        if not self._syncing:
            self._show_problems(self._render([("the table", self._draw_table)]))

    def _on_table_action(self, change) -> None:
        """What the selected row asks for: a type, new parameter values, or a step to the next row."""
        action = change["new"] or {}
        kind = action.get("kind")
        if self._syncing or kind is None:
            return
        if kind == "move":
            self._guard(lambda: self._move_selection(action.get("by", 1)))
            return
        key = action.get("layer")
        if action.get("call") is not None:
            key = (key, action["call"])

        def act():
            if key is not None and self.session.key(key) != self.selected:
                self.select(key)
            if kind == "replace":
                self.replace(action["type"])
            elif kind == "params":
                self.set_params(**(action.get("params") or {}))
            else:
                raise SurgeryError(f"The table asked for an action the panel does not know: {kind!r}. Known: "
                                   f"'replace', 'params', 'move'. Received: action={action!r}")

        self._guard(act)

    def _move_selection(self, by: int) -> None:
        """Select the row ``by`` places down (up when negative) in the table's listing."""
        listed = self.table.listed
        at = self.table.index_of(self.table.selected, self.table.selected_call)
        if not listed or at is None:
            return
        row = listed[max(0, min(len(listed) - 1, at + int(by)))]
        self.select(row["path"] if row["call"] is None else (row["path"], row["call"]))

    def _on_trainable(self, change) -> None:
        if self._syncing:
            return
        self._guard(lambda: self.set_trainable(change["new"]))

    def _open_prune(self) -> None:
        if self.selected is None:
            raise SurgeryError("No layer is selected. Select a Dense or convolution layer to prune.")
        info = self.session.answers.prune_info(self.selected)
        if not info.can_prune:
            raise SurgeryError(info.reason)
        self._prune_open = path_of(self.selected)
        with self._quietly():
            self._sync_prune(self._prune_open, info)
        self._say(f"Pruning {path_of(self.selected)!r}: move the keep slider to remove its weakest channels.", "ok")

    def _delete_selected(self) -> None:
        self.delete(self.selected)

    def _replace_all_selected(self) -> None:
        self.replace_all()

    def _truncate_selected(self) -> None:
        self.truncate()

    def _row_to_open(self, select_what: str, can: str, reason: str):
        """The selected row's answers when its box may open (``can``), else the refusal (``reason``)."""
        if self.selected is None:
            raise SurgeryError(f"No layer is selected. Select {select_what}.")
        actions = self.session.answers.row_actions(self.selected)
        if not getattr(actions, can):
            raise SurgeryError(getattr(actions, reason))
        return actions

    def _open_change_input(self) -> None:
        actions = self._row_to_open("the model's input row to change its input", "can_change_input", "input_reason")
        self._input_open = path_of(self.selected)
        with self._quietly():
            self._sync_input(actions)
        self._say(f"Changing the input {self._input_open!r}: type its new shape (without the batch axis), choose how "
                  "the first layers take a new number of channels, and click Apply.", "ok")

    def _change_input_from_widgets(self) -> None:
        if self._input_open is None:
            raise SurgeryError("Click \u201cChange input\u2026\u201d on an input row first.")
        self.change_input(self.input_shape.value, self.channels_picker.value, input=self._input_open)

    def _open_heads(self) -> None:
        actions = self._row_to_open("a MultiHeadAttention row to remove heads of it", "can_prune_heads", "heads_reason")
        self._heads_open = path_of(self.selected)
        with self._quietly():
            self._sync_heads(actions)
        self._say(f"Removing heads of {self._heads_open!r}: choose how many heads to keep (the weakest go), and "
                  "click Apply.", "ok")

    def _open_widen(self) -> None:
        actions = self._row_to_open("a Dense or convolution row to widen it", "can_widen", "widen_reason")
        self._widen_open = path_of(self.selected)
        with self._quietly():
            self.widen_width.value = actions.width + 1
            self._sync_widen(actions)
        self._say(f"Widening {self._widen_open!r}: its new width (today {actions.width}); the new units copy existing "
                  "ones and the layers reading them divide their weights, so the outputs stay the same.", "ok")

    def _widen_from_widgets(self) -> None:
        if self._widen_open is None or self._widen_open != path_of(self.selected):
            raise SurgeryError("Click \u201cWiden\u2026\u201d on a Dense or convolution row first.")
        self.widen(int(self.widen_width.value))

    def _heads_from_widgets(self) -> None:
        if self._heads_open is None or self._heads_open != path_of(self.selected):
            raise SurgeryError("Click \u201cHeads\u2026\u201d on a MultiHeadAttention row first.")
        self.prune_heads(keep=int(self.heads_slider.value))

    def _open_configure(self) -> None:
        actions = self._row_to_open("a layer's row to change its options", "can_configure", "configure_reason")
        if self._configure_open != path_of(self.selected):
            self.configure_text.value = ""
        self._configure_open = path_of(self.selected)
        with self._quietly():
            self._sync_configure(actions)
        self._say(f"Configuring {self._configure_open!r}: type the options to change as option=value, ... (e.g. "
                  "activation=\"gelu\", units=32) and click Apply. Its weights are made anew.", "ok")

    def _configure_from_widgets(self) -> None:
        if self._configure_open is None or self._configure_open != path_of(self.selected):
            raise SurgeryError("Click \u201cConfigure\u2026\u201d on a layer's row first.")
        self.configure(**parse_options(self.configure_text.value))

    def _open_swap(self) -> None:
        answer = self.session.answers.model_actions()
        if not answer.can_swap:
            raise SurgeryError(answer.swap_reason)
        with self._quietly():
            self.swap_box.layout.display = None
            self._sync_model_actions()
        self._say("Swapping an activation: choose what to swap from and to, and click Swap. Every weight is kept.", "ok")

    def _swap_from_widgets(self) -> None:
        if not self.swap_from.value or not self.swap_to.value:
            raise SurgeryError("Choose the activation to swap from and the one to swap to first.")
        self.swap_activation(self.swap_from.value, self.swap_to.value)

    def _lora_from_widgets(self) -> None:
        self.enable_lora(self.lora_rank.value)

    def _open_lora(self) -> None:
        answer = self.session.answers.model_actions()
        if not answer.can_lora:
            raise SurgeryError(answer.lora_reason)
        self.lora_box.layout.display = None
        self._say("LoRA on attention: choose the rank and which projections, and click Apply LoRA. Only the LoRA "
                  "factors will train.", "ok")

    def _lora_all_from_widgets(self) -> None:
        self.enable_lora_attention(self.lora_all_rank.value, self.lora_which.value)

    def _save_from_widgets(self) -> None:
        self.save(self.save_path.value)

    def _on_prune_keep(self, change) -> None:
        if self._syncing:
            return
        self._guard(lambda: self.prune(change["new"], self.prune_by.value))

    def _on_prune_by(self, change) -> None:
        """Another criterion: a pruned layer is pruned again by it (the same fraction kept)."""
        if self._syncing or self.selected is None:
            return
        step = self.session.answers.prune_step(path_of(self.selected))
        if step is not None:
            self._guard(lambda: self.prune(step.params["keep"], change["new"]))

    def _open_global_prune(self) -> None:
        self.global_prune_box.layout.display = None
        self._say("Pruning the model: choose the budget and move the slider (params and MACs after are worked out "
                  "as it moves), then click Apply. Undo takes it back.", "ok")
        self._preview_global()

    def _on_global_budget(self, change) -> None:
        """A budget's slider: the fraction of the channels kept, or of the params / MACs kept at most."""
        if self._syncing:
            return
        with self._quietly():
            self._set_target_range(change["new"])
        if self.global_prune_box.layout.display != "none":
            self._guard(self._preview_global)

    def _set_target_range(self, budget: str) -> None:
        if budget == "keep":
            self.global_target.description = "keep"
            self.global_target.min, self.global_target.max = 0.05, 0.95
        else:
            self.global_target.description = "keep at most"
            self.global_target.max, self.global_target.min = 1.0, 0.05
        self.global_target.value = 0.5

    def _on_global_change(self, change) -> None:
        if not self._syncing and self.global_prune_box.layout.display != "none":
            self._guard(self._preview_global)

    def _preview_global(self) -> None:
        """The info line: params and MACs before -> after for the slider's budget, without building."""
        try:
            plan = self.session.answers.global_prune_plan(**{self.global_budget.value: self.global_target.value},
                                                          by=self.global_by.value, round_to=self.global_round.value)
        except SurgeryError as error:  # an unreachable budget, a criterion that cannot score: said in place
            self.global_info.value = (f"<span class='kn-global-prune-refused' style='font-size:12px;color:#c62828'>"
                                      f"{html.escape(_plain(error))}</span>")
            return
        self.global_info.value = _global_text(plan.params_before, plan.params_after, plan.macs_before,
                                              plan.macs_after, f"{plan.channels_before - plan.channels_after} of "
                                              f"{plan.channels_before} channels in {len(plan.removed)} group(s)")

    def _draw_global_prune(self) -> None:
        """After Apply, the info line says what the step did; else (once opened) what the slider would do."""
        if self.global_prune_box.layout.display == "none":
            return
        steps = self.session.steps
        last = steps[-1] if steps else None
        if last is not None and last.kind == "transform" and last.label == "prune_global" and last.counts:
            self.global_info.value = _global_text(*last.counts, "applied; move the slider to prune further",
                                                  applied=True)
        else:
            self._preview_global()

    def _quantize_from_widgets(self) -> None:
        self.quantize(self.quantize_mode.value)

    def _open_quantize_model(self) -> None:
        self.quantize_box.layout.display = None
        self._draw_quantize_info()
        self._say("Quantizing the model: choose the mode (and, with data, how many of the most sensitive layers stay "
                  "float), then click Apply. Undo restores the float model.", "ok")

    def _on_quantize_model_mode(self, change) -> None:
        if not self._syncing and self.quantize_box.layout.display != "none":
            self._guard(self._draw_quantize_info)

    def _draw_quantize_info(self) -> None:
        """The size now, and with data the sensitivity table and the size after (each row saves its bytes)."""
        from ..quantization import size_text

        mode = self.quantize_model_mode.value
        before = facade.model_bytes(self.session.model)
        frame = self.session.quantization_sensitivity(mode)
        if frame is None:
            self.quantize_model_info.value = (
                f"<span style='font-size:11px;color:#666'>model now {size_text(before)}; the size after is said "
                "once applied. Open the editor with data=x to see each layer's drift here and keep the most "
                "sensitive float.</span>")
            return
        keep = min(int(self.quantize_keep.value or 0), max(len(frame) - 1, 0))
        quantized = frame.iloc[:len(frame) - keep] if keep else frame
        after = before - int(quantized["bytes_saved"].sum())
        rows = "".join(
            f"<tr><td><code>{html.escape(str(r.layer))}</code></td><td>{html.escape(str(r.type))}</td>"
            f"<td style='text-align:right'>{r.rel_drift:.2%}</td><td style='text-align:right'>"
            f"{size_text(int(r.bytes_before))} \u2192 {size_text(int(r.bytes_after))}</td></tr>"
            for r in frame.itertuples())
        self.quantize_model_info.value = (
            f"<div style='font-size:11px'>{html.escape(mode)}: model {size_text(before)} \u2192 "
            f"{size_text(after)}" + (f" ({keep} kept float)" if keep else "") + "<table><tr><th>layer</th>"
            "<th>type</th><th>drift alone</th><th>bytes</th></tr>" + rows + "</table></div>")

    def _quantize_model_from_widgets(self) -> None:
        keep = int(self.quantize_keep.value or 0)
        self.quantize_model(self.quantize_model_mode.value, keep_float=keep or None)

    def _global_prune_from_widgets(self) -> None:
        self.prune_global(**{self.global_budget.value: self.global_target.value}, by=self.global_by.value,
                          round_to=self.global_round.value)

    def _insert_from_widgets(self) -> None:
        if not self.insert_picker.value:
            raise SurgeryError("Pick a type to insert first.")
        self.insert(self.insert_picker.value)

    # ------------------------------------------------------------------ display

    def _repr_mimebundle_(self, **kwargs):
        # show_editor already drew the panel in this cell; do not draw a second copy of it.
        # Once closed, the short text is all there is to show; a front end that cannot draw
        # widgets (a terminal) shows the editor's short repr, not the widget's.
        if self._closed or (self._shown_in_cell is not None and self._shown_in_cell == _execution_count()):
            return {"text/plain": repr(self)}
        bundle = self.widget._repr_mimebundle_(**kwargs) or {}
        return {**bundle, "text/plain": repr(self)}

    def __repr__(self) -> str:
        n = len(self.session.steps)
        closed = " (closed)" if self._closed else ""
        return f"<kerasnb Editor on model {self.original.name!r}: {n} edit{'' if n == 1 else 's'}{closed}>"


def show_editor(model, probe=None, data=None) -> Editor:
    """Open the editor panel on ``model`` and return the ``Editor`` (keep it in a variable).

    The panel lists every layer with its weight status; picking a type for a row, inserting,
    deleting, freezing, pruning, LoRA and the whole-model steps each rebuild the model, with
    undo and redo. ``editor.model`` is always the current result and ``editor.report`` its
    weight report; the model passed in is never changed. In a notebook the panel is displayed
    and kept alive, one per model: running this again on the same model closes the earlier
    panel. In a plain Python script nothing is shown, and the returned editor works from code.

    Args:
        model: A built functional or Sequential model (a keras-hub backbone or task too).
        probe: A small batch the model takes (an array, or a list with one per input). Then the
            report section also shows, for every layer, how far its output on the probe moved
            in the edited model (``result.compare``).
        data: Examples to measure channels on when pruning (what ``kerasnb.importance``
            takes: an array of inputs, a tuple ``(x, y)``, or an iterable of batches). With it
            the prune criteria ``"apoz"`` and ``"taylor"`` are offered too; without it only
            those that read the weights (``"l1"``, ``"l2"``, ``"bn_scale"``).

    Returns:
        Editor: the panel (``editor.widget``) and its state (``.model``, ``.report``,
        ``.edits``, ``.notes``), with a method for each control.

    Raises:
        UnsupportedModel: the model has no graph (``UnbuiltModel`` when it was never built).
        InvalidEdit: ``probe`` does not fit the model's inputs.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> editor = kerasnb.show_editor(model)
        >>> editor.select("hidden")
        >>> editor.delete()
        >>> editor.report.status("hidden"), editor.model is not model
        ('removed', True)
        >>> editor.undo()
        >>> editor.report.status("hidden")
        'kept'
        >>> editor.close()
    """
    editor = Editor(model, probe=probe, data=data)  # first: a model (or probe) the editor refuses leaves the earlier panel open
    earlier = _SHOWN.pop(id(model), None)
    if earlier is not None:
        earlier.close()
    if _in_notebook():
        _display(editor.widget)
        editor._shown_in_cell = _execution_count()
        _SHOWN[id(model)] = editor  # the displayed panel keeps working while nobody holds the editor
    return editor


# ----------------------------------------------------------------------------- helpers


def _in_notebook() -> bool:
    """True inside a Jupyter kernel, where a widget can be displayed (not a script, not a terminal)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _display(widget) -> None:
    from IPython.display import display

    display(widget)


class _Weak:
    """A widget callback that reaches the editor through a weak reference.

    The widget registry holds every open widget and so its callbacks; holding the editor weakly
    there lets an editor nobody uses be freed, with its models and their weights.
    """

    def __init__(self, editor, name: str, *args):
        self._editor = weakref.ref(editor)
        self._name, self._args = name, args

    def __call__(self, *args):
        editor = self._editor()
        if editor is not None:
            getattr(editor, self._name)(*self._args, *args)


def _tree(root, styles: bool = False):
    """``root`` and every widget under it (boxes' children, accordions' sections), and with
    ``styles`` their layouts and styles too."""
    stack, seen = [root], set()
    while stack:
        widget = stack.pop()
        if id(widget) in seen or not isinstance(widget, w.Widget):
            continue
        seen.add(id(widget))
        yield widget
        stack.extend(getattr(widget, "children", None) or ())
        if styles:
            stack.extend(sub for sub in (getattr(widget, "layout", None), getattr(widget, "style", None))
                         if sub is not None)


def _close_tree(root) -> None:
    """Close ``root``, the widgets under it, and their layouts and styles."""
    for widget in list(_tree(root, styles=True)):
        widget.close()


def _execution_count():
    try:
        from IPython import get_ipython

        shell = get_ipython()
        return shell.execution_count if shell is not None else None
    except ImportError:
        return None


_GLOBAL_BUDGET_TEXT = {"macs": "MACs", "params": "parameters", "keep": "channels"}


def _change(before, after) -> str:
    return f"<b>{before:,}</b> &rarr; <b>{after:,}</b> ({(after - before) / max(before, 1):+.1%})"


def _prune_text(info) -> str:
    """The per-layer info line of a pruned layer: parameters, and MACs when they are known."""
    text = (f"<span style='font-size:12px'>model parameters: <b>{info.before:,}</b> before pruning &rarr; "
            f"<b>{info.after:,}</b> after ({(info.after - info.before) / max(info.before, 1):+.1%})")
    if info.macs_before:
        text += f"; MACs per sample: {_change(info.macs_before, info.macs_after)}"
    return text + f" <span style='color:#666'>(by {html.escape(str(info.by))})</span></span>"


def _global_text(params_before, params_after, macs_before, macs_after, tail: str, applied: bool = False) -> str:
    """The "Prune model..." info line: params and MACs before -> after (MACs only when known)."""
    text = f"params {_change(params_before, params_after)}"
    if macs_before:
        text += f", MACs per sample {_change(macs_before, macs_after)}"
    lead = "Pruned: " if applied else ""
    return f"<span style='font-size:12px'>{lead}{text}; {html.escape(tail)}</span>"


def _option_text(row, key=None) -> str:
    indent = "\u2003" * row.depth
    mark = " (removed)" if row.status == "removed" else ""
    call = f" (call {call_of(key)})" if call_of(key) is not None else ""
    return f"{indent}{row.path.split('/')[-1]} \u2014 {row.type}{call}{mark}"


def _inline(actions) -> dict:
    """What the selected row draws in the table: its Type dropdown (the types offered, the one it
    has, why it cannot change), its parameter fields, and the types not offered with why."""
    key = actions.key
    return {"path": str(path_of(key)), "call": call_of(key), "types": list(actions.offered),
            "type": actions.label, "disabled": not actions.can_choose, "reason": actions.choose_reason,
            "fields": [_field(p) for p in actions.params],
            "refused": [[label, reason] for label, reason in actions.refused.items()]}


def _field(param) -> dict:
    """One parameter field: its kind (choice, bool, int, float, text) and value, as JSON takes them."""
    if param.choices:
        return {"name": param.name, "kind": "choice", "value": _plain_value(param.value),
                "choices": [_plain_value(c) for c in param.choices]}
    value = param.value
    kind = ("bool" if isinstance(value, bool) else "int" if isinstance(value, int)
            else "float" if isinstance(value, float) else "text")
    return {"name": param.name, "kind": kind, "value": value if kind != "text" else str(value), "choices": None}


def _plain_value(value):
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def _plain(error: BaseException) -> str:
    """The error in plain words, without a traceback (plain text: :meth:`Editor._say` escapes it)."""
    text = str(error).strip() or type(error).__name__
    if not isinstance(error, SurgeryError):
        text = f"That did not work: {type(error).__name__}: {text}"
    return text[:2000]
