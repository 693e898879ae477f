"""``kerasnb.trace``: every layer's activations of any Keras 3 model, from one forward pass per batch.

This module is the one place kerasnb runs a model while watching what its layers give:
:func:`replay` runs a graph's calls in order on concrete tensors, in inference mode, and lets a
caller read (or change) each call's outputs as they are made. ``trace`` records them,
``compare`` compares two models' records, and the ``apoz`` / ``taylor`` pruning criteria read
(and, for gradients, multiply) the tensors channels are read from. An eager call of a layer adds
no call to it, so the model traced is left exactly as it was.

A replay of a graph is worked out once per model and kept (weakly keyed by the model): which
calls to make, which values each call frees once its last reader has run. A nested model is
replayed call by call only when something inside it is watched; otherwise it runs as one call.
"""

from __future__ import annotations

import html
import inspect
import weakref

import keras
import numpy as np

from . import _graph, _targets
from .errors import IncompatibleShape, InvalidEdit, LayerNotFound, surgery_errors_only

__all__ = ["Trace", "trace", "replay", "batches"]

BATCH_SIZE = 32  # when x is one array (or a dict of arrays)
_CHUNK = 1 << 20  # values per step when statistics are taken (bounded temporary memory)


# ----------------------------------------------------------------------------- the one replay


class _Steps:
    """How one graph is replayed: per call, whether it takes ``training`` and the values it frees."""

    def __init__(self, model):
        views = _graph.walk(model)
        outputs = {id(t) for t in _graph.output_tensors(model)}
        last_reader: dict = {}
        for position, view in enumerate(views):
            for tensor in list(view.input_tensors) + view.kwargs_tensors():
                last_reader[id(tensor)] = position
        frees: dict = {}
        for key, position in last_reader.items():
            if key not in outputs:
                frees.setdefault(position, []).append(key)
        self.inputs = _graph.input_tensors(model)
        self.input_layers = _graph.input_layers(model)
        self.outputs = _graph.output_tensors(model)
        self.calls = [(view, _takes_training(view.operation), tuple(frees.get(i, ()))) for i, view in enumerate(views)]


_STEPS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _steps_of(model) -> _Steps:
    graph = _graph.functional(model)
    found = _STEPS.get(graph)
    if found is None:
        found = _STEPS[graph] = _Steps(graph)
    return found


def replay(model, xs, on_output=None, descend=None, prefix: str = "") -> list:
    """The model's outputs (a flat list) for inputs ``xs`` (a flat list of tensors), one pass.

    Each call of the graph is made on concrete tensors with ``training=False`` where the layer
    takes it (as Keras's own functional call does, which adds no call to the layer).
    ``on_output(path, view, index, tensor, value)`` is called with each value made (the inputs
    too, with ``view`` None) and returns the value the graph goes on with. A nested model is
    replayed call by call when ``descend(prefix_of_its_layers, nested_model)`` is true.
    """
    steps = _steps_of(model)
    values = {}
    for layer, tensor, value in zip(steps.input_layers, steps.inputs, xs):
        if on_output is not None:
            value = on_output(prefix + layer.name, None, 0, tensor, value)
        values[id(tensor)] = value
    for view, takes_training, frees in steps.calls:
        op = view.operation
        path = prefix + view.name
        if descend is not None and _replayable(view) and descend(path + "/", op):
            inner = _graph.input_tensors(op)
            given = [_cast(values[id(t)], i) for t, i in zip(view.input_tensors, inner)]
            outputs = replay(op, given, on_output, descend, path + "/")
        else:
            args, kwargs = view.fill_in(values)
            if takes_training:
                kwargs["training"] = False
            outputs = keras.tree.flatten(op(*args, **kwargs))
        for index, (tensor, value) in enumerate(zip(view.outputs, outputs)):
            if on_output is not None:
                value = on_output(path, view, index, tensor, value)
            values[id(tensor)] = value
        for key in frees:  # its last reader has run: let the backend free it
            values.pop(key, None)
    return [values[id(t)] for t in steps.outputs]


