"""Lineage: where each layer of the current model comes from, relative to the model passed in.

``apply`` may rebuild more than once (an edit that names a layer an earlier edit made waits
for the rebuild that makes it); lineage is carried from one rebuild to the next, so the report
always compares with the user's model. Facts only: :mod:`kerasnb.report` turns them into
statuses.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import _graph
from .report import Status

# What a weight rule did that the layer keeps through later rebuilds (a copy keeps the earlier status).
_CHANGED_WEIGHTS = (Status.PRUNED, Status.ADAPTED, Status.FOLDED, Status.QUANTIZED)


@dataclass
class Lineage:
    """Where a layer of the current model comes from, relative to the original model."""

    original: str | None
    status: Status = Status.KEPT  # what the weight rules did so far (kept: its weights came through)
    reason: str = ""
    faithful: bool = True
    config_changed: str = ""
    note: str = ""  # said of a kept layer (e.g. "LoRA rank 8")


def compose(new_model, state, lineage: dict) -> dict:
    """Lineage of every layer of ``new_model`` relative to the original model."""
    out = {}
    for path, layer in _graph.walk_layers(new_model):
        rec = state.records.get(id(layer))
        if rec is None:  # made inside a user's callable
            out[path] = Lineage(None, Status.NEW, "added by a callable replacement", False)
            continue
        prev = lineage.get(rec.prev_path) if rec.prev_path is not None else None
        if prev is None or prev.original is None:
            reason = rec.reason or (prev.reason if prev else "")
            out[path] = Lineage(None, Status.NEW, reason, False)
            continue
        if rec.status == Status.REINITIALIZED:
            status, reason = rec.status, rec.reason
        elif rec.status in _CHANGED_WEIGHTS and prev.status != Status.REINITIALIZED:
            # The latest rule gives the status; the reasons of earlier rebuilds stay in the words.
            status = rec.status
            reason = rec.reason if prev.status == Status.KEPT else f"{prev.reason}; then {rec.reason}"
        else:
            status, reason = prev.status, prev.reason
        config_changed = "; ".join(s for s in (prev.config_changed, rec.config_changed) if s)
        note = "; ".join(s for s in (prev.note, rec.note) if s)
        out[path] = Lineage(prev.original, status, reason, prev.faithful and rec.faithful, config_changed, note)
    return out


def initial(model) -> dict:
    """Every layer of the user's model, as it stands before any edit."""
    return {path: Lineage(path) for path, _ in _graph.walk_layers(model)}
