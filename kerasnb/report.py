"""The weight report: which layers of the new model kept their trained weights, and why not.

Plain data; pandas is imported only by :meth:`WeightReport.to_frame`.
"""

from __future__ import annotations

import enum
import html
from dataclasses import dataclass, fields


class Status(str, enum.Enum):
    """A layer's weight status in a ``WeightReport``: what happened to its trained weights.

    A ``str``: it compares, hashes, prints and sorts as its value, so ``status == "kept"`` works.
    ``kerasnb.STATUSES`` lists them in this order:

    - ``kept``: weights copied; computes exactly what it did before (bit for bit on CPU);
    - ``kept_input_changed``: weights copied, but something upstream changed: fine-tune;
    - ``pruned``: weights kept but sliced to the remaining channels (or heads);
    - ``adapted``: weights carried over through a rule (e.g. a kernel summed for a new input);
    - ``folded``: another layer's weights folded in (a BatchNormalization, LoRA factors);
    - ``quantized``: its weights stored in fewer bits (int8, int4) by Keras's quantization; computes
      nearly what it did (the reason gives the mode and the bytes before and after);
    - ``reinitialized``: its old weights no longer fit; freshly initialised;
    - ``new``: added by the edit;
    - ``removed``: in the original, not in the new model;
    - ``no_weights``: has no weights.

    Examples:
        >>> kerasnb.Status("kept") is kerasnb.Status.KEPT
        True
        >>> kerasnb.Status.KEPT == "kept", str(kerasnb.Status.KEPT_INPUT_CHANGED)
        (True, 'kept_input_changed')
        >>> [str(status) for status in kerasnb.STATUSES][:3]
        ['kept', 'kept_input_changed', 'pruned']
    """

    KEPT = "kept"
    KEPT_INPUT_CHANGED = "kept_input_changed"
    PRUNED = "pruned"
    ADAPTED = "adapted"
    FOLDED = "folded"
    QUANTIZED = "quantized"
    REINITIALIZED = "reinitialized"
    NEW = "new"
    REMOVED = "removed"
    NO_WEIGHTS = "no_weights"

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return repr(self.value)

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    __hash__ = str.__hash__


KEPT = Status.KEPT
KEPT_INPUT_CHANGED = Status.KEPT_INPUT_CHANGED
REINITIALIZED = Status.REINITIALIZED
NEW = Status.NEW
REMOVED = Status.REMOVED
NO_WEIGHTS = Status.NO_WEIGHTS
PRUNED = Status.PRUNED
ADAPTED = Status.ADAPTED
FOLDED = Status.FOLDED
QUANTIZED = Status.QUANTIZED

STATUSES = tuple(Status)

# Colours shared by the HTML table, the editor and the plots.
STATUS_COLORS = {
    KEPT: "#2e7d32",
    KEPT_INPUT_CHANGED: "#f9a825",
    PRUNED: "#6a1b9a",
    ADAPTED: "#00838f",
    FOLDED: "#4e342e",
    QUANTIZED: "#ad1457",
    REINITIALIZED: "#c62828",
    NEW: "#1565c0",
    REMOVED: "#757575",
    NO_WEIGHTS: "#9e9e9e",
}

STATUS_MEANINGS = {
    KEPT: "weights copied; computes exactly what it did before",
    KEPT_INPUT_CHANGED: "weights copied, but something upstream changed: fine-tune",
    PRUNED: "weights kept but sliced to the remaining channels",
    ADAPTED: "weights carried over through a rule (e.g. a kernel summed for a new input); the reason names it",
    FOLDED: "another layer's weights folded in (e.g. a BatchNormalization); computes what both did",
    QUANTIZED: "weights stored in fewer bits (int8, int4, float8); computes nearly what it did: see its drift",
    REINITIALIZED: "its old weights no longer fit; freshly initialised",
    NEW: "added by the edit",
    REMOVED: "in the original, not in the new model",
    NO_WEIGHTS: "has no weights",
}