def _replayable(view) -> bool:
    """A nested model called on its inputs alone (no keyword tensors such as a mask): its graph can be
    replayed on the values the call received."""
    op = view.operation
    return (_graph.is_graph_model(op) and not view.kwargs_tensors()
            and len(view.input_tensors) == len(_graph.input_tensors(op)))


def _cast(value, tensor):
    dtype = getattr(tensor, "dtype", None)
    if dtype is None or keras.backend.standardize_dtype(value.dtype) == keras.backend.standardize_dtype(dtype):
        return value
    return keras.ops.cast(value, dtype)


def _takes_training(operation) -> bool:
    call = getattr(operation, "call", None)
    if call is None:
        return False
    try:
        return "training" in inspect.signature(call).parameters
    except (TypeError, ValueError):
        return False


# ----------------------------------------------------------------------------- what can be traced


def traceable(model, prefix: str = "", seen=None) -> list:
    """``(path, layer)`` of every layer with an output in the graphs of ``model``, nested ones at any
    depth (their input layers too), in the order a replay meets them."""
    out, seen = [], set() if seen is None else seen
    for layer in _graph.input_layers(model):
        if prefix + layer.name not in seen:
            seen.add(prefix + layer.name)
            out.append((prefix + layer.name, layer))
    for view in _graph.walk(model):
        path = prefix + view.name
        if path not in seen:
            seen.add(path)
            out.append((path, view.operation))
        if _graph.is_graph_model(view.operation) and view.call_index == 0:
            out.extend(traceable(view.operation, path + "/", seen))
    return out


def _wanted(model, layers) -> tuple:
    """``(paths, {path: calls or None})`` that ``layers`` selects (None: every call)."""
    candidates = traceable(model)
    if layers is None:
        return tuple(p for p, _ in candidates), {}
    items = layers if isinstance(layers, list) else [layers]
    calls: dict = {}
    plain = []
    for item in items:
        if (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], (int, np.integer)) and not isinstance(item[1], bool)):
            calls.setdefault(item[0], set()).add(int(item[1]))
            plain.append(item[0])
        else:
            plain.append(item)
    given = plain if isinstance(layers, list) or len(plain) != 1 else plain[0]
    found = _targets.select(model, given, candidates, argument="layers",
                            condition=" among the layers with an output in its graphs (a sub-layer a block holds "
                                      "inside its own call is not traced: trace the block)")
    restrict: dict = {}
    for path, _ in found:
        name = path.rsplit("/", 1)[-1]
        wanted_calls = calls.get(path, calls.get(name))
        if wanted_calls is not None:
            # a (name, call) restricts that name only; the same name also given plainly means every call
            plainly = any(isinstance(i, str) and (i == path or i == name) for i in items)
            restrict[path] = None if plainly else wanted_calls
    return tuple(p for p, _ in found), {p: c for p, c in restrict.items() if c is not None}


# ----------------------------------------------------------------------------- data


def batches(model, data, *, argument: str = "x", batch_size=None):
    """``(inputs as a list of numpy arrays, labels or None)`` per batch of ``data``, lazily.

    ``data``: an array, a dict of arrays (by input name), a tuple ``(x, y)`` of whole arrays, or an
    iterable of batches (arrays, dicts, ``(x, y)`` / ``(x, y, sample_weight)`` tuples: a list, a
    generator, a ``tf.data.Dataset`` (read through its ``as_numpy_iterator``), a
    ``keras.utils.PyDataset``). Shapes are checked against the model's inputs.
    """
    inputs = _graph.input_tensors(model)
    size = BATCH_SIZE if batch_size is None else batch_size
    if isinstance(data, tuple) and len(data) in (2, 3) and _whole_pair(data, inputs):
        y = None if data[1] is None else keras.ops.convert_to_numpy(data[1])
        items = _split(keras.tree.map_structure(keras.ops.convert_to_numpy, data[0]), y, size)
    elif _arrayish(data) or isinstance(data, dict) or (
            isinstance(data, (list, tuple)) and len(inputs) > 1 and len(data) == len(inputs)
            and all(_arrayish(d) for d in data)):
        items = _split(data, None, size)
    elif hasattr(data, "as_numpy_iterator"):  # a tf.data.Dataset, without importing tensorflow
        items = (_unpack(batch, inputs, argument) for batch in data.as_numpy_iterator())
    elif not hasattr(data, "__iter__") and hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        items = (_unpack(data[i], inputs, argument) for i in range(len(data)))  # a keras.utils.PyDataset
    elif isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise InvalidEdit(
            f"{argument}= is an array of inputs, a dict of them, a tuple (x, y) or an iterable of batches (a list, "
            f"a tf.data.Dataset). Received: {argument} of type {type(data).__name__}"
        )
    else:
        items = (_unpack(batch, inputs, argument) for batch in data)
    for x, y in items:
        yield _as_inputs(model, inputs, x, argument), (None if y is None else keras.ops.convert_to_numpy(y))


