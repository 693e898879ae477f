"""LoRA with Keras's own implementation: turn it on for chosen layers of a new model, and merge it.

``enable_lora(model, match, rank=8)`` returns a new model in which every matching Dense,
EinsumDense, Embedding and convolution layer (at any depth, inside keras-hub blocks too) has
Keras's LoRA enabled: the trained kernel is kept and frozen, and two small factors are added,
one of them zero, so the new model computes exactly what the original did (``kept``, with the
reason ``LoRA rank 8``). Only the LoRA factors train, unless ``train_others=True``. A block made
again for it (a keras-hub decoder layer) comes back with new auto-generated sub-layer names, so
its variables are carried by structure (:func:`kerasnb.weights.paired_variables`), never by name.

``merge_lora(model)`` folds each layer's factors into its kernel and returns a model without
LoRA whose outputs equal the LoRA model's to float tolerance (``folded``, with the reason).
The model passed in never gets LoRA.
"""

from __future__ import annotations

import dataclasses

import keras

from . import _graph, _targets, weights
from .edits import Transform
from .errors import surgery_errors_only, AmbiguousTarget, InvalidEdit, LayerNotFound
from .surgery import SurgeryResult, apply
from .report import Status
from .weights import Outcome

__all__ = ["enable_lora", "merge_lora", "lora_layers", "attention_projections", "lora_targets", "PROJECTIONS"]

_KINDS = (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Embedding,
          keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)

# Which projections of an attention layer "LoRA on attention" means. "query, value" is what the
# LoRA paper and keras-hub's own Backbone.enable_lora put it on (``match="attention"``).
PROJECTIONS = {"query, value": ("query", "value"), "query, key, value, output": ("query", "key", "value", "output")}
# The names keras-hub and Keras give those projections inside an attention layer.
_PROJECTION_NAMES = {"query": ("query", "query_dense", "q_proj"), "key": ("key", "key_dense", "k_proj"),
                     "value": ("value", "value_dense", "v_proj"),
                     "output": ("attention_output", "output_dense", "o_proj", "out_proj")}


