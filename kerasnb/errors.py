"""Errors raised by kerasnb. Every message names what was received and what would work."""

from __future__ import annotations

import difflib


class SurgeryError(ValueError):
    """The base class of every error kerasnb raises: catch it to catch them all.

    A ``ValueError``. Its message names what was received and what would work. When an
    operation raises, nothing was half-applied and the model passed in is unchanged.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> try:
        ...     kerasnb.delete(model, "hiden")
        ... except kerasnb.SurgeryError as error:
        ...     print(type(error).__name__, "-", error)
        LayerNotFound - No layer named 'hiden' in model ...Did you mean 'hidden'?...
    """


class LayerNotFound(SurgeryError, KeyError):
    """A target names no layer of the model; the message suggests the closest names.

    Raised by every operation that takes a target or ``match=``, and by ``WeightReport.row``.
    Also a ``KeyError``.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> kerasnb.replace(model, "hiden", keras.layers.Dense(4))
        Traceback (most recent call last):
        ...
        kerasnb.errors.LayerNotFound: No layer named 'hiden' in model ...Did you mean 'hidden'?...
    """

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class AmbiguousTarget(SurgeryError):
    """A layer the graph calls several times was named without saying which call is meant.

    Raised by ``replace``, ``insert`` and ``delete`` (which act on one call): name the call as
    ``("name", call_index)``; the message lists the choices.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> shared = keras.layers.Dense(8, name="shared")
        >>> model = keras.Model(inputs, shared(shared(inputs)))
        >>> kerasnb.delete(model, "shared")
        Traceback (most recent call last):
        ...
        kerasnb.errors.AmbiguousTarget: Layer 'shared' is shared: it is called 2 times ... ('shared', 0), ('shared', 1)...
        >>> kerasnb.delete(model, ("shared", 1)).report.status("shared")
        'kept'
    """


class InvalidEdit(SurgeryError):
    """The edit cannot be expressed on this graph, or its arguments are wrong.

    E.g. deleting a layer with several inputs none of which passes on, ``insert`` without
    ``after=`` or ``before=``, a fraction out of range. Subclasses: ``InputLayerEdit``,
    ``UnprunableLayer``, ``UnwidenableLayer``, ``BudgetNotReachable``, ``InvalidParameter``.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> kerasnb.insert(model, keras.layers.Dropout(0.5))
        Traceback (most recent call last):
        ...
        kerasnb.errors.InvalidEdit: Insert needs exactly one of after= or before=. Received: after=None, before=None
    """


class InputLayerEdit(InvalidEdit):
    """An edit would replace, delete or reconfigure an InputLayer, or insert before one.

    Insert after it instead, or give the input a new shape with ``kerasnb.change_input``.
    An ``InvalidEdit``.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> kerasnb.delete(model, "x")
        Traceback (most recent call last):
        ...
        kerasnb.errors.InputLayerEdit: 'x' is an InputLayer: it can't be replaced, deleted or reconfigured...
    """


class IncompatibleShape(SurgeryError):
    """After the edit, some layer cannot take the tensor it now receives.

    A layer with weights that no longer fit is re-initialised instead (and reported so); this
    is raised where that cannot help: a layer without weights (an ``Add`` of two shapes, a
    ``Reshape``), a replacement with another number of outputs, a callable replacement that
    fails on its input. Subclass: ``DoesNotFit``.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> a = keras.layers.Dense(4, name="a")(inputs)
        >>> b = keras.layers.Dense(4, name="b")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Add(name="add")([a, b]))
        >>> kerasnb.replace(model, "a", keras.layers.Dense(3))
        Traceback (most recent call last):
        ...
        kerasnb.errors.IncompatibleShape: After the edit, 'add' (Add) cannot take its new input...
    """


class NameClash(SurgeryError):
    """An edit would give two layers of one model the same name.

    Raised by ``configure(..., name=...)`` (the message proposes a free name) and by callable
    replacements whose own layers bring names the model already has. A layer given directly
    to ``insert`` or ``replace`` is renamed instead (``"hidden_1"``).

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> kerasnb.configure(model, "out", name="hidden")
        Traceback (most recent call last):
        ...
        kerasnb.errors.NameClash: Cannot rename 'out' to 'hidden': model ... already has a layer named 'hidden'...
    """


