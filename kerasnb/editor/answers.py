"""The answers the editor panel asks of a session, as plain data: what a row offers and refuses
(:meth:`Answers.row_actions`), what the whole-model actions can do (:meth:`Answers.model_actions`),
pruning and LoRA on a row, previews of a prune, and a probe batch's comparison.

Every answer is read from the session's current steps and model; nothing here changes them.
``session.answers`` is the :class:`Answers` of a :class:`~kerasnb.editor.session.Session`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import kerasnb.actions as actions  # the editor's one internal facade
import kerasnb.catalog as catalog  # not "from .. import catalog": kerasnb.__getattr__ recurses on it
import kerasnb.fitting as fitting
from .. import activations, blocks_growth, lora
from ..edits import Delete, Replace, Transform, Truncate
from ..errors import IncompatibleShape, InvalidEdit, LayerNotFound, first_line, suggest
from .steps import _entry_or_none, _key_in, _under, key_text, path_of

INPUT_STAYS = "input layers stay; insert after them instead"
SWAP_TO = ("relu", "relu6", "gelu", "silu", "tanh", "sigmoid", "elu", "selu", "softplus", "leaky_relu", "linear")
LORA_PROJECTIONS = lora.PROJECTIONS


@dataclass(frozen=True)
class Param:
    """One parameter of the type a row has: what its control shows."""

    name: str
    value: Any
    choices: tuple | None = None  # the allowed values (a dropdown), the current one first if not among them


@dataclass(frozen=True)
class PruneInfo:
    """Whether a row's layer is pruned or can be, and the model's parameter counts around it."""

    keep: float | None  # the fraction its prune step keeps; None when it is not pruned
    reason: str  # why it cannot be pruned; "" when it can (or is)
    before: int  # model parameters before the prune step (the current model's when not pruned)
    after: int  # ... and after it (the same as before when not pruned)
    macs_before: int | None = field(default=None, compare=False)  # multiply-accumulates per sample, likewise
    macs_after: int | None = field(default=None, compare=False)  # (None: not worked out, or sizes unknown)
    by: str = field(default="l1", compare=False)  # the criterion its prune step ranks channels by

    @property
    def can_prune(self) -> bool:
        return not self.reason


@dataclass(frozen=True)
class RowActions:
    """Everything the panel shows for one row (or one call of a shared layer): plain data."""

    key: Any  # the exact key: the path, or (path, call_index)
    label: str  # the type the row has now (Keep when it has none)
    offered: tuple  # labels the Type dropdown offers: the row's own label first if it no longer fits
    refused: dict  # label -> why that type is not offered here
    params: tuple  # Param per parameter of the row's type
    can_choose: bool
    choose_reason: str
    insertable: tuple  # labels that can be inserted after it
    insert_reason: str  # why nothing can be inserted after it ("" when something can)
    can_delete: bool
    delete_reason: str
    trainable: bool
    can_freeze: bool  # the trainable flag can be changed
    freeze_reason: str
    prune: PruneInfo
    like: LikeInfo | None = None  # giving the row's chosen type to every layer like it (None: not asked)
    input_shape: tuple | None = None  # an input row of the model: its shape without the batch axis
    input_reason: str = "only the model's input rows can change its input"  # why not ("" when it can)
    cut_reason: str = ""  # why the model cannot be cut at this row ("" when it can)
    delete_label: str = "Delete"  # "Drop block" for a transformer block (a layer with attention inside)
    lora: LoraInfo | None = None  # LoRA on this row (None: not asked)
    heads: int = 0  # a MultiHeadAttention's heads before the row's heads step (what "Heads..." counts from)
    heads_kept: int = 0  # ... and the heads it has now
    heads_reason: str = "not asked"  # why "Heads..." cannot prune this row's heads ("" when it can)
    configure_reason: str = "not asked"  # why "Configure..." cannot rebuild this row's layer ("" when it can)
    configure_changes: dict = field(default_factory=dict)  # the options the row's configure step changes
    width: int = 0  # a Dense / convolution / recurrent / Embedding row's units or filters now
    widen_reason: str = "not asked"  # why "Widen..." is not offered here ("" when it is; the core may still refuse)
    deepen_reason: str = "not asked"  # why "Add identity layer after" cannot add an identity layer here ("" when it can)
    quantize_reason: str = "not asked"  # why "Quantize" is not offered here ("" when it is)
    quantized: str = ""  # the mode of the row's own quantize step ("" when it has none)
    grow_reason: str = "not asked"  # why "Grow a block after" is not offered here ("" when it is; the core may refuse)

    @property
    def can_prune_heads(self) -> bool:
        return not self.heads_reason

    @property
    def can_configure(self) -> bool:
        return not self.configure_reason

    @property
    def can_widen(self) -> bool:
        return not self.widen_reason

    @property
    def can_deepen(self) -> bool:
        return not self.deepen_reason

    @property
    def can_quantize(self) -> bool:
        return not self.quantize_reason

    @property
    def can_grow(self) -> bool:
        return not self.grow_reason

    @property
    def can_insert(self) -> bool:
        return bool(self.insertable)

    @property
    def can_change_input(self) -> bool:
        return not self.input_reason

    @property
    def can_cut(self) -> bool:
        return not self.cut_reason


@dataclass(frozen=True)
class LikeInfo:
    """Whether the type chosen for a row can also be given to every other layer of its class."""

    label: str  # the type chosen for the row ("" when it has none)
    type: str  # the class of the layer the row had, e.g. "Dense"
    others: int  # other layers of that class in the current model
    reason: str  # why not ("" when it can)

    @property
    def can_apply(self) -> bool:
        return not self.reason

    @property
    def count(self) -> int:
        """This layer and the others like it: the N of "apply to all N layers like this one"."""
        return self.others + 1


@dataclass(frozen=True)
class LoraInfo:
    """LoRA on one row: on the layer itself (Dense, EinsumDense, Embedding, convolution) or, on a
    block, on its attention projections; whether it can be turned on or off there, and why not."""

    targets: tuple  # paths of the layers LoRA goes on for this row ("outer/block/attention/query", ...)
    what: str  # those layers in words: "this EinsumDense layer", "2 attention projections (query, value)"
    rank: int  # the rank this row's own LoRA step gives (0: the row has no LoRA step)
    on: dict  # {path: rank} of the layers at or inside this row that have LoRA now (from any step)
    reason: str  # why LoRA cannot be turned on here ("" when it can; with a step, "on" changes its rank)
    off_reason: str  # why it cannot be turned off here ("" when the row has its own LoRA step)

    @property
    def can_enable(self) -> bool:
        return not self.reason

    @property
    def can_disable(self) -> bool:
        return not self.off_reason


@dataclass(frozen=True)
class ModelActions:
    """The whole-model actions the panel offers for the current model, and why not: plain data."""

    activations: tuple  # activations the model applies now (what "Swap activation" can swap from)
    swap_to: tuple  # what it can swap to
    swap_reason: str  # why nothing can be swapped ("" when something can)
    batchnorms: int  # BatchNormalization layers in the model
    fold_reason: str  # why "Fold BatchNorm" has nothing to do ("" when it may)
    lora_projections: dict = field(default_factory=dict)  # LORA_PROJECTIONS key -> how many the model has
    lora_rank: int = 0  # the rank of the whole-model LoRA step (0: there is none)
    lora_which: str = ""  # which projections that step names (a key of LORA_PROJECTIONS)
    lora_on: int = 0  # layers that have LoRA now (from any step)
    lora_reason: str = "not asked"  # why "LoRA on attention" cannot be done ("" when it can)
    lora_off_reason: str = "not asked"  # why the whole-model LoRA step cannot be taken back ("" when it can)
    merge_reason: str = "not asked"  # why "Merge LoRA" has nothing to do ("" when it may)
    trainable_params: int = 0  # parameters that train in the current model (only the factors, with LoRA)
    fused: int = 0  # layers with a fused activation (what "Split activations" splits)
    split_reason: str = "not asked"  # why "Split activations" has nothing to do ("" when it may)

    @property
    def can_lora(self) -> bool:
        return not self.lora_reason

    @property
    def can_lora_off(self) -> bool:
        return not self.lora_off_reason

    @property
    def can_merge(self) -> bool:
        return not self.merge_reason

    @property
    def can_swap(self) -> bool:
        return not self.swap_reason

    @property
    def can_fold(self) -> bool:
        return not self.fold_reason

    @property
    def can_split(self) -> bool:
        return not self.split_reason


@dataclass(frozen=True)
class Comparison:
    """The current model and the original run on the probe batch: ``frame`` (one row per layer in
    both, see :func:`kerasnb.compare.compare`) and ``note`` (how the probe was fed to each, or why
    there is no comparison, with ``frame`` None)."""

    frame: Any
    note: str


class Answers:
    """What the panel shows, asked of ``session`` (see the module docstring)."""

    def __init__(self, session):
        self.session = session
        self._prune_reasons: tuple = (None, {})  # (model, {path: reason}) for the current model

    def options(self, key) -> tuple[list, dict]:
        """``(labels offered, {label: reason not offered})`` for ``key`` (a row or one call of it)."""
        key = self.session.key(key)
        step = self.step_for(key)
        own = (step.label, step.params) if step is not None else None  # its own type: with its own values
        if step is not None and step.kind == "insert":
            # An inserted row can become another insertable type, or be removed again.
            offered, refused = insertable(self.base_site(step), own)
            return [catalog.REMOVE] + offered, refused
        place = self.base_place(step) if step is not None else self.place(key)
        site = fitting.locate(*place)
        offered, refused = [], {}
        for entry in catalog.entries():
            params = own[1] if own is not None and entry.label == own[0] else {}
            ok, reason = fits(entry, place, site, **params)
            if ok:
                offered.append(entry.label)
            else:
                refused[entry.label] = reason
        return offered, refused

    def insert_options(self, key) -> tuple[list, dict]:
        """Types that can be inserted after ``key`` as it stands in the current model."""
        return insertable(self.site(key))

    def row_actions(self, key) -> RowActions:
        """What the panel shows for ``key``: the types offered and refused, the parameters, and
        whether it can be deleted, frozen, pruned, cut there or have a layer inserted after it,
        whether its chosen type can go to every layer like it, and (an input row) its shape, with
        why not.
        """
        if key is None:
            raise InvalidEdit("No layer is selected, so there is nothing to show. Select a row first. Received: key=None")
        key = self.session.key(key)
        path = path_of(key)
        info = self.session.rows().get(path)
        was = info or self.session.original_rows.get(path)
        trainable = bool(was.trainable) if was is not None else True
        gone = self.gone_reason(key)
        if gone:  # inside a nested model that a step replaced: nothing to act on here
            n = self.count_params()
            return RowActions(key, catalog.KEEP, (catalog.KEEP,), {}, (), False, gone, (), gone, False, gone,
                              trainable, False, gone, PruneInfo(None, gone, n, n),
                              like=LikeInfo("", was.type if was is not None else "", 0, gone),
                              input_reason=gone, cut_reason=gone, lora=LoraInfo((), "", 0, {}, gone, gone))
        step = self.step_for(key)
        own = self.own_step(key)
        offered, refused = self.options(key)
        label = step.label if step is not None else catalog.KEEP
        shown = tuple(offered) if label in offered else (label,) + tuple(offered)
        is_input = bool(info is not None and info.is_input)
        if own is not None or info is None:
            insertable, insert_reason = (), f"{key_text(key)} was replaced or deleted; insert after what stands there now"
        else:
            insertable = tuple(self.insert_options(key)[0])
            insert_reason = "" if insertable else "no type can go after it"
        if is_input:
            can_delete, delete_reason = False, INPUT_STAYS
        elif own is not None and isinstance(own.edit, Delete):
            can_delete, delete_reason = False, f"{key_text(key)} is deleted already; choose Keep to bring it back"
        elif catalog.REMOVE in offered:
            can_delete, delete_reason = True, ""
        else:
            can_delete, delete_reason = False, refused.get(catalog.REMOVE, "it cannot be removed here")
        if info is None:
            freeze_reason = f"{path!r} is not in the edited model: it was replaced or deleted"
        else:
            freeze_reason = "an input layer has no weights to freeze" if is_input else ""
        return RowActions(
            key=key, label=label, offered=shown, refused=refused, params=self._params_of(step),
            can_choose=not is_input, choose_reason=INPUT_STAYS if is_input else "",
            insertable=insertable, insert_reason=insert_reason,
            can_delete=can_delete, delete_reason=delete_reason,
            trainable=trainable, can_freeze=not freeze_reason, freeze_reason=freeze_reason,
            prune=self.prune_info(key), like=self.like_info(key),
            input_shape=self.input_shape(path) if is_input and "/" not in path else None,
            input_reason=self._input_reason(path, is_input), cut_reason=self.cut_reason(key),
            delete_label="Drop block" if info is not None and is_block(self.layer(path)) else "Delete",
            lora=self.lora_info(key), **self._heads_answer(path, own), **self._configure_answer(key, info, own),
            **self._widen_answer(key, info, own), **self._quantize_answer(key, info, own),
            deepen_reason=(f"{key_text(key)} was replaced or deleted; add the identity layer after what stands "
                           "there now") if own is not None or info is None else "",
            grow_reason=self._grow_reason(key, info, own),
        )

    def _grow_reason(self, key, info, own) -> str:
        """"Grow a block after" on a transformer block's row or a residual Add's, or why not."""
        import keras

        if own is not None or info is None:
            return f"{key_text(key)} was replaced or deleted; grow after a block that stands in the model now"
        layer = self.layer(path_of(key))
        if not (is_block(layer) or isinstance(layer, (keras.layers.Add, keras.layers.Activation, keras.layers.ReLU))):
            return ("a block is grown after a transformer block, or after the Add that closes a residual block "
                    f"x + f(x); this row is {_a(type(layer).__name__)}")
        return blocks_growth.grow_refusal(self.session.model, path_of(key))

    def _heads_answer(self, path: str, own) -> dict:
        """"Heads..." on ``path``: the heads its layer had before the row's heads step, has now, or why not."""
        import keras

        layer = self.layer(path) if own is None else None
        if not isinstance(layer, keras.layers.MultiHeadAttention):
            return {"heads_reason": "only a MultiHeadAttention row has heads to remove"}
        now = int(layer.num_heads)
        step = next((s for s in self.session.steps if s.label == "prune_heads" and s.target == path), None)
        was = next((lay for p, lay in actions.walk_layers(self.session.original) if p == path), None) \
            if step is not None else None
        heads = int(was.num_heads) if isinstance(was, keras.layers.MultiHeadAttention) else now
        reason = "" if heads > 1 else f"{path!r} has a single head; removing it would leave none"
        return {"heads": heads, "heads_kept": now, "heads_reason": reason}

    def _widen_answer(self, key, info, own) -> dict:
        """"Widen..." on ``key``: its width now, or why it has none to grow. Whether the channels can
        grow exactly (what they reach) is the core's to say when applied: no analysis per selection."""
        if info is None or own is not None:
            return {"widen_reason": f"{key_text(key)} was replaced or deleted; widen what stands there now"}
        width = actions.channel_width(self.layer(path_of(key)))
        if not width:
            return {"widen_reason": "only a layer with units or filters (Dense, convolution, recurrent, Embedding) widens"}
        return {"width": int(width), "widen_reason": ""}

    def _quantize_answer(self, key, info, own) -> dict:
        """"Quantize" on ``key``: offered on a layer Keras can quantize (a block: one holding such
        layers), or why not; its own quantize step's mode, which the dropdown shows."""
        from .. import quantization

        path = path_of(key)
        step = next((s for s in self.session.steps if s.label == "quantize" and s.target == path), None)
        mode = step.params["mode"] if step is not None else ""
        if info is None or own is not None:
            return {"quantize_reason": f"{key_text(key)} was replaced or deleted; quantize what stands there now"}
        if step is not None:  # quantized by its own step: offered again, to change the mode (the step is replaced)
            return {"quantize_reason": "", "quantized": mode}
        layer = self.layer(path)
        why = quantization.refusal(layer, "int8") if layer is not None else f"{path!r} is not in the current model"
        return {"quantize_reason": why, "quantized": mode}

    def _configure_answer(self, key, info, own) -> dict:
        """"Configure..." on ``key``: the options its configure step changes, or why it cannot be configured."""
        if info is None or own is not None:
            return {"configure_reason": f"{key_text(key)} was replaced or deleted; configure what stands there now"}
        if info.is_input:
            return {"configure_reason": "an input row has no options to change; use \u201cChange input\u2026\u201d"}
        step = next((s for s in self.session.steps if s.label == "configure" and s.target == path_of(key)), None)
        return {"configure_reason": "", "configure_changes": dict(step.params["changes"]) if step is not None else {}}

    def prune_info(self, key) -> PruneInfo:
        """Whether the layer of ``key`` is pruned (and the parameter counts), or why it cannot be."""
        key = self.session.key(key)
        step = self.prune_step(path_of(key))
        if step is not None:
            before, after, macs_before, macs_after = step.counts or (self.count_params(), self.count_params(), None, None)
            return PruneInfo(step.params["keep"], "", before, after, macs_before, macs_after, step.params["by"])
        now = self.count_params()
        return PruneInfo(None, self.prune_reason(key), now, now)

    def prune_preview(self, key, keep: float, by: str = "l1") -> PruneInfo:
        """What :meth:`prune` with these values would give, worked out without building a model:
        the parameters and multiply-accumulates per sample (MACs) before and after, counted on the
        model the steps before the layer's prune step make (the current model when it has none)."""
        keep, by, path = self.session.check_prune(key, keep, by)
        steps = list(self.session.steps)
        old = self.prune_step(path)
        if old is None:
            reason = self.prune_reason(key if isinstance(key, tuple) else path)
            if reason:
                raise InvalidEdit(f"{reason.rstrip('.')}. Received: key={key!r}")
        base = tuple(steps[:steps.index(old)]) if old is not None else tuple(steps)
        built = self.session._build(base)
        model = built.model if built is not None else self.session.original
        before = actions.count_params(model)
        if keep >= 1.0:
            macs = self.macs_of(model)
            return PruneInfo(None, "", before, before, macs, macs, by)
        _, params_after, macs_before, macs_after = actions.prune_plan(model, path, keep, by, self.session.data, self.layer_costs(model))
        return PruneInfo(keep, "", before, params_after, macs_before, macs_after, by)

    def input_shape(self, name: str) -> tuple:
        """The shape (without the batch axis) of the current model's input layer ``name``."""
        for layer in actions.input_layers(self.session.model):
            if layer.name == name:
                return tuple(layer.batch_shape)[1:]
        names = [l.name for l in actions.input_layers(self.session.model)]
        raise LayerNotFound(f"The model has no input named {name!r}; its inputs: {names}. Received: input={name!r}")

    def _input_reason(self, path: str, is_input: bool) -> str:
        if not is_input:
            return "only the model's input rows can change its input; select one"
        if "/" in path:
            return "this is the input of a nested model; change the input of the whole model instead"
        return ""

    def like_settings(self, key) -> dict:
        """The settings of a replace_all step from ``key``: the type chosen for it, given to every
        other layer of the class it had that the type fits; the others named with why not."""
        if key is None:
            raise InvalidEdit("No layer is selected. Select a row whose type you chose. Received: key=None")
        key = self.session.key(key)
        own = self.own_step(key)
        if own is None or own.replaced is None:
            raise InvalidEdit(f"{key_text(key)} has no type chosen; choose one first, then give it to every layer "
                              f"like it. Received: key={key!r}")
        entry, cls = catalog.get(own.label), own.replaced
        found, shared = self.like_candidates(cls, path_of(key))
        if not found and not shared:
            raise LayerNotFound(f"There is no other {cls.__name__} layer in the model to give {own.what()} to. "
                                f"Received: key={key!r}")
        model = self.session.model
        fit, left = [], dict(shared)
        for path in found:
            ok, reason = fits(entry, (model, path), fitting.locate(model, path), **own.params)
            if ok:
                fit.append(path)
            else:
                left[path] = reason
        if not fit:
            raise IncompatibleShape(
                f"{own.what()} fits none of the other {cls.__name__} layers: "
                + "; ".join(f"{p!r}: {r}" for p, r in left.items()) + f". Received: key={key!r}")
        return {"like": key, "type": cls.__name__, "label": own.label, "values": dict(own.params),
                "paths": tuple(fit), "left": left}

    def like_info(self, key) -> LikeInfo:
        """Whether the type chosen for ``key`` can be given to every other layer of the class it had.

        Only counts them (cheap): which of them the type fits is worked out when it is asked
        (:meth:`Session.replace_all`), and those it does not fit are left alone and named.
        """
        key = self.session.key(key)
        own = self.own_step(key)
        if own is None or own.replaced is None:
            return LikeInfo("", "", 0, "choose a type for this row first; then it can go to every layer like it")
        cls = own.replaced
        others = len(self.like_candidates(cls, path_of(key))[0])
        reason = "" if others else f"there is no other {cls.__name__} layer in the model"
        return LikeInfo(own.label, cls.__name__, others, reason)

    def lora_info(self, key) -> LoraInfo:
        """LoRA on the row of ``key``: which layers it goes on (the row's own layer, or a block's
        attention projections), the rank of the row's own LoRA step, what has LoRA now, and why
        it cannot be turned on or off there."""
        key = self.session.key(key)
        path = path_of(key)
        if path not in self.session.rows() and path not in self.session.original_rows and self.own_step(key) is None:
            from ..errors import suggest

            raise LayerNotFound(f"No row {path!r} in the model.{suggest(str(path), self.session.rows())} Received: key={key!r}")
        gone = self.gone_reason(key)
        if gone:
            return LoraInfo((), "", 0, {}, gone, gone)
        own = self.lora_step(path)
        rank = own.params["rank"] if own is not None else 0
        info = self.session.rows().get(path)
        layer = self.layer(path) if info is not None else None
        on = lora.lora_in(path, layer) if layer is not None else {}
        giver = own or self.lora_giver(path)
        off_reason = "" if own is not None else (
            f"its LoRA comes from the step \u201c{giver.describe()}\u201d; take that back instead (undo, or turn LoRA "
            "off where it was turned on)" if giver is not None and on else "LoRA is not on here")
        if info is None or layer is None:
            why = f"{key_text(key)} was replaced or deleted; LoRA goes on what stands there now"
            return LoraInfo((), "", rank, {}, why, off_reason if own is not None else why)
        if info.is_input:
            why = "an input layer has no weights for LoRA"
        elif info.is_container:
            why = ("this is a nested model: turn LoRA on for its blocks or layers on their rows, or on every "
                   "attention projection with \u201cLoRA on attention\u201d")
        else:
            why = ""
        targets, what = lora.lora_targets(path, layer, "query, value") if not why else ((), "")
        if not why and not targets:
            why = (f"LoRA goes on Dense, EinsumDense, Embedding and convolution layers, and on blocks with attention "
                   f"(on their query and value projections); {path!r} is {_a(type(layer).__name__)}")
        if not why and own is None and all(t in on for t in targets):
            why = (f"LoRA is on {what} already"
                   + (f", from the step \u201c{giver.describe()}\u201d" if giver is not None else ""))
        return LoraInfo(tuple(targets), what, rank, on, why, off_reason)

    def cut_reason(self, key) -> str:
        """Why the model cannot be cut at ``key`` (its output made the model's output), or ``""``."""
        key = self.session.key(key)
        path = path_of(key)
        info = self.session.rows().get(path)
        if info is None or self.own_step(key) is not None:
            return f"{key_text(key)} was replaced or deleted; cut at what stands there now"
        if info.is_input:
            return "an input row computes nothing; cut after a layer"
        if path.count("/") > 1:
            return "the model can be cut inside a nested model one level deep, not deeper"
        if "/" not in path:
            try:
                call = actions.single_call(self.session.model, _key_in(self.session.steps, key))
            except Exception as error:  # noqa: BLE001 -- the resolver's refusal, said as the reason
                return first_line(error, 200)
            outputs = [id(t) for t in actions.output_tensors(self.session.model)]
            if len(outputs) == 1 and [id(t) for t in call.outputs] == outputs:
                return "its output is the model's output already"
        return ""

    def model_actions(self) -> ModelActions:
        """What the whole-model actions can do on the current model (swap from what, fold how many)."""
        used = activations.activations_in(self.session.model)
        swap_reason = "" if used else ("the model applies no activation that can be swapped (an Activation or "
                                       "ReLU layer, or one fused in a Dense / Conv layer)")
        import keras

        batchnorms = sum(isinstance(layer, keras.layers.BatchNormalization)
                         for _, layer in actions.walk_layers(self.session.model))
        fold_reason = "" if batchnorms else "the model has no BatchNormalization layer"
        counts = {which: len(lora.attention_projections(self.session.model, which)) for which in LORA_PROJECTIONS}
        own = self.lora_step("")
        on = lora.lora_layers(self.session.model)
        lora_reason = "" if own is not None or any(counts.values()) else (
            "the model has no attention layer with query and value projections (keras-hub blocks and Keras's "
            "MultiHeadAttention have them); turn LoRA on for single layers on their rows")
        off_reason = "" if own is not None else "no \u201cLoRA on attention\u201d step to take back"
        merge_reason = "" if on else "no layer has LoRA; turn it on first"
        trainable = sum(int(np.prod(v.shape)) for v in self.session.model.trainable_variables)
        fused = len(activations.fused_activations(self.session.model))
        split_reason = "" if fused else ("no layer has a fused activation to split (a Dense / Conv layer with "
                                         "activation= other than 'linear')")
        return ModelActions(tuple(used), SWAP_TO, swap_reason, batchnorms, fold_reason, counts,
                            own.params["rank"] if own is not None else 0,
                            own.params["projections"] if own is not None else "", len(on), lora_reason, off_reason,
                            merge_reason, trainable, fused, split_reason)

    def compare(self, x=None) -> Comparison:
        """Run the current model and the original on ``x`` (the probe batch by default).

        When the input lost its channels to one (:meth:`change_input` with channels "sum"), the
        edited model gets each probe example's mean over the channels, and the original that
        grey example repeated: what the sum rule promises to compute alike. Another input shape
        cannot be compared; the note says why.
        """
        if x is None:
            if self.session.probe is None:
                raise InvalidEdit("No probe batch to compare on: open the editor with show_editor(model, probe=x), or "
                                  "pass x. Received: x=None")
            x = self.session.probe
        else:
            x = check_probe(self.session.original, x)
        n = len(x[0])
        if self.session.result is None:
            return Comparison(None, f"No edit yet: the model is the original, so its outputs on the {n} probe "
                                    "example(s) are the same.")
        new_shapes = [tuple(t.shape)[1:] for t in actions.input_tensors(self.session.model)]
        given = [a.shape[1:] for a in x]
        feed, original_x, how = x, None, f"Both models ran on the {n} probe example(s)"
        if not all(_fits_shape(g, s) for g, s in zip(given, new_shapes)):
            if len(x) == 1 and len(new_shapes[0]) == len(given[0]) and new_shapes[0][-1] == 1 \
                    and _fits_shape(given[0][:-1], new_shapes[0][:-1]):
                grey = x[0].mean(axis=-1, keepdims=True).astype(x[0].dtype)
                feed, original_x = [grey], [np.repeat(grey, given[0][-1], axis=-1)]
                how = (f"The input now has 1 channel: the edited model ran on each of the {n} probe example(s) "
                       f"averaged over its {given[0][-1]} channels, the original on that grey example repeated "
                       f"to {given[0][-1]} channels")
            else:
                return Comparison(None, f"The edited model takes inputs shaped {_shapes_text(new_shapes)} and the "
                                        f"probe batch is {_shapes_text(given)}, so they cannot be compared.")
        import warnings

        from ..compare import compare

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frame = compare(self.session.result, _one_or_list(feed), original=self.session.original,
                            original_x=None if original_x is None else _one_or_list(original_x))
        broken = [str(c.message) for c in caught if type(c.message).__name__ == "BrokenPromiseWarning"]
        return Comparison(frame, how + ("." if not broken else ". " + broken[0]))

    def prune_reason(self, path: str) -> str:
        """Why the layer at ``path`` cannot be pruned in the current model, or ``""`` when it can.

        Asked only for the row the user selects, and kept per model: one channel analysis per
        row asked about, none at all when the editor opens on a layer that makes no channels.
        """
        if isinstance(path, tuple):
            return (f"{path[0]!r} is shared (called {self.session.calls(path[0])} times with the same weights); "
                    "pruning works on layers called once")
        model, known = self._prune_reasons
        if model is not self.session.model:
            known = {}
            self._prune_reasons = (self.session.model, known)
        if path not in known:
            info = self.session.rows().get(path)
            if info is None:
                known[path] = f"{path!r} is not in the current model"
            elif info.is_input or info.is_container or "/" in path or not info.params:
                # Said here without an analysis: pruning works on top-level layers that make channels.
                what = ("an input" if info.is_input else "a nested model" if info.is_container
                        else "inside a nested model" if "/" in path else "a layer without weights")
                known[path] = (f"{path!r} is {what}; only top-level Dense and convolution layers "
                               "have channels to prune")
            else:
                known[path] = pruning_module().unprunable_reason(self.session.model, path)
        return known[path]

    def _params_of(self, step) -> tuple:
        """The :class:`Param` of each parameter of the type ``step`` gives its row."""
        if step is None or step.kind not in ("choice", "insert"):
            return ()
        entry = _entry_or_none(step.label)
        out = []
        for name, value in step.params.items():
            choices = entry.choices(name) if entry is not None else None
            if choices and value not in choices:
                choices = (value,) + choices
            out.append(Param(name, value, choices or None))
        return tuple(out)

    def global_prune_plan(self, keep=None, *, params=None, macs=None, by: str = "l1", round_to=None):
        """What :meth:`Session.prune_global` with these values would do to the current model, without
        building it: a :class:`kerasnb.budget.GlobalPlan` (params and MACs before and after). One
        budget: ``keep`` (the fraction of the channels kept), ``params`` or ``macs`` (the fraction of
        the current parameters / MACs kept at most). The channels are scored once per model and
        criterion; later plans reuse the scores (a slider's moves). A budget pruning cannot reach
        raises :class:`kerasnb.budget.BudgetNotReachable`.
        """
        settings = actions.check_global(keep, params, macs, by, round_to, criteria=self.session.criteria())
        return self.session.global_plan(self.session.model, settings)

    def macs(self):
        """The current model's multiply-accumulates per sample (:func:`kerasnb.flops.total_macs`), or
        None when its sizes are unknown."""
        return self.macs_of(self.session.model)

    # ------------------------------------------------------------------ where a key stands

    def step_for(self, key):
        """The choice or insert step whose target or added layers include ``key``, or None."""
        if key is None:
            return None
        path = path_of(key)
        for step in self.session.steps:
            if step.kind in ("trainable", "prune", "transform"):  # a transform's layers are rows of their own
                continue
            if step.target == key and step.kind == "choice":
                return step
            if _under(path, step.names):
                return step
        return None

    def prune_step(self, path: str):
        """The step pruning the layer at ``path``, or None."""
        return next((s for s in self.session.steps if s.kind == "prune" and s.target == path), None)

    def site(self, key) -> fitting.Site:
        """Where ``key`` stands, with the shapes it really sees in the current edited model.

        A layer (or call) of the current model is looked up there (a shared layer's calls are
        numbered as the current model numbers them). One that a step replaced or deleted is
        looked up where it would stand if only that step were taken back: in the model all the
        other steps make, so an upstream change of width is seen.
        """
        return fitting.locate(*self.place(key))

    def place(self, key) -> tuple:
        """``(model, target)``: the model :meth:`site` looks ``key`` up in, and ``key`` as it names it there."""
        key = self.session.key(key)
        gone = self.gone_reason(key)
        if gone:
            raise InvalidEdit(f"{gone}. Received: key={key!r}")
        own = self.own_step(key)
        if own is not None:
            return self.base_place(own)
        return self.session.model, _key_in(self.session.steps, key)

    def lora_step(self, scope: str):
        """The LoRA step of the row ``scope`` ("" for the whole-model one), or None."""
        return next((s for s in self.session.steps if s.kind == "transform" and s.label == "enable_lora" and s.target == scope), None)

    def lora_giver(self, path: str):
        """The last LoRA step whose edits reach the layer at ``path`` (or a layer inside it), or None."""
        found = None
        for step in self.session.steps:
            if step.kind == "transform" and step.label == "enable_lora" and any(
                    isinstance(getattr(e, "target", None), str) and _under(e.target, (path,)) for e in step.edits):
                found = step
        return found

    def layer(self, path: str):
        """The layer at ``path`` in the current model, or None."""
        return next((layer for p, layer in actions.walk_layers(self.session.model) if p == path), None)

    def own_step(self, key):
        """The choice step that replaced or deleted exactly ``key``, or None."""
        step = self.step_for(key)
        return step if step is not None and step.kind == "choice" and step.target == key else None

    def gone_reason(self, key) -> str:
        """Why ``key`` has nothing to act on (a step replaced the nested model holding it), or ""."""
        path = path_of(key)
        holder = next((s for s in self.session.steps if s.kind == "choice" and not isinstance(s.target, tuple)
                       and path.startswith(s.target + "/")), None)
        if holder is None and (path in self.session.rows() or self.own_step(key) is not None
                               or path not in self.session.original_rows):
            return ""
        if holder is not None:
            return (f"{path!r} is not in the edited model: {holder.describe()} took it away; choose Keep on that "
                    "row to bring it back")
        taker = self.taken_by(path)
        if taker is not None:
            return (f"{path!r} is not in the edited model: {taker.describe()} took it away; undo that step (or "
                    "Reset) to bring it back")
        return f"{path!r} is not in the edited model: an edit took it away"

    def taken_by(self, path: str):
        """The whole-model step that removed the layer at ``path`` (or the nested model holding it), or None."""
        transforms = [s for s in self.session.steps if s.kind == "transform"]
        for step in transforms:
            for edit in step.edits:
                target = getattr(edit, "target", None)
                if isinstance(edit, (Delete, Replace, Transform)) and isinstance(target, (str, tuple)) \
                        and _under(path, (path_of(target),)):
                    return step
        return next((s for s in reversed(transforms) if any(isinstance(e, Truncate) for e in s.edits)),
                    transforms[-1] if transforms else None)

    def base_site(self, step) -> fitting.Site:
        """Where ``step``'s target stands in the model that every other step makes.

        The steps that build on what ``step`` added (inserts after its new layers, their freezes)
        go with it. If those other steps cannot be rebuilt without it, the steps made before it
        are used, and failing that the original model.
        """
        return fitting.locate(*self.base_place(step))

    def base_place(self, step) -> tuple:
        """``(model, target)`` that :meth:`_base_site` looks ``step``'s target up in."""
        steps = list(self.session.steps)
        index = next(i for i, s in enumerate(steps) if s is step)
        others, added = [], set(step.names)
        for s in steps[:index] + steps[index + 1:]:
            if _under(path_of(s.target), added):
                added |= set(s.names)
                continue
            others.append(s)
        # A whole-model step after it was worked out on the model with it: the steps made before
        # it are the model it stands in.
        later_transform = any(s.kind == "transform" for s in steps[index + 1:])
        for base in ((steps[:index],) if later_transform else (others, steps[:index])):
            try:
                result = self.session._build(tuple(base))
                place = (result.model if result is not None else self.session.original, _key_in(base, step.target))
                fitting.locate(*place)  # it must stand there
                return place
            except Exception:  # noqa: BLE001 -- any refusal: try a smaller base (the rebuild's own error is not ours)
                continue
        return self.session.original, step.target

    def like_candidates(self, cls, exclude: str) -> tuple[list, dict]:
        """``(paths, {path: why not})``: the other layers of class ``cls`` in the current model, and
        those of them a whole-model step cannot replace alone (called more than once)."""
        found, shared = [], {}
        rows = self.session.rows()
        for path, layer in actions.walk_layers(self.session.model):
            if path == exclude or type(layer) is not cls or actions.is_input_layer(layer):
                continue
            if any(path.startswith(p + "/") for p in found):
                continue  # inside a nested model that is itself one of them
            info = rows.get(path)
            if info is not None and info.calls > 1:
                shared[path] = f"called {info.calls} times; choose a type for each call on its row"
                continue
            found.append(path)
        return found, shared

    def count_params(self) -> int:
        return actions.count_params(self.session.model)

    def layer_costs(self, model):
        """:func:`kerasnb.flops.layer_cost` of ``model`` (kept for the current one), None when its
        sizes are unknown."""
        held, costs = self.session._costs
        if held is not model:
            from ..errors import SurgeryError
            from ..flops import layer_cost

            try:
                costs = layer_cost(model)
            except SurgeryError:
                costs = None
            self.session._costs = (model, costs)
        return costs

    def macs_of(self, model):
        costs = self.layer_costs(model)
        return None if costs is None else int(sum(c.macs for c in costs.values()))