@surgery_errors_only
def enable_lora(model, match, rank: int = 8, alpha: float | None = None, *, train_others: bool = False) -> SurgeryResult:
    """A new model with Keras's LoRA of ``rank`` on every layer ``match`` selects.

    Every matching Dense, EinsumDense, Embedding and convolution layer (at any depth, sub-layers
    of keras-hub blocks too) gets Keras's own LoRA: its trained kernel is kept and frozen, and two
    small factors are added, one of them zero, so the new model computes what the original did
    (the layer's status is ``kept``, its reason ``LoRA rank 8``). Afterwards only the LoRA factors
    train, unless ``train_others=True``. A block made again for it (a keras-hub decoder layer)
    comes back with new auto-generated sub-layer names; its variables are carried by structure,
    never by name. ``kerasnb.merge_lora`` folds the factors back into the kernels.

    Args:
        model: A built functional or Sequential model (a keras-hub backbone or task too); it is
            not changed and never gets LoRA itself.
        match: Which layers get LoRA, as every ``match=`` of kerasnb selects: a layer class or
            tuple of classes (``keras.layers.Dense``); a name or path (``"query"``, which also
            selects ``"block/query"``); a glob on the whole path or name
            (``"*attention*query*"``); a compiled regex searched in the path
            (``re.compile(r"/(query|value)$")``); a layer object; a predicate
            ``(path, layer) -> bool``; or a list of these. Paths reach the layers blocks hold
            (``"transformer_layer_0/self_attention/query"``). ``"attention"`` means the query
            and value projections of every attention layer at any depth (as keras-hub's
            ``Backbone.enable_lora`` does); ``kerasnb.lora.attention_projections(model)`` lists
            them, and all four with ``which="query, key, value, output"``.
        rank: The rank of the factors, a whole number of at least 1.
        alpha: The scale: the factors' product is multiplied by ``alpha / rank``. None (the
            default) means ``alpha = rank``, as in Keras.
        train_others: False (the default) freezes every variable but the LoRA factors; True
            leaves the other layers trainable as they were.

    Returns:
        SurgeryResult: ``.model`` with LoRA on the matching layers, ``.report`` (those layers
        ``kept``, with the rank in their reason), ``.edits`` and ``.notes`` (how many layers got
        LoRA and what trains).

    Raises:
        LayerNotFound: no layer LoRA can go on matches (for ``"attention"``: the model has no
            attention layer); the message lists the layers that can.
        AmbiguousTarget: ``"attention"`` where a layer is itself named ``attention``; the
            message names both ways out.
        InvalidEdit: ``rank`` or ``alpha`` is not a positive number, ``match`` is of no form
            above, or a matching layer already has LoRA (merge it first).

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> result = kerasnb.enable_lora(model, "hidden", rank=2)
        >>> result.report.status("hidden"), result.report.row("hidden").reason
        ('kept', 'LoRA rank 2')
        >>> kerasnb.lora.lora_layers(result.model)
        {'hidden': 2}
        >>> [w.path for w in result.model.trainable_weights]
        ['hidden/lora_kernel_a', 'hidden/lora_kernel_b']
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise InvalidEdit(f"rank is a whole number of at least 1, e.g. rank=8. Received: rank={rank!r}")
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0):
        raise InvalidEdit(f"alpha is a positive number (or None for alpha = rank). Received: alpha={alpha!r}")
    if isinstance(match, str) and match == "attention":
        named = [path for path, _, _ in _targets.deep_layers(model) if path.rsplit("/", 1)[-1] == "attention"]
        if named:  # the word means two things here: say so rather than pick one silently
            raise AmbiguousTarget(
                f"match='attention' means the query and value projections of every attention layer, but model "
                f"{model.name!r} also has layer(s) named 'attention' ({', '.join(map(repr, named[:3]))}). What would "
                "work: match=kerasnb.lora.attention_projections(model) for the projections, or match=['attention'] "
                "for the layers of that name. Received: match='attention'")
        match = attention_projections(model)
        if not match:
            raise LayerNotFound(f"Model {model.name!r} has no attention layer with query and value projections "
                                "(keras-hub blocks and Keras's MultiHeadAttention have them). Received: "
                                "match='attention'")
    found = _matching(model, match)
    already = [path for path, layer, _ in found if lora_rank(layer)]
    if already:
        raise InvalidEdit(
            f"{', '.join(map(repr, already[:5]))} already {'has' if len(already) == 1 else 'have'} LoRA enabled. "
            "kerasnb.merge_lora(model) folds it into the kernels first; or match only layers without LoRA. "
            f"Received: match={match!r}"
        )
    alpha = alpha if alpha is not None else rank
    edits = [Transform(path, _with_lora(rank, alpha), _lora_settings(layer, rank, alpha))
             for path, layer, owner in found if owner is None]
    inside: dict = {}  # a block (a layer of the graph) -> its sub-layers that get LoRA
    for path, layer, owner in found:
        if owner is not None:
            inside.setdefault(owner, []).append((path, layer))
    for owner, chosen in inside.items():
        # By position among the block's tracked sub-layers: the rebuilt block's twins have other names.
        subs = _graph.sublayers(_targets.resolve(model, owner).layer)
        positions = [next(i for i, sub in enumerate(subs) if sub is layer) for _, layer in chosen]
        edits.append(Transform(owner, _with_lora_inside([p for p, _ in chosen], positions, rank, alpha)))
    paths = [path for path, _, _ in found]
    result = apply(model, edits)
    if not train_others:
        train_only_lora(result.model)
    note = (f"LoRA rank {rank} on {len(paths)} layer(s); "
            + ("only the LoRA factors train." if not train_others else "every layer still trains."))
    return dataclasses.replace(result, notes=result.notes + (note,))


@surgery_errors_only
def merge_lora(model) -> SurgeryResult:
    """A new model without LoRA: each LoRA layer's factors folded into its kernel.

    Every layer with LoRA enabled (sub-layers of blocks too) is made again without it, its
    kernel the one it computed with (the kernel plus the scaled product of the factors), so the
    new model's outputs equal the LoRA model's to float tolerance. Each such layer is reported
    ``folded`` with a reason. The trainable flags are the layers' own again.

    Args:
        model: A model with LoRA on some layers, e.g. the ``.model`` of ``kerasnb.enable_lora``;
            it is not changed.

    Returns:
        SurgeryResult: ``.model`` without LoRA, ``.report`` (the merged layers ``folded``),
        ``.edits`` and ``.notes``.

    Raises:
        InvalidEdit: no layer of ``model`` has LoRA enabled.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> hidden = keras.layers.Dense(4, name="hidden")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
        >>> with_lora = kerasnb.enable_lora(model, "hidden", rank=2).model
        >>> merged = kerasnb.merge_lora(with_lora)
        >>> merged.report.status("hidden"), kerasnb.lora.lora_layers(merged.model)
        ('folded', {})
        >>> x = np.ones((1, 8), "float32")
        >>> bool(np.allclose(merged.model(x), with_lora(x), atol=1e-6))
        True
    """
    paths = [path for path, layer in _graph.walk_layers(model) if not _graph.is_graph_model(layer)
             and (lora_rank(layer) or any(lora_rank(sub) for sub in _graph.sublayers(layer)[1:]))]
    if not paths:
        raise InvalidEdit(
            f"Model {model.name!r} has no layer with LoRA enabled, so there is nothing to merge. "
            "kerasnb.enable_lora(model, match, rank=8) turns it on. Received: a model without LoRA"
        )
    edits = []
    for path in paths:
        layer = _targets.resolve(model, path).layer
        if lora_rank(layer):
            edits.append(Transform(path, _merged, _lora_settings(layer, None, None)))
        else:  # a block whose sub-layers have LoRA: made again from its config, which has none
            edits.append(Transform(path, _merged_inside))
    result = apply(model, edits)
    _train_as_flagged(result.model)  # enable_lora's "only the factors train" ends with the factors
    return result


@surgery_errors_only
def lora_layers(model) -> dict:
    """``{path: rank}`` of the layers with LoRA enabled, sub-layers of blocks included.

    Args:
        model: Any built model; it is only read.

    Returns:
        dict: ``{"outer/inner": rank}``, empty when no layer has LoRA.

    Examples:
        >>> inputs = keras.Input((8,), name="x")
        >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(inputs))
        >>> kerasnb.lora.lora_layers(model)
        {}
        >>> kerasnb.lora.lora_layers(kerasnb.enable_lora(model, "out", rank=4).model)
        {'out': 4}
    """
    return {path: lora_rank(layer) for path, layer, _ in _targets.deep_layers(model) if lora_rank(layer)}


def lora_rank(layer) -> int:
    return int(getattr(layer, "lora_rank", None) or 0) if getattr(layer, "lora_enabled", False) else 0


# ----------------------------------------------------------------------------- weight rules


def _lora_settings(layer, rank, alpha) -> dict:
    """The config keys that turn LoRA on (or off, with None) where the layer takes them: Dense,
    EinsumDense and Embedding name them in their constructors; a convolution lists them in its
    config only once LoRA is on, so LoRA is enabled on it by its rule and merged through its config."""
    import inspect

    accepted = set(inspect.signature(type(layer).__init__).parameters) | set(_graph.config_of(layer))
    return {key: value for key, value in (("lora_rank", rank), ("lora_alpha", alpha)) if key in accepted}


def _with_lora(rank, alpha):
    def rule(old, new):
        """Keep every trained variable (paired by structure); the LoRA factors start from Keras's own initialisers."""
        if not getattr(new, "lora_enabled", False):  # a layer whose config cannot say LoRA (a convolution)
            new.enable_lora(rank, lora_alpha=alpha)
        return Outcome(Status.KEPT, f"LoRA rank {rank}" + (f", alpha {alpha}" if alpha != rank else ""),
                       weights.carried_values(old, new), faithful=True)  # one factor is zero: the layer computes what it did
    return rule


