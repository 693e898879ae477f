"""kerasnb: model surgery for Keras 3, in a Jupyter notebook.

Every operation returns a :class:`SurgeryResult` (a new model plus a weight report); the model
passed in is never changed. The editor panel (``show_editor``) is imported only when used, so
``import kerasnb`` loads neither ipywidgets, pandas nor matplotlib.
"""

from .edits import Configure, Delete, Insert, Replace, SetTrainable
from .errors import (
    AmbiguousTarget,
    IncompatibleShape,
    InputLayerEdit,
    InvalidEdit,
    LayerNotFound,
    NameClash,
    SurgeryError,
    UnbuiltModel,
    UnsupportedLayer,
    UnsupportedModel,
)
from .report import STATUSES, LayerRow, WeightReport
from .surgery import (
    SurgeryResult,
    apply,
    configure,
    delete,
    insert,
    replace,
    set_trainable,
)
from ._graph import LayerInfo, describe

__version__ = "0.1.0"

__all__ = [
    "AmbiguousTarget", "Configure", "Delete", "IncompatibleShape", "Insert", "InputLayerEdit",
    "InvalidEdit", "LayerInfo", "LayerNotFound", "LayerRow", "NameClash", "Replace", "STATUSES",
    "SetTrainable", "SurgeryError", "SurgeryResult", "UnbuiltModel", "UnsupportedLayer",
    "UnsupportedModel", "WeightReport", "apply", "catalog", "configure", "delete", "describe",
    "insert", "register_replacement", "replace", "set_trainable", "show_editor", "Editor",
]


def __getattr__(name):
    # The panel and the catalog pull in ipywidgets-free but larger modules only when asked for.
    if name in ("show_editor", "Editor"):
        from . import editor

        return getattr(editor, name)
    if name == "catalog":
        from . import catalog

        return catalog
    if name == "register_replacement":
        from .catalog import register_replacement

        return register_replacement
    if name in ("prune", "channel_groups"):
        from . import prune

        return getattr(prune, name)
    raise AttributeError(f"module 'kerasnb' has no attribute {name!r}")