class UnsupportedModel(SurgeryError):
    """The model is not one kerasnb can rebuild: subclassed (no graph), or never built.

    kerasnb edits functional and Sequential models (and keras-hub backbones and tasks), whose
    graph it can read. Subclass: ``UnbuiltModel``.

    Examples:
        >>> class Subclassed(keras.Model):
        ...     def call(self, x):
        ...         return x
        >>> model = Subclassed()
        >>> _ = model(np.ones((1, 2)))  # built, but still without a graph
        >>> kerasnb.describe(model)
        Traceback (most recent call last):
        ...
        kerasnb.errors.UnsupportedModel: ...
    """


class UnbuiltModel(UnsupportedModel):
    """The model has no graph yet because it was never built: build or call it once first.

    An ``UnsupportedModel``.

    Examples:
        >>> model = keras.Sequential([keras.layers.Dense(2, name="out")])
        >>> kerasnb.delete(model, "out")
        Traceback (most recent call last):
        ...
        kerasnb.errors.UnbuiltModel: ...
    """


class UnsupportedLayer(SurgeryError):
    """A layer kerasnb must make again cannot be made faithfully, so the edit is refused.

    E.g. an unregistered custom layer whose config does not recreate it, a layer whose
    variables a transform cannot carry (``prune_heads`` on LoRA factors), a config value
    ``kerasnb.codegen.code`` cannot write as a literal. The message says what would work.

    Examples:
        >>> inputs = keras.Input((4, 8), name="x")
        >>> mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=2, name="mha")
        >>> model = keras.Model(inputs, mha(inputs, inputs))
        >>> with_lora = kerasnb.enable_lora(model, "mha/query", rank=2).model
        >>> kerasnb.prune_heads(with_lora, "mha", heads=[0])
        Traceback (most recent call last):
        ...
        kerasnb.errors.UnsupportedLayer: MultiHeadAttention 'mha' has variables other than its projections'...
    """


class UnprunableLayer(InvalidEdit):
    """The target's channels reach a layer that cannot be sliced safely, or a model output.

    Raised by ``prune``, ``importance`` and ``prune_global(per_layer=...)``; a model output can
    narrow with ``prune(..., allow_output_change=True)``. An ``InvalidEdit``; subclass:
    ``CoupledChannels``.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> kerasnb.prune(model, "out", keep=0.5)
        Traceback (most recent call last):
        ...
        kerasnb.errors.UnprunableLayer: Cannot prune 'out': its channels reach the model output...
    """


class CoupledChannels(UnprunableLayer):
    """The target's channels are coupled to other producers (by Add, ...) and ``coupled=False`` was asked.

    With ``coupled=True`` (the default) ``prune`` removes the channels in every producer of
    the group. An ``UnprunableLayer``.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> a = keras.layers.Dense(4, name="a")(inputs)
        >>> b = keras.layers.Dense(4, name="b")(inputs)
        >>> added = keras.layers.Add(name="add")([a, b])
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(added))
        >>> kerasnb.prune(model, "a", keep=0.5, coupled=False)
        Traceback (most recent call last):
        ...
        kerasnb.errors.CoupledChannels: ...
        >>> result = kerasnb.prune(model, "a", keep=0.5)
        >>> result.report.status("a"), result.report.status("b")
        ('pruned', 'pruned')
    """


class UnwidenableLayer(InvalidEdit):
    """``widen`` cannot widen the target and keep what the model computes.

    Its channels reach a layer the copied channels would change (LayerNormalization over them,
    an attention layer, a grouped convolution, a sum over them ...), a model output without
    ``widen(..., allow_output_change=True)``, or the target makes no channels of its own. The
    message names the layer in the way and what would work. An ``InvalidEdit``.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> kerasnb.widen(model, "out", units=3)
        Traceback (most recent call last):
        ...
        kerasnb.errors.UnwidenableLayer: Cannot widen 'out': its channels reach the model output...
    """


class InternalError(SurgeryError):
    """A bug of kerasnb, caught before it returned a model that silently differs.

    Every public function turns an unexpected exception into this (the original chained as its
    cause, where it was raised in the message), so callers catch ``SurgeryError`` only. It is
    never about the user's input: please report it with the model's type. The model passed in
    is unchanged.

    Examples:
        >>> issubclass(kerasnb.InternalError, kerasnb.SurgeryError)
        True
    """