def _with_lora_inside(paths, positions, rank, alpha):
    def rule(old, new):
        """LoRA on the chosen sub-layers of the rebuilt block (found by position); every trained variable kept."""
        twins = weights.paired_sublayers(old, new)
        for i in positions:
            twins[i][1].enable_lora(rank, lora_alpha=alpha)
        return Outcome(Status.KEPT, f"LoRA rank {rank} on {len(paths)} layer(s) inside: "
                                 + ", ".join(p.split("/", 1)[-1] for p in paths),
                       weights.carried_values(old, new), faithful=True)
    return rule


def _merged_kernels(layer) -> dict:
    """``{id(kernel variable): merged kernel}`` for ``layer`` and its sub-layers with LoRA: what each
    computes with (Keras's own ``kernel`` / ``embeddings`` property: the kernel plus the factors' product)."""
    merged = {}
    for sub in _graph.sublayers(layer):
        if lora_rank(sub):
            for name in ("kernel", "embeddings"):
                variable = next((v for v in weights.own_variables(sub) if v.name.split("/")[-1] == name), None)
                if variable is not None:
                    merged[id(variable)] = keras.ops.copy(keras.ops.convert_to_tensor(getattr(sub, name)))
    return merged


def _merged_inside(old, new) -> Outcome:
    """The block made again without LoRA; each LoRA sub-layer's merged kernel goes into its twin's kernel."""
    merged = _merged_kernels(old)
    return Outcome(Status.FOLDED, f"LoRA merged into {len(merged)} kernel(s) inside",
                   weights.carried_values(old, new, merged))