# ----------------------------------------------------------------------------- helpers


CONFIGURE_FORM = 'option=value, ... with Python literals as values, e.g. activation="gelu", units=32'


def parse_options(text: str) -> dict:
    """``{option: value}`` of the "Configure..." text ``option=value, ...``: each value a Python
    literal read by :func:`ast.literal_eval` (nothing is evaluated); :class:`InvalidEdit` naming
    what was received and the expected form otherwise.

        >>> parse_options('activation="gelu", units=32, kernel_size=(3, 3)')
        {'activation': 'gelu', 'units': 32, 'kernel_size': (3, 3)}
    """
    import ast

    def refuse(why: str):
        return InvalidEdit(f"Configure takes {CONFIGURE_FORM}; {why}. Received: {text!r}")

    if not isinstance(text, str) or not text.strip():
        raise refuse("nothing was given")
    try:  # parsed as the arguments of a call, only to split them: nothing is run
        call = ast.parse(f"f({text.strip()})", mode="eval").body
    except SyntaxError:
        raise refuse("this is not of that form (a string value needs quotes)") from None
    if not isinstance(call, ast.Call) or call.args or any(k.arg is None for k in call.keywords):
        raise refuse("every part must be option=value")
    changes: dict = {}
    for keyword in call.keywords:
        if keyword.arg in changes:
            raise refuse(f"{keyword.arg!r} is given twice")
        try:
            changes[keyword.arg] = ast.literal_eval(keyword.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            hint = (f"; quote a string: {keyword.arg}={keyword.value.id!r}" if isinstance(keyword.value, ast.Name)
                    else "")
            raise refuse(f"the value of {keyword.arg} is not a literal (a number, a quoted string, True, False, "
                         f"None, or a tuple / list / dict of them){hint}") from None
    return changes


def options_text(changes: dict) -> str:
    """The "Configure..." text of ``changes``: what :func:`parse_options` reads back."""
    return ", ".join(f"{name}={value!r}" for name, value in changes.items())


def is_block(layer) -> bool:
    """A transformer block: a layer (not a nested model) with an attention layer inside."""
    import keras

    if not isinstance(layer, keras.layers.Layer) or actions.is_graph_model(layer):
        return False
    return any(lora.is_attention(sub) for sub in actions.sublayers(layer)[1:])


def _a(name: str) -> str:
    """``"a Dense"``, ``"an Add"``."""
    return f"{'an' if name[:1].upper() in 'AEIOU' else 'a'} {name}"


def check_probe(model, x) -> list:
    """``x`` as a list of arrays, one per input of ``model``, once their shapes fit it; else
    :class:`InvalidEdit` saying what the model takes."""
    import keras

    try:
        arrays = [np.asarray(keras.ops.convert_to_numpy(v)) for v in keras.tree.flatten(x)]
    except Exception as error:  # noqa: BLE001 -- anything that is not arrays: said in the message
        raise InvalidEdit(f"The probe batch is an array (or a list of arrays, one per input). Received: "
                          f"{type(x).__name__} ({first_line(error, 200)})") from None
    wanted = [tuple(t.shape)[1:] for t in actions.input_tensors(model)]
    given = [a.shape[1:] for a in arrays]
    if len(arrays) != len(wanted) or not all(a.ndim >= 1 and a.shape[0] > 0 for a in arrays) \
            or not all(_fits_shape(g, s) for g, s in zip(given, wanted)):
        raise InvalidEdit(f"The probe batch must fit the model's inputs: a batch of {_shapes_text(wanted)}. "
                          f"Received: {_shapes_text([a.shape for a in arrays])}")
    return arrays


def _fits_shape(given, wanted) -> bool:
    return len(given) == len(wanted) and all(w is None or g == w for g, w in zip(given, wanted))


def _shapes_text(shapes) -> str:
    texts = ["(" + ", ".join("None" if d is None else str(d) for d in s) + ("," if len(s) == 1 else "") + ")"
             for s in shapes]
    return texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"


def _one_or_list(arrays):
    return arrays[0] if len(arrays) == 1 else list(arrays)


def fits(entry, place, site, **params) -> tuple[bool, str]:
    """:func:`kerasnb.fitting.fits` for the layer at ``place`` (``(model, target)``), except removing a
    layer that takes several tensors (a transformer block takes the hidden states and a mask):
    whether that can be done is the core's own decision (:class:`kerasnb.Delete` passes on the
    input whose shape and dtype equal the output's), so the core's planner is asked."""
    if entry.kind == "remove" and not site.is_input and site.input_shape is None:
        reason = actions.delete_refusal(*place)
        return not reason, reason
    return fitting.fits(entry, None, place[1], site=site, **params)


def insertable(site, own=None) -> tuple[list, dict]:
    """``(labels that can go right after the layer at site, {label: why not})``: insertable types.

    ``own`` is ``(label, params)`` of the type an inserted row has, checked with its own values.
    """
    offered, refused = [], {}
    for entry in catalog.entries():
        if not entry.insertable or entry.kind != "replace":
            continue
        params = own[1] if own is not None and entry.label == own[0] else {}
        ok, reason = fitting.fits_after(entry, site, **params)
        if ok:
            offered.append(entry.label)
        else:
            refused[entry.label] = reason
    return offered, refused


def insertable_labels() -> str:
    return ", ".join(e.label for e in catalog.entries() if e.insertable and e.kind == "replace")


def _what(entry, values: dict) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in values.items())
    return f"{entry.label!r}" + (f" with {args}" if args else "")


def pruning_module():
    """``kerasnb.pruning``, imported on the first question about pruning (not when the panel opens)."""
    return importlib.import_module("kerasnb.pruning")