def _arrayish(value) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _whole_pair(data, inputs) -> bool:
    """A tuple ``(x, y)`` of whole arrays (as ``model.fit(x, y)`` takes), not the inputs of a multi-input model."""
    x = data[0]
    if len(inputs) > 1:
        if len(data) == len(inputs) and all(_arrayish(d) for d in data):
            return False  # the inputs themselves
        return isinstance(x, (list, tuple, dict))
    return _arrayish(x)


def _split(x, y, size):
    flat = keras.tree.flatten(x)
    n = int(flat[0].shape[0])
    size = max(int(size), 1)
    return [(keras.tree.map_structure(lambda a: a[i:i + size], x), None if y is None else y[i:i + size])
            for i in range(0, n, size)]


def _unpack(batch, inputs, argument):
    if isinstance(batch, dict) or _arrayish(batch):
        return batch, None
    if isinstance(batch, (tuple, list)):
        if len(inputs) > 1 and len(batch) == len(inputs) and all(_arrayish(b) for b in batch):
            return list(batch), None  # the inputs of a multi-input model, no labels
        if len(batch) in (1, 2, 3):
            return batch[0], (batch[1] if len(batch) > 1 else None)
    raise InvalidEdit(
        f"Each batch of {argument}= is an array of inputs or a tuple (x, y) / (x, y, sample_weight). "
        f"Received: a batch of type {type(batch).__name__}"
    )


def _as_inputs(model, inputs, x, argument) -> list:
    if isinstance(x, dict):
        names = [layer.name for layer in _graph.input_layers(model)]
        missing = [n for n in names if n not in x]
        if missing:
            raise IncompatibleShape(
                f"{argument}= as a dict needs the model's input names {names}. Received: keys {sorted(x)}"
            )
        flat = [x[n] for n in names]
    else:
        flat = keras.tree.flatten(x)
    flat = [np.asarray(keras.ops.convert_to_numpy(a)) for a in flat]
    expected = [tuple(t.shape) for t in inputs]
    received = [a.shape for a in flat]
    if len(flat) != len(inputs) or any(
            len(r) != len(e) or any(d is not None and d != s for d, s in zip(e[1:], r[1:]))
            for r, e in zip(received, expected)):
        shown = expected[0] if len(expected) == 1 else expected
        got = received[0] if len(received) == 1 else received
        raise IncompatibleShape(
            f"{argument}= does not fit the model {model.name!r}: its input shape is {shown} (None: any size), a "
            f"batch of {argument} has shape {got}. Pass inputs shaped like the model's input (a batch axis first). "
            f"Received: {argument} with input shape {got}"
        )
    return [a.astype(keras.backend.standardize_dtype(t.dtype)) if a.dtype != t.dtype else a
            for a, t in zip(flat, inputs)]


# ----------------------------------------------------------------------------- statistics