@dataclass(frozen=True)
class LayerRow:
    """One row of a ``WeightReport``: a layer of the new model, or a removed one.

    Attributes:
        layer: Its path in the new model (``"outer/inner"`` inside a nested model); for a
            removed layer, its path in the original.
        type: Its class name, e.g. ``"Dense"``.
        status: Its ``Status`` (``kept``, ``new``, ...).
        reason: Why, in words, when the status needs one (e.g. ``"kernel (4, 2) -> (8, 2)"``).
        params: Its number of parameters.
        trainable: Whether it trains.
        source: The original layer whose weights (or place) it carries, or ``""`` for a new one.
        is_container: True for a nested model; its layers have rows of their own.
        bytes_before: The bytes of its variables in the original (a ``kerasnb.quantize`` report;
            None elsewhere).
        bytes_after: The bytes of its variables in the new model (likewise).

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(inputs))
        >>> row = kerasnb.configure(model, "out", units=3).report.row("out")
        >>> row.status, row.reason, row.params, row.source
        ('reinitialized', 'kernel (8, 2) -> (8, 3)...', 27, 'out')
    """

    layer: str  # name in the new model ("outer/inner" inside a nested model); removed: old name
    type: str
    status: Status
    reason: str = ""
    params: int = 0
    trainable: bool = True
    source: str = ""  # the original layer whose weights (or place) it carries, or ""
    is_container: bool = False  # a nested model; its layers have rows of their own
    # The bytes of its variables before and after (kerasnb.quantize fills them; None elsewhere).
    bytes_before: int | None = None
    bytes_after: int | None = None