def _merged(old, new) -> Outcome:
    """The layer made again without LoRA, its kernel the merged one."""
    return Outcome(Status.FOLDED, f"LoRA rank {lora_rank(old)} merged into its kernel",
                   weights.carried_values(old, new, _merged_kernels(old)))


def _train_as_flagged(model) -> None:
    """Every variable trains as its layer's flag says again (the statistics Keras keeps stay frozen)."""
    for _, layer in _graph.walk_layers(model):
        if isinstance(layer, keras.layers.Layer) and not _graph.is_graph_model(layer):
            for sub in _graph.sublayers(layer):
                _graph.set_flag(sub, sub.trainable)


# ----------------------------------------------------------------------------- matching


def _matching(model, match) -> list:
    """``[(path, layer, owner)]`` of the layers LoRA goes on (owner: the block holding a sub-layer, or None)."""
    candidates = [(path, layer, owner) for path, layer, owner in _targets.deep_layers(model)
                  if isinstance(layer, _KINDS) and not _graph.is_graph_model(layer)]
    return _targets.select(model, match, candidates, kind="Dense, EinsumDense, Embedding or convolution layer")


# ----------------------------------------------------------------------------- attention projections


def attention_projections(model, which: str = "query, value") -> list:
    """The paths of the projections ``which`` of every attention layer of ``model``, at any depth.

    Named as ``kerasnb.enable_lora`` names them: ``enable_lora(model, paths)`` (or
    ``match="attention"`` for query and value) puts LoRA on them. Keras's MultiHeadAttention
    and the attention layers of keras-hub blocks are found. The model is only read.

    Args:
        model: A built functional or Sequential model (a keras-hub backbone or task too).
        which: ``"query, value"`` (default: what the LoRA paper and keras-hub's
            ``Backbone.enable_lora`` take) or ``"query, key, value, output"``.

    Returns:
        list: the projections' paths, e.g. ``["mha/query", "mha/value"]``.

    Raises:
        InvalidEdit: ``which`` is neither of these.

    Examples:
        >>> from kerasnb.lora import attention_projections
        >>> tokens = keras.Input((4, 8), name="tokens")
        >>> mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")
        >>> model = keras.Model(tokens, mha(tokens, tokens))
        >>> attention_projections(model)
        ['mha/query', 'mha/value']
        >>> attention_projections(model, "query, key, value, output")
        ['mha/query', 'mha/key', 'mha/value', 'mha/attention_output']
    """
    if which not in PROJECTIONS:
        raise InvalidEdit(f"which is one of {', '.join(map(repr, PROJECTIONS))}. Received: which={which!r}")
    return [t for path, layer in _graph.walk_layers(model) for t in _projections_in(path, layer, PROJECTIONS[which])]