class Stats:
    """Running statistics of many values (merged batch by batch, chunk by chunk: Chan et al.).

    mean, std, min and max are over the finite values; ``zeros`` and ``nonfinite`` are fractions
    of all values.
    """

    __slots__ = ("total", "count", "mean", "m2", "low", "high", "zeros", "nonfinite")

    def __init__(self):
        self.total = self.count = self.zeros = self.nonfinite = 0
        self.mean = self.m2 = 0.0
        self.low, self.high = np.inf, -np.inf

    def add(self, array) -> None:
        flat = np.asarray(array).reshape(-1)
        for start in range(0, flat.size, _CHUNK):
            self._add_chunk(flat[start:start + _CHUNK])

    def _add_chunk(self, chunk) -> None:
        values = chunk.astype("float64")
        self.total += values.size
        self.zeros += int(np.count_nonzero(values == 0))
        finite = np.isfinite(values)
        if not finite.all():
            self.nonfinite += int(values.size - np.count_nonzero(finite))
            values = values[finite]
        n = values.size
        if n == 0:
            return
        mean = float(values.mean())
        m2 = float(np.square(values - mean).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total
        self.low = min(self.low, float(values.min()))
        self.high = max(self.high, float(values.max()))

    def merge(self, other: "Stats") -> None:
        if other.count:
            total = self.count + other.count
            delta = other.mean - self.mean
            self.mean += delta * other.count / total
            self.m2 += other.m2 + delta * delta * self.count * other.count / total
            self.count = total
            self.low, self.high = min(self.low, other.low), max(self.high, other.high)
        self.total += other.total
        self.zeros += other.zeros
        self.nonfinite += other.nonfinite

    def as_dict(self) -> dict:
        nan = float("nan")
        return {"mean": self.mean if self.count else nan,
                "std": float(np.sqrt(self.m2 / self.count)) if self.count else nan,
                "min": self.low if self.count else nan, "max": self.high if self.count else nan,
                "zeros": self.zeros / self.total if self.total else nan,
                "nonfinite": self.nonfinite / self.total if self.total else nan}


# ----------------------------------------------------------------------------- the trace


class _Call:
    """One traced call: its outputs batch by batch (or only their statistics)."""

    __slots__ = ("path", "call", "type", "parts", "shapes", "stats", "_joined")

    def __init__(self, path, call, kind, n_outputs, stats_only):
        self.path, self.call, self.type = path, call, kind
        self.parts = None if stats_only else [[] for _ in range(n_outputs)]
        self.shapes = [None] * n_outputs
        self.stats = Stats() if stats_only else None
        self._joined = None

    def add(self, index, value) -> None:
        shape = tuple(int(d) for d in value.shape)
        seen = self.shapes[index]
        self.shapes[index] = shape if seen is None else ((seen[0] + shape[0],) + shape[1:] if shape else shape)
        if self.stats is not None:
            self.stats.add(value)
        else:
            self.parts[index].append(value)

    def outputs(self) -> list:
        if self._joined is None:
            self._joined = [p[0] if len(p) == 1 else np.concatenate(p, axis=0) for p in self.parts]
        return self._joined

    def summary(self) -> dict:
        if self.stats is None:
            self.stats = Stats()
            for value in self.outputs():
                self.stats.add(value)
        shape = self.shapes[0] if len(self.shapes) == 1 else tuple(self.shapes)
        return {"path": self.path, "call": self.call, "type": self.type, "shape": shape, **self.stats.as_dict()}


class Trace:
    """What :func:`kerasnb.trace` recorded: each traced call's outputs (or their statistics).

    ``trace[path]`` is the activation of the layer at ``path`` as numpy (its batches
    concatenated): one array for a layer called once with one output, else a list (one entry per
    call, each a list when the call gives several outputs). ``trace[(path, call)]`` is one call's.
    A layer's name alone works when only one traced path ends in it. Iterating gives the traced
    paths; ``len`` is their number; ``trace.to_frame()`` (pandas) and ``trace.rows()`` (dicts)
    give one row of statistics per traced call.

    Args:
        model_name: The traced model's name.
        calls: The traced calls, in the order rows are listed.
        stats_only: Whether only statistics were kept (then ``trace[path]`` refuses).
        batches: How many batches were traced.

    Examples:
        >>> inputs = keras.Input((3,), name="x")
        >>> model = keras.Model(inputs, keras.layers.ReLU(name="relu")(inputs))
        >>> t = kerasnb.trace(model, np.array([[-1.0, 0.0, 2.0]], "float32"))
        >>> t.paths, t["relu"].tolist()
        (['x', 'relu'], [[0.0, 0.0, 2.0]])
        >>> round(t.rows()[1]["zeros"], 3)
        0.667
    """

    def __init__(self, model_name: str, calls: list, stats_only: bool, batches: int):
        self.model_name = model_name
        self.stats_only = stats_only
        self.batches = batches
        self._calls = calls
        self._by_key = {(c.path, c.call): c for c in calls}
        self.paths = list(dict.fromkeys(c.path for c in calls))

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self):
        return iter(self.paths)

    def __contains__(self, key) -> bool:
        try:
            self._find(key)
        except LayerNotFound:
            return False
        return True

    def keys(self) -> list:
        """``(path, call)`` of every traced call, in the order the pass made them."""
        return [(c.path, c.call) for c in self._calls]

    def _path_of(self, name) -> str:
        if name in self.paths:
            return name
        ends = [p for p in self.paths if p.rsplit("/", 1)[-1] == name]
        if len(ends) == 1:
            return ends[0]
        from .errors import suggest

        hint = (f" It names {len(ends)} traced layers: {', '.join(map(repr, ends[:4]))}; give the whole path."
                if ends else suggest(str(name), self.paths))
        raise LayerNotFound(f"The trace of {self.model_name!r} holds no layer {name!r}.{hint} Traced: "
                            f"{', '.join(map(repr, self.paths[:10]))}{' ...' if len(self.paths) > 10 else ''}. "
                            f"Received: {name!r}")

    def _find(self, key) -> list:
        if isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], (int, np.integer)):
            path = self._path_of(key[0])
            found = self._by_key.get((path, int(key[1])))
            if found is None:
                calls = [c.call for c in self._calls if c.path == path]
                raise LayerNotFound(f"{path!r} was traced in call(s) {calls}, not call {key[1]}. Received: {key!r}")
            return [found]
        if not isinstance(key, str):
            raise InvalidEdit(f"A trace is read with a path ('conv', 'backbone/conv') or (path, call index). "
                              f"Received: {key!r} of type {type(key).__name__}")
        path = self._path_of(key)
        return sorted((c for c in self._calls if c.path == path), key=lambda c: c.call)

    def __getitem__(self, key):
        calls = self._find(key)
        if self.stats_only:
            raise InvalidEdit(f"This trace kept only statistics (stats_only=True), so it holds no activations. Read "
                              f"trace.to_frame(), or trace again without stats_only to keep them. Received: {key!r}")
        each = [c.outputs()[0] if len(c.shapes) == 1 else list(c.outputs()) for c in calls]
        return each[0] if len(each) == 1 else each

    def rows(self) -> list:
        """One dict per traced call: path, call, type, shape, mean, std, min, max, zeros, nonfinite."""
        return [c.summary() for c in self._calls]

    def by_path(self) -> dict:
        """``{path: statistics}`` with every call of a layer taken together (mean, std, min, max,
        zeros, nonfinite, as in :meth:`rows`), in the order the pass met the layers."""
        merged: dict = {}
        for c in self._calls:
            c.summary()  # makes its statistics when the activations were kept
            merged.setdefault(c.path, Stats()).merge(c.stats)
        return {path: stats.as_dict() for path, stats in merged.items()}

    def to_frame(self):
        """A pandas DataFrame of :meth:`rows`: one row per traced call.

        Columns: ``path``, ``call``, ``type``, ``shape`` (all batches), ``mean``, ``std``, ``min``,
        ``max`` (over the finite values), ``zeros`` (fraction of values exactly zero) and
        ``nonfinite`` (fraction of NaN or infinite values).
        """
        import pandas as pd

        return pd.DataFrame(self.rows(), columns=COLUMNS)

    def __repr__(self) -> str:
        kind = "statistics" if self.stats_only else "activations"
        return (f"<Trace of {self.model_name!r}: {len(self._calls)} call(s) of {len(self.paths)} layer(s), "
                f"{kind}, {self.batches} batch(es)>")

    def _repr_html_(self) -> str:
        e = html.escape
        rows = self.rows()
        shown = rows[:30]
        head = "".join(f"<th>{c}</th>" for c in COLUMNS)
        body = []
        for r in shown:
            cells = [e(r["path"]), str(r["call"]), e(r["type"]), e(str(r["shape"]))]
            cells += [f"{r[k]:.4g}" for k in ("mean", "std", "min", "max")]
            cells += [f"{r['zeros']:.1%}", f"{r['nonfinite']:.1%}"]
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        more = f"<p>... {len(rows) - len(shown)} more call(s): trace.to_frame() has all.</p>" if len(rows) > 30 else ""
        kind = "statistics only" if self.stats_only else "activations"
        return (f"<div><b>Trace of {e(self.model_name)}</b>: {len(rows)} call(s), {kind}, {self.batches} "
                f"batch(es)<table><tr>{head}</tr>{''.join(body)}</table>{more}</div>")