class Conflict(SurgeryError):
    """Two edits of one batch touch the same call; ``apply`` then starts a new rebuild for the second.

    Internal to ``kerasnb.apply``: it is caught there, and users do not see it.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> result = kerasnb.apply(model, [kerasnb.Configure("out", {"units": 3}),
        ...                                kerasnb.Configure("out", {"activation": "relu"})])
        >>> result.model.get_layer("out").units
        3
    """


class BudgetNotReachable(InvalidEdit):
    """The budget of ``prune_global`` asks for less than pruning can reach (every group at its minimum).

    The message gives the smallest reachable. An ``InvalidEdit``.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> kerasnb.prune_global(model, params=5)
        Traceback (most recent call last):
        ...
        kerasnb.errors.BudgetNotReachable: params=5 asks for at most 5 parameters, but the smallest reachable is ...
    """


class UnknownShape(SurgeryError):
    """A size that a layer's MACs depend on is unknown (None) and no ``input_shape`` fixes it.

    Raised by ``count_macs`` and ``prune_global(macs=...)``: give the shape of one sample,
    ``input_shape=(224, 224, 3)``.

    Examples:
        >>> inputs = keras.Input((None, None, 3), name="image")
        >>> model = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="conv")(inputs))
        >>> kerasnb.count_macs(model)
        Traceback (most recent call last):
        ...
        kerasnb.errors.UnknownShape: ...
        >>> kerasnb.count_macs(model, input_shape=(8, 8, 3)).attrs["total"]
        3888
    """


class DoesNotFit(IncompatibleShape):
    """A replacement cannot take the shape it would receive, or gives one that cannot flow on.

    Raised where the editor and ``kerasnb.fitting`` check a replacement type before building
    it. An ``IncompatibleShape``.

    Args:
        message: The whole message: what was received and what would work.
        reason: The short form (what a dropdown's tooltip shows); default ``message``.

    Examples:
        >>> from kerasnb.fitting import output_shape_of
        >>> output_shape_of(keras.layers.Conv2D(4, 3), (None, 8))
        Traceback (most recent call last):
        ...
        kerasnb.errors.DoesNotFit: ...
    """

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


class UnknownType(SurgeryError, KeyError):
    """No replacement type of ``kerasnb.catalog`` has that label; the message lists the labels there are.

    Also a ``KeyError``.

    Examples:
        >>> kerasnb.catalog.get("Dropot")
        Traceback (most recent call last):
        ...
        kerasnb.errors.UnknownType: No replacement type 'Dropot'. Did you mean 'Dropout'?...
    """

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class InvalidParameter(InvalidEdit):
    """A parameter of a replacement type is unknown, of the wrong kind or out of its range.

    Checked before anything is built; the message gives what the parameters take. An
    ``InvalidEdit``.

    Examples:
        >>> kerasnb.catalog.get("Dropout").make(None, (None, 8), rate=1.5)
        Traceback (most recent call last):
        ...
        kerasnb.errors.InvalidParameter: Dropout's rate must be a number with 0 <= rate < 1. Received: rate=1.5
    """


class InvalidRegistration(SurgeryError):
    """A replacement type cannot be registered as asked (no label, a reserved one, bad params...).

    Raised by ``kerasnb.register_replacement``.

    Examples:
        >>> kerasnb.register_replacement("Keep")
        Traceback (most recent call last):
        ...
        kerasnb.errors.InvalidRegistration: 'Keep' is reserved for leaving the layer as it is; pick another label...
    """


class SaveFailed(SurgeryError):
    """The editor could not save the edited model where asked (wrong extension, missing folder, ...).

    Raised by ``Editor.save``; the message says what would work.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> editor = kerasnb.show_editor(model)
        >>> editor.save("edited.h5")
        Traceback (most recent call last):
        ...
        kerasnb.errors.SaveFailed: Keras saves whole models to files ending in .keras, e.g. edited.keras...
        >>> editor.close()
    """


class UnsaveablePatch(SaveFailed):
    """A model patched with a Python function (``kerasnb.patch(model, {target: fn})``) cannot be saved.

    A function is Python code, which a ``.keras`` file does not hold. The message says what saves:
    an array patch, or the model without the patch.

    Examples:
        >>> inputs = keras.Input((3,), name="x")
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(inputs))
        >>> patched = kerasnb.patch(model, {"out": lambda h: h * 0}).model
        >>> patched.save("patched.keras")
        Traceback (most recent call last):
        ...
        kerasnb.errors.UnsaveablePatch: The patch 'out_patch' replaces the output of 'out' with a Python function...
    """


