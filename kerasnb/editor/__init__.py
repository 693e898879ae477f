"""The editor panel: ``kerasnb.show_editor(model)``. Imports ipywidgets; the core never imports this."""

from .panel import Editor, show_editor
from .session import Session, Step

__all__ = ["Editor", "Session", "Step", "show_editor"]