COLUMNS = ["path", "call", "type", "shape", "mean", "std", "min", "max", "zeros", "nonfinite"]


@surgery_errors_only
def trace(model, x, layers=None, *, stats_only=False, batch_size=None) -> Trace:
    """Every layer's activations on ``x`` (or those ``layers`` selects), from one pass per batch.

    The model runs in inference mode; each call of its graph (nested models' calls included, at
    any depth) is made once per batch on concrete tensors, and the outputs of the selected calls
    are kept as numpy. Eager calls add no call to a layer: the model is left exactly as it was.
    A layer called several times (a shared layer, or a layer inside a nested model called
    several times) is traced at each call, ``(path, call index)`` in the order the pass makes
    them; a block called with keyword tensors (a keras-hub block given ``padding_mask=``) is
    traced like any other call. Sub-layers a block calls inside its own ``call`` are not graph
    calls and are not traced: trace the block.

    Args:
        model: A built functional or Sequential model (nested models inside at any depth).
        x: The input: an array, a dict of arrays by input name, a list of arrays (a multi-input
            model's inputs), a tuple ``(x, y)`` (labels ignored), or an iterable of batches (a
            list of arrays, a generator, a ``tf.data.Dataset``, a ``keras.utils.PyDataset``).
        layers: Which layers, as every ``match=`` takes it: a class, a name or path
            (``"backbone/conv3"``), a glob, a compiled regex, a predicate ``(path, layer)``, a
            layer object, or a list of these; ``("name", call_index)`` for one call of a shared
            layer. None (the default): every layer with an output, input layers included.
        stats_only: Keep only running statistics (mean, std, min, max, zeros, non-finite), not
            the activations, so a large model on many batches holds one batch's values at a time.
        batch_size: When ``x`` is one array (or a dict / list of arrays), the size of the batches
            it is cut into (default 32). Batches of an iterable are taken as they come.

    Returns:
        Trace: ``trace[path]``, ``trace[(path, call)]``, ``trace.to_frame()``, ``trace.paths``.

    Raises:
        LayerNotFound: ``layers`` names no layer, or selects no layer with an output.
        InvalidEdit: ``layers`` or ``x`` of a kind not listed above; the model fails on ``x``.
        IncompatibleShape: a batch of ``x`` does not fit the model's inputs.
        UnsupportedModel: a subclassed model without a functional graph.

    Examples:
        >>> inner = keras.Sequential([keras.Input((4,), name="features"), keras.layers.Dense(3, name="conv3")],
        ...                          name="backbone")
        >>> inputs = keras.Input((4,), name="x")
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="head")(inner(inputs)))
        >>> t = kerasnb.trace(model, np.ones((5, 4), "float32"))
        >>> t.paths
        ['x', 'backbone', 'backbone/features', 'backbone/conv3', 'head']
        >>> t["backbone/conv3"].shape
        (5, 3)
        >>> kerasnb.trace(model, np.ones((5, 4), "float32"), layers="conv3", stats_only=True).to_frame().shape
        (1, 10)
    """
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                   or batch_size < 1):
        raise InvalidEdit(f"batch_size is a whole number of examples per pass, at least 1, or None. "
                          f"Received: batch_size={batch_size!r}")
    with _graph.memo():
        paths, restrict = _wanted(model, layers)
        recorder = _Recorder(model, paths, restrict, bool(stats_only))
        n = 0
        for xs, _ in batches(model, x, argument="x", batch_size=batch_size):
            recorder.run(xs, "trace()")
            n += 1
    if n == 0:
        raise InvalidEdit(f"trace() needs examples, and x yielded none. Received: an empty {type(x).__name__}")
    missing = [p for p in paths if not any(key[0] == p for key in recorder.order)]
    if missing and layers is not None:
        raise InvalidEdit(
            f"{', '.join(map(repr, missing[:5]))} gave no output in the pass: each sits inside a nested model called "
            "with keyword tensors (a mask), which runs as one call, so its layers' outputs are not seen. Trace the "
            f"nested model's call as a whole, or trace the nested model itself. Received: layers={layers!r}")
    where = {path: i for i, path in enumerate(paths)}  # the report's order: a nested model before its layers
    calls = sorted(recorder.calls(), key=lambda c: (where[c.path], c.call))
    return Trace(model.name, calls, bool(stats_only), n)