def lora_targets(path: str, layer, which: str = "query, value") -> tuple[list, str]:
    """``(paths, in words)`` of what LoRA on the layer at ``path`` means: the layer itself when it is
    a Dense, EinsumDense, Embedding or convolution layer, else its attention projections ``which``."""
    if isinstance(layer, _KINDS) and not _graph.is_graph_model(layer):
        return [path], f"this {type(layer).__name__} layer"
    found = _projections_in(path, layer, PROJECTIONS[which])
    return found, (f"its {len(found)} attention projection(s) ({which})" if found else "")


def lora_in(path: str, layer) -> dict:
    """``{path: rank}`` of the layer at ``path`` and the sub-layers inside it that have LoRA."""
    if not isinstance(layer, keras.layers.Layer):
        return {}
    if _graph.is_graph_model(layer):
        return {f"{path}/{p}": r for p, r in lora_layers(layer).items()}
    prefix = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
    out = {path: lora_rank(layer)} if lora_rank(layer) else {}
    for sub in _graph.sublayers(layer)[1:]:
        sub_path = getattr(sub, "path", None)
        if sub_path and lora_rank(sub):
            out[prefix + sub_path] = lora_rank(sub)
    return out


def train_only_lora(model, leave=()) -> None:
    """Freeze every variable of ``model`` but the LoRA factors, as :func:`enable_lora` does; layers
    at or inside the paths ``leave`` are left as they are."""
    for path, layer in _graph.walk_layers(model):
        if _graph.is_graph_model(layer) or not isinstance(layer, keras.layers.Layer) \
                or any(path == n or path.startswith(n + "/") for n in leave):
            continue
        for variable in layer.weights:
            if not variable.path.rsplit("/", 1)[-1].startswith("lora_"):
                variable.trainable = False


def is_attention(layer) -> bool:
    """Whether ``layer`` is an attention layer (Keras's MultiHeadAttention, keras-hub's and most
    others name their class so): whose Dense sub-layers are its projections."""
    return "attention" in type(layer).__name__.lower()


def _projections_in(path: str, layer, projections) -> list:
    """Paths of the Dense / EinsumDense layers inside ``layer`` that are the ``projections``
    ("query", "value", ...) of an attention layer."""
    if not isinstance(layer, keras.layers.Layer) or _graph.is_graph_model(layer):
        return []
    subs = _graph.sublayers(layer)
    by_path = {getattr(sub, "path", None): sub for sub in subs}
    names = {name for p in projections for name in _PROJECTION_NAMES[p]}
    prefix = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
    found = []
    for sub in subs[1:]:
        sub_path = getattr(sub, "path", None)
        if not sub_path or "/" not in sub_path or not isinstance(sub, (keras.layers.Dense, keras.layers.EinsumDense)):
            continue
        holder, name = sub_path.rsplit("/", 1)
        if name in names and is_attention(by_path.get(holder)):
            found.append(prefix + sub_path)
    return found