def surgery_errors_only(function):
    """Decorate a public function so that whatever escapes it is a :class:`SurgeryError`.

    A SurgeryError passes as it is. Any other exception (not KeyboardInterrupt) means kerasnb met
    something in the model it does not handle: it becomes an :class:`InternalError` that names the
    function, the exception and where it was raised, with the original chained as its cause.
    Nothing was returned, so nothing is half-applied, and the model passed in is unchanged. Arguments
    the function does not take (a missing one, an unknown or renamed keyword) are the caller's
    mistake, not kerasnb's: an :class:`InvalidEdit` that gives the function's signature.
    """
    import functools

    @functools.wraps(function)
    def public(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except SurgeryError:
            raise
        except Exception as error:
            if isinstance(error, TypeError) and not _binds(function, args, kwargs):  # the call itself is wrong
                raise InvalidEdit(_bad_call(function, args, kwargs, error)) from None
            raise InternalError(
                f"kerasnb.{function.__name__} failed on something it does not handle: {type(error).__name__}: "
                f"{first_line(error, 300)}{_raised_at(error)}. The model you passed in is unchanged. Please report "
                "it with the model's type; an edit of other layers, or of the whole block, may work meanwhile."
            ) from error

    return public


# Arguments renamed when the API took one vocabulary (a fraction is the part kept; MACs are MACs).
RENAMED = {
    "ratio": "keep= (the fraction of the channels kept: keep=1 - ratio)",
    "flops": "macs= (multiply-accumulates per sample after, at most: a count, or the fraction kept)",
}


def _binds(function, args, kwargs) -> bool:
    import inspect

    try:
        inspect.signature(function).bind(*args, **kwargs)
    except TypeError:
        return False
    return True


def _bad_call(function, args, kwargs, error) -> str:
    """Python's complaint about the arguments, with what the function takes (and a renamed argument's new name)."""
    import inspect

    name = function.__name__
    hints = [f"{old}= is now {new}" for old, new in RENAMED.items() if old in kwargs]
    given = ", ".join([f"{type(a).__name__}" for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])
    return (f"kerasnb.{name}() cannot take these arguments: {first_line(error)}. It takes {name}"
            f"{inspect.signature(function)}.{' ' + '; '.join(hints) + '.' if hints else ''} "
            f"Received: {name}({given})")


def _raised_at(error: Exception) -> str:
    import traceback

    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f" (raised in {last.filename.rsplit('/', 1)[-1]}, line {last.lineno}, {last.name})"


def first_line(error: Exception, limit: int | None = None) -> str:
    """The reason an exception gives, in one line, for our own messages.

    Keras's deserialisation errors start with the whole config ("Error when deserializing class
    'Dense' using config={...}") and give the reason after "Exception encountered:"; the reason
    is kept, the config dump is dropped.
    """
    text = str(error).strip()
    marker = "Exception encountered:"
    if marker in text:
        text = text.rsplit(marker, 1)[1].strip()
    # The first paragraph, its wrapped lines joined: some messages break lines mid-sentence.
    paragraph = text.split("\n\n", 1)[0] if text else ""
    line = " ".join(part.strip() for part in paragraph.splitlines() if part.strip()) or type(error).__name__
    if line.startswith("Error when deserializing class") and " using config=" in line:
        line = line.split(" using config=", 1)[0]
    return line[:limit] if limit else line


def suggest(name: str, candidates) -> str:
    """' Did you mean ...?' for the closest candidate names, or ''."""
    close = difflib.get_close_matches(str(name), list(candidates), n=3, cutoff=0.5)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


class QuantizationRefused(InvalidEdit):
    """``kerasnb.quantize`` was asked for something Keras's quantization cannot do.

    A layer named explicitly that Keras cannot quantize in that mode (a Conv2D, a subclass of
    Dense, an Embedding in float8, a layer already quantized, a layer with LoRA), an unknown
    mode, or GPTQ / AWQ. The message names what was received and what works. An ``InvalidEdit``.

    Examples:
        >>> inputs = keras.Input((8, 8, 3), name="image")
        >>> model = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="conv")(inputs))
        >>> kerasnb.quantize(model, "int8", match="conv")
        Traceback (most recent call last):
        ...
        kerasnb.errors.QuantizationRefused: 'conv' cannot be quantized: it is a Conv2D: Keras quantizes only ...
    """
