"""The editor panel: ``kerasnb.show_editor(model)``. The panel imports ipywidgets; the core never does.

The widget-free state, :class:`Session` (with its answers, :mod:`kerasnb.editor.answers`), loads without ipywidgets (``kerasnb.editor.session``):
the panel and its widgets are imported only when ``Editor`` or ``show_editor`` is asked for.
"""

from .session import Session, Step
from .answers import Comparison, LikeInfo, LoraInfo, ModelActions, PruneInfo, RowActions

__all__ = ["Comparison", "Editor", "LikeInfo", "LoraInfo", "ModelActions", "PruneInfo", "RowActions", "Session", "Step",
           "show_editor"]


def __getattr__(name):
    if name in ("Editor", "show_editor"):
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.panel"), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
