"""Errors raised by kerasnb. Every message names what was received and what would work."""

from __future__ import annotations

import difflib


class SurgeryError(ValueError):
    """Base class of every error kerasnb raises for bad input."""


class LayerNotFound(SurgeryError, KeyError):
    """A target names no layer of the model."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class AmbiguousTarget(SurgeryError):
    """A shared layer was named without saying which of its calls is meant."""


class InvalidEdit(SurgeryError):
    """The edit cannot be expressed on this graph (e.g. deleting a layer with several inputs)."""


class InputLayerEdit(InvalidEdit):
    """An edit that would replace, delete or reconfigure an InputLayer."""


class IncompatibleShape(SurgeryError):
    """After the edit, some layer cannot take the tensor it now receives."""


class NameClash(SurgeryError):
    """A rename would give two layers the same name."""


class UnsupportedModel(SurgeryError):
    """The model is not one kerasnb can rebuild (unbuilt, or subclassed without a graph)."""


class UnbuiltModel(UnsupportedModel):
    """The model has no graph yet because it was never built."""


class UnsupportedLayer(SurgeryError):
    """A layer cannot be recreated from its config (e.g. an unregistered custom layer)."""


class UnprunableLayer(InvalidEdit):
    """The target's channels reach a layer that cannot be sliced safely, or the model output."""


class CoupledChannels(UnprunableLayer):
    """The target is coupled to other producers (by Add, ...) and ``coupled=False`` was asked."""


class InternalError(SurgeryError):
    """A bug of kerasnb caught before it returned a model that silently differs (never the user's input)."""


class Conflict(SurgeryError):
    """Two edits of one batch touch the same call; the second starts a new rebuild."""


class BudgetNotReachable(InvalidEdit):
    """The budget of :func:`kerasnb.prune_global` asks for less than pruning can reach (every group at its minimum)."""


class UnknownShape(SurgeryError):
    """A size that a layer's MACs depend on is unknown (None) and no ``input_shape`` fixes it."""


class DoesNotFit(IncompatibleShape):
    """A replacement cannot take the shape it would receive, or gives one that cannot flow on.

    ``reason`` is the short form (what a dropdown's tooltip shows); the message adds what was
    received and what would work.
    """

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


class UnknownType(SurgeryError, KeyError):
    """No replacement type of :mod:`kerasnb.catalog` has that label; the message lists the labels there are."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class InvalidParameter(InvalidEdit):
    """A parameter of a replacement type is unknown, of the wrong kind or out of its range."""


class InvalidRegistration(SurgeryError):
    """A replacement type cannot be registered as asked (no label, a reserved one, bad params...)."""


class SaveFailed(SurgeryError):
    """The edited model could not be written where asked (wrong extension, missing folder, ...)."""


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