class _Recorder:
    """Runs batches through the model and keeps the selected calls' outputs, in the pass's order."""

    def __init__(self, model, paths, restrict, stats_only):
        self.model = model
        self.wanted = set(paths)
        self.restrict = restrict
        self.stats_only = stats_only
        self.prefixes = {p[:i + 1] for p in paths for i, c in enumerate(p) if c == "/"}
        self.order: list = []  # (path, call) in the first pass's order
        self.found: dict = {}

    def run(self, xs, what: str) -> list:
        visits: dict = {}  # (path, id(node)) -> how often the pass made that call (a nested model called again)
        current: dict = {}  # (path, id(node)) -> the call index of the outputs being recorded

        def on_output(path, view, index, tensor, value):
            if path not in self.wanted:
                return value
            marker = (path, id(view.node) if view is not None else None)
            if index == 0:  # a call's outputs come one by one; its index is worked out at the first
                seen = visits.get(marker, 0)
                visits[marker] = seen + 1
                # Keras's own call order (what a (name, call_index) target names), repeated per call of
                # the nested model around it
                current[marker] = seen * view.n_calls + view.call_index if view is not None else seen
            call = current[marker]
            allowed = self.restrict.get(path)
            if allowed is not None and call not in allowed:
                return value
            record = self.found.get((path, call))
            if record is None:
                op = view.operation if view is not None else None
                kind = type(op).__name__ if op is not None else "InputLayer"
                n_outputs = len(view.outputs) if view is not None else 1
                record = self.found[(path, call)] = _Call(path, call, kind, n_outputs, self.stats_only)
                self.order.append((path, call))
            record.add(index, _to_numpy(value, copy=view is None))
            return value

        tensors = [keras.ops.convert_to_tensor(x) for x in xs]
        try:
            return replay(self.model, tensors, on_output, descend=lambda prefix, op: prefix in self.prefixes)
        except Exception as error:
            from .errors import SurgeryError, first_line

            if isinstance(error, SurgeryError):
                raise
            shapes = [tuple(a.shape) for a in xs]
            raise InvalidEdit(
                f"Model {self.model.name!r} cannot run on the input given to {what}: {type(error).__name__}: "
                f"{first_line(error)} It takes {[tuple(t.shape) for t in _graph.input_tensors(self.model)]}. "
                f"Received: arrays of shape {shapes}"
            ) from None

    def calls(self) -> list:
        return [self.found[k] for k in self.order]


def every_output(model, xs, what: str) -> dict:
    """``{path: [numpy output of each call, in call order (each output of a call in turn)]}`` for every
    layer of ``model`` (nested ones at any depth) on the flat inputs ``xs``: one pass. ``what`` names the
    caller in the message when the model cannot run on them (``"compare()"``)."""
    recorder = _Recorder(model, [p for p, _ in traceable(model)], {}, stats_only=False)
    with _graph.memo():
        recorder.run(xs, what)
    out: dict = {}
    for call in sorted(recorder.calls(), key=lambda c: c.call):  # stable: paths keep the pass's order
        out.setdefault(call.path, []).extend(call.outputs())
    return out


def _to_numpy(value, copy: bool = False):
    """A read-only numpy view of a backend tensor, without a copy where the backend allows it (TensorFlow's
    ``numpy()`` copies, ``numpy.asarray`` shares the buffer; so does JAX's on the CPU)."""
    if isinstance(value, np.ndarray):
        array = value
    elif keras.backend.backend() in ("tensorflow", "jax", "numpy"):
        array = np.asarray(value)
    else:
        array = np.asarray(keras.ops.convert_to_numpy(value))
    if copy:
        array = array.copy()
    array.flags.writeable = False
    return array