class WeightReport:
    """The weight report of a ``SurgeryResult``: which layers kept their trained weights, and why not.

    One ``LayerRow`` per layer of the new model in graph order, then one per removed layer. It
    iterates over its rows, ``len()`` counts them, and ``report["name"]`` is ``report.row("name")``.
    In a notebook it shows as a coloured table; ``repr()`` is a plain-text table.

    Args:
        rows: The ``LayerRow`` objects (kerasnb builds reports; users read them).
        aliases: ``{other path: path of its row}`` for a layer reachable under several paths.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> report = kerasnb.insert(model, keras.layers.Dropout(0.5, name="drop"), after="hidden").report
        >>> report.summary()
        '2 layers kept weights (46 params), 1 of them with changed input, 1 new'
        >>> report["out"].status, len(report)
        ('kept_input_changed', 4)
    """

    def __init__(self, rows, aliases=None):
        self.rows = tuple(rows)
        self._by_name = {row.layer: row for row in self.rows}
        # A tied layer has one row, at its first path; its other paths lead to that row.
        self.aliases = dict(aliases or {})

    def __iter__(self):
        return iter(self.rows)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, name: str) -> LayerRow:
        return self.row(name)

    def row(self, name: str) -> LayerRow:
        """The ``LayerRow`` of the layer ``name``.

        Args:
            name: A layer's path in the new model (``"outer/inner"`` inside a nested model), or
                a removed layer's path in the original.

        Returns:
            LayerRow: its type, status, reason, parameters, trainable flag and source.

        Raises:
            LayerNotFound: no row has that name; the message suggests close names.

        Examples:
            >>> inputs = keras.Input((8,), name="x")
            >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
            >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
            >>> report = kerasnb.insert(model, keras.layers.Dropout(0.5, name="drop"), after="hidden").report
            >>> report.row("drop").status, report.row("drop").reason
            ('new', "added by insert at 'hidden'")
        """
        try:
            return self._by_name[self.aliases.get(name, name)]
        except KeyError:
            from .errors import LayerNotFound, suggest

            raise LayerNotFound(
                f"The report has no layer named {name!r}.{suggest(name, self._by_name)} "
                f"Received: name={name!r}"
            ) from None

    def status(self, name: str) -> str:
        """The status of the layer ``name`` (a ``Status``, which compares equal to its text).

        Args:
            name: A layer's path in the new model, or a removed layer's path in the original.

        Returns:
            Status: e.g. ``'kept'``.

        Raises:
            LayerNotFound: no row has that name; the message suggests close names.

        Examples:
            >>> inputs = keras.Input((8,), name="x")
            >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
            >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
            >>> report = kerasnb.insert(model, keras.layers.Dropout(0.5, name="drop"), after="hidden").report
            >>> report.status("hidden"), report.status("out")
            ('kept', 'kept_input_changed')
            >>> report.status("hiden")
            Traceback (most recent call last):
            ...
            kerasnb.errors.LayerNotFound: The report has no layer named 'hiden'. Did you mean 'hidden'? Received: name='hiden'
        """
        return self.row(name).status

    def with_status(self, status: str) -> list[str]:
        """The names of the layers that have ``status``, in report order.

        Args:
            status: A ``Status`` or its text, e.g. ``"kept"``.

        Returns:
            list: the layers' paths.

        Examples:
            >>> inputs = keras.Input((8,), name="x")
            >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
            >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
            >>> report = kerasnb.insert(model, keras.layers.Dropout(0.5, name="drop"), after="hidden").report
            >>> report.with_status("kept"), report.with_status("new")
            (['hidden'], ['drop'])
        """
        return [row.layer for row in self.rows if row.status == status]

    def counts(self) -> dict:
        """``{status: (number of layers, number of parameters)}`` for every status present.

        Nested models are not counted themselves: their layers are, so no parameter counts twice.

        Returns:
            dict: ``{Status: (layers, parameters)}``.

        Examples:
            >>> inputs = keras.Input((8,), name="x")
            >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
            >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
            >>> report = kerasnb.insert(model, keras.layers.Dropout(0.5, name="drop"), after="hidden").report
            >>> report.counts()
            {'no_weights': (1, 0), 'kept': (1, 36), 'new': (1, 0), 'kept_input_changed': (1, 10)}
        """
        out: dict = {}
        for row in self.rows:
            if row.is_container:
                continue
            n, p = out.get(row.status, (0, 0))
            out[row.status] = (n + 1, p + row.params)
        return out

    def summary(self) -> str:
        """The report in one line, e.g. '14 layers kept weights (3.2M params), 1 reinitialized (2,080 params)'.

        Returns:
            str: layers and parameters per status (``kept`` and ``kept_input_changed`` together).

        Examples:
            >>> inputs = keras.Input((8,), name="x")
            >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
            >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
            >>> report = kerasnb.insert(model, keras.layers.Dropout(0.5, name="drop"), after="hidden").report
            >>> report.summary()
            '2 layers kept weights (46 params), 1 of them with changed input, 1 new'
        """
        counts = self.counts()
        parts = []
        kept_n = sum(counts.get(s, (0, 0))[0] for s in (KEPT, KEPT_INPUT_CHANGED))
        kept_p = sum(counts.get(s, (0, 0))[1] for s in (KEPT, KEPT_INPUT_CHANGED))
        if kept_n:
            parts.append(f"{_layers(kept_n)} kept weights ({_params(kept_p)})")
            if counts.get(KEPT_INPUT_CHANGED):
                parts[-1] += f", {counts[KEPT_INPUT_CHANGED][0]} of them with changed input"
        for status, word in ((PRUNED, "pruned"), (ADAPTED, "adapted"), (FOLDED, "folded"),
                             (QUANTIZED, "quantized"), (REINITIALIZED, "reinitialized"), (NEW, "new"), (REMOVED, "removed")):
            if status in counts:
                n, p = counts[status]
                parts.append(f"{n} {word} ({_params(p)})" if p else f"{n} {word}")
        return ", ".join(parts) if parts else "no layers"

    def to_frame(self):
        """The rows as a pandas DataFrame, one column per ``LayerRow`` field (pandas is imported here).

        Returns:
            pandas.DataFrame: columns layer, type, status, reason, params, trainable, source,
            is_container; a ``kerasnb.quantize`` report also bytes_before and bytes_after.

        Examples:
            >>> inputs = keras.Input((8,), name="x")
            >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
            >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
            >>> report = kerasnb.insert(model, keras.layers.Dropout(0.5, name="drop"), after="hidden").report
            >>> frame = report.to_frame()
            >>> print(frame[["layer", "status", "params"]].to_string(index=False))
             layer             status  params
                 x         no_weights       0
            hidden               kept      36
              drop                new       0
               out kept_input_changed      10
        """
        import pandas as pd

        columns = [f.name for f in fields(LayerRow)]
        if all(row.bytes_before is None and row.bytes_after is None for row in self.rows):
            columns = [c for c in columns if c not in _BYTES]  # only a quantize report has them
        return pd.DataFrame([_row_dict(row) for row in self.rows], columns=columns)

    def __repr__(self) -> str:
        width = max((len(r.layer) for r in self.rows), default=5)
        lines = [f"WeightReport: {self.summary()}"]
        for r in self.rows:
            extra = f"  ({r.reason})" if r.reason else ""
            lines.append(f"  {r.layer:<{width}}  {r.status:<18} {r.type}{extra}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left'>{h}</th>" for h in ("layer", "type", "status", "reason", "params", "trainable", "source"))
        body = []
        for r in self.rows:
            color = STATUS_COLORS.get(r.status, "#000")
            body.append(
                "<tr>"
                f"<td><code>{html.escape(r.layer)}</code></td><td>{html.escape(r.type)}</td>"
                f"<td><span style='color:white;background:{color};padding:1px 6px;border-radius:3px'>{r.status}</span></td>"
                f"<td>{html.escape(r.reason)}</td><td style='text-align:right'>{r.params:,}</td>"
                f"<td>{'yes' if r.trainable else 'no'}</td><td>{html.escape(r.source)}</td>"
                "</tr>"
            )
        present = [s for s in STATUSES if any(r.status == s for r in self.rows)]
        legend = " ".join(
            f"<span style='color:white;background:{STATUS_COLORS[s]};padding:1px 6px;border-radius:3px' "
            f"title='{html.escape(STATUS_MEANINGS[s])}'>{s}</span> {html.escape(STATUS_MEANINGS[s])};"
            for s in present
        )
        return (
            f"<div><b>Weight report</b>: {html.escape(self.summary())}<br><small>{legend}</small>"
            f"<table>{'<tr>' + head + '</tr>'}{''.join(body)}</table></div>"
        )


