"""The state of one rebuild: what it made, and a record of where each new layer comes from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import _graph
from .report import Status


@dataclass
class Record:
    """What one pass did to one layer of the new model."""

    prev_path: str | None
    status: Status | None  # what its weight rule did (None until a Transform's rule has run)
    reason: str = ""
    faithful: bool = True  # computes the same as prev_path did, on the same inputs
    config_changed: str = ""
    note: str = ""  # words for a kept layer (e.g. "LoRA rank 8")
    inner: tuple = ()  # for a rebuilt nested model: its layers' new ids

class Pass:
    """State of one rebuild of ``model`` (None for the copy of a block model a user brings in)."""

    def __init__(self, model=None, overrides=None):
        self.records: dict[int, Record] = {}  # id(new layer) -> record
        self.layers: dict[int, Any] = {}  # id(new layer) -> new layer (keeps ids alive)
        self.copies: list = []  # (old layer, new layer) whose weights are copied if they fit
        self.clones: dict[int, Any] = {}  # id(old op) -> its one new op in this pass
        # every layer of the model being edited, nested ones too: a callable must not call them
        walked = list(_graph.walk_layers(model)) if model is not None else []
        self.source_layers: list = [layer for _, layer in walked]
        self.old_paths: dict[int, str] = {id(layer): path for path, layer in walked}  # one path per layer
        self.pretrained: list = []  # (user layer, new layer, edit) brought in with their own weights
        # id(new layer) -> (the layer its trainable flags come from, the flag an edit sets or None)
        self.sources: dict[int, tuple] = {}
        self.slices: list = []  # (old layer, new layer, (kept input indices, kept output indices))
        self.ruled: list = []  # (old layer, new layer, a Transform's weight rule)
        self.notes: list[str] = []
        self.outputs_faithful: dict[int, bool] = {}  # id(new nested model) -> its outputs unchanged
        # Untouched layers: id(old layer) -> the graph model holding it, and whether every call of
        # it saw inputs of the shapes it saw before (then its variables must come out the same).
        self.untouched: dict[int, Any] = {}
        self.same_input_shapes: dict[int, bool] = {}
        # id(old layer) -> (route, a function making its new layer) for layers whose own config
        # does not round-trip (see _faithful_twins)
        self.overrides: dict[int, Any] = overrides or {}
        # Every variable once, with its ties (see _invariants): (old owner, new owner, new sub-layer
        # called as a node), and id(old variable) -> new variable of layers tracked but never called.
        self.shared_sublayers: list = []
        self.carried: dict[int, Any] = {}
        self.accounted: set[int] = set()  # ids of old variables a note or a removed row accounts for

    def record(self, layer, rec: Record):
        self.records[id(layer)] = rec
        self.layers[id(layer)] = layer