_BYTES = ("bytes_before", "bytes_after")


def _row_dict(row: LayerRow) -> dict:
    return {f.name: getattr(row, f.name) for f in fields(LayerRow)}


def _layers(n: int) -> str:
    return f"{n} layer" if n == 1 else f"{n} layers"


def _params(p: int) -> str:
    if p >= 1_000_000:
        return f"{p / 1e6:.1f}M params"
    return f"{p:,} params"


# ----------------------------------------------------------------------------- deriving statuses


def build(original, new_model, lineage: dict) -> WeightReport:
    """The report of ``new_model`` against ``original``, from each layer's lineage (facts)."""
    from . import _graph

    rows = []
    carried = set()
    for path, layer in _graph.walk_layers(new_model):
        lin = lineage[path]
        if lin.original is not None:
            carried.add(lin.original)
        container = _graph.is_graph_model(layer)
        inside = [l for p, l in lineage.items() if p.startswith(path + "/")] if container else ()
        status, reason = status_of(lin, has_weights=bool(getattr(layer, "weights", None)), container=container,
                                   inside=inside)
        rows.append(LayerRow(path, type(layer).__name__, status, reason, _graph.count_params(layer),
                             bool(getattr(layer, "trainable", True)), lin.original or "", container))
    for path, layer in _graph.walk_layers(original):
        if path not in carried:
            rows.append(LayerRow(path, type(layer).__name__, REMOVED, "", _graph.count_params(layer),
                                 bool(getattr(layer, "trainable", True)), path, _graph.is_graph_model(layer)))
    aliases = {**_graph.layer_aliases(original), **_graph.layer_aliases(new_model)}
    return WeightReport(rows, aliases=aliases)


def status_of(lin, *, has_weights: bool, container: bool = False, inside=()) -> tuple[Status, str]:
    """The one place a status is decided: ``(status, reason)`` of a layer from its lineage.

    ``lin`` says where the layer comes from (``original`` path or None), what the weight rules did
    (``status``: kept when its weights came through as they were), whether it computes what it did on the same
    inputs (``faithful``) and which config changes it had. A nested model's status sums up
    the layers ``inside`` it.
    """
    if lin.original is None:
        return NEW, lin.reason
    if container:
        if lin.faithful and all(l.original is not None and l.status == KEPT and l.faithful
                                and not l.config_changed for l in inside):
            return KEPT, ""
        if any(l.original is not None and l.status == KEPT for l in inside):
            return KEPT_INPUT_CHANGED, "some layers inside changed or see changed inputs; see its rows"
        return REINITIALIZED, "none of its weights could be kept; see its rows"
    if lin.status in (REINITIALIZED, PRUNED, ADAPTED, FOLDED, QUANTIZED):
        return lin.status, lin.reason
    if not has_weights:
        if lin.config_changed:
            return NO_WEIGHTS, lin.config_changed
        return NO_WEIGHTS, "" if lin.faithful else "its input changed"
    if lin.faithful and not lin.config_changed:
        return KEPT, getattr(lin, "note", "")
    return KEPT_INPUT_CHANGED, lin.config_changed or "weights copied, but its input changed: fine-tune it"
