"""keras-hub task models (GPT2CausalLM, BertTextClassifier, ...) stay tasks after an edit.

A task is a functional model around a backbone, with a preprocessor and methods of its own
(``generate()``). The rebuild gives back a plain functional graph; here the task is made again
the way keras-hub makes it: ``type(task)(backbone=..., preprocessor=task.preprocessor)``, around
an :class:`EditedBackbone` that holds the edited graph, answers the attributes the task reads
(``token_embedding``, ``transformer_layers``, ``num_layers``...), and saves and loads as a graph.
The head's weights come from the rebuilt graph, layer by layer. Where that cannot be done, the
plain model is returned and a note says why. keras-hub is imported only for task models.
"""

from __future__ import annotations

import sys

import keras
import numpy as np

from . import _graph

_EDITED = None  # the EditedBackbone class, made (and registered) on first use


def is_task(model) -> bool:
    """A keras-hub task: a functional model with a ``backbone`` model and a ``preprocessor``."""
    return (type(model).__module__.startswith("keras_hub") and hasattr(model, "preprocessor")
            and _graph.is_graph_model(getattr(model, "backbone", None)))


def is_backbone(model) -> bool:
    """A keras-hub backbone (GPT2Backbone, an EditedBackbone...) with a functional graph."""
    keras_hub = sys.modules.get("keras_hub")  # a keras-hub model means keras-hub is imported already
    return (keras_hub is not None and isinstance(model, keras_hub.models.Backbone)
            and _graph.is_graph_model(model))


def as_backbone(backbone, rebuilt) -> tuple:
    """``(model, notes)``: the edited graph ``rebuilt`` of ``backbone`` as an :class:`EditedBackbone`.

    Keras-hub users edit a backbone and then build its task around it: the result keeps what tasks
    read (``token_embedding``, ``transformer_layers``...), its dtype policy, and saves, loads and
    goes through ``save_to_preset`` / ``Backbone.from_preset`` as the edited graph. An attribute
    naming a layer the edited graph no longer has becomes None, and a note says so.
    """
    layers, plain = _attributes(backbone, rebuilt, strict=False)
    gone = sorted(key.lstrip("_") for key, value in layers.items() if value is None)
    try:
        edited = _edited(backbone, rebuilt, layers, plain)
    except Exception as error:  # a backbone whose graph or attributes an EditedBackbone cannot hold
        return rebuilt, [f"The edited {_backbone_class(backbone)} could not be made a keras-hub backbone again "
                         f"({type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}), so "
                         "the result is a plain keras.Model."]
    if not gone:
        return edited, []
    return edited, [f"The attributes {gone} of the {_backbone_class(backbone)} named layers that the edited graph "
                    "no longer has at its top level (the edit removed or replaced them), so they are None on the "
                    "edited backbone; a task that reads them cannot be built around it."]


def _edited(backbone, graph, layers, plain):
    """An EditedBackbone over ``graph``'s own layers and tensors, as ``backbone`` is named and set."""
    edited = _edited_backbone_class()(
        inputs=_graph.pack_inputs(graph, _graph.input_tensors(graph)),
        outputs=_graph.pack_outputs(graph, _graph.output_tensors(graph)),
        name=backbone.name, dtype=backbone.dtype_policy, layer_attributes=layers,
        plain_attributes=plain, backbone_class=_backbone_class(backbone))
    if edited.trainable != graph.trainable:  # the setter reaches every layer: only when the whole is frozen
        edited.trainable = graph.trainable
    return edited


def _backbone_class(backbone) -> str:
    kept = getattr(backbone, "_kerasnb_attributes", None)  # an EditedBackbone edited again
    return kept["backbone_class"] if kept else type(backbone).__name__


def rewrap(task, rebuilt) -> tuple:
    """``(model, notes)``: ``rebuilt`` as an instance of ``type(task)``, or as it is with a note."""
    backbone = task.backbone
    try:
        new_backbone_graph = rebuilt.get_layer(backbone.name)
    except ValueError:
        return rebuilt, [f"{type(task).__name__}: the edit removed its backbone {backbone.name!r}, so the result "
                         "is a plain keras.Model."]
    layers, plain = _attributes(backbone, new_backbone_graph)
    if layers is None:
        return rebuilt, [f"{type(task).__name__}: {plain} so the result is a plain keras.Model, not a "
                         f"{type(task).__name__} (no generate(), no preprocessor)."]
    edited = _edited(backbone, new_backbone_graph, layers, plain)
    try:
        # The task's other arguments (num_classes, activation...) as its own config gives them.
        settings = {k: v for k, v in task.get_config().items() if k not in ("backbone", "preprocessor")}
        settings.setdefault("name", task.name)
        new_task = type(task)(backbone=edited, preprocessor=task.preprocessor, **settings)
    except Exception as error:  # a task whose constructor reads what the edit changed
        return rebuilt, [f"{type(task).__name__} could not be made around the edited backbone "
                         f"({type(error).__name__}: {str(error).splitlines()[0][:200]}), so the result is a "
                         "plain keras.Model."]
    missing = _copy_head(new_task, rebuilt, backbone.name)
    if missing:
        return rebuilt, [f"{type(task).__name__}: its head layers {missing} do not match the edited model, so the "
                         "result is a plain keras.Model."]
    _same_flags(new_task, rebuilt)
    # keras-hub tasks compile themselves with their defaults in their constructor.
    return new_task, [f"Still a {type(task).__name__}, around the edited backbone (an EditedBackbone that saves "
                      "and loads as a graph), with the original preprocessor; compiled with the task's "
                      "defaults: compile() it again if you had other settings."]


def _attributes(old_backbone, new_graph, strict=True):
    """What the task may read on its backbone: layers by name (lists too), and plain settings.

    A layer attribute whose layer the edit removed: ``(None, why)`` when ``strict``, else None."""
    old_ids = {id(layer) for layer in _graph.sublayers(old_backbone)}
    names = {layer.name for layer in new_graph.layers}
    layers, plain = {}, {}
    for key, value in _graph.family_attributes(old_backbone, new_graph).items():
        if isinstance(value, keras.layers.Layer) and id(value) in old_ids:
            if value.name not in names:
                if not strict:
                    layers[key] = None
                    continue
                return None, f"the attribute {key!r} of its backbone is the layer {value.name!r}, which the edit removed,"
            layers[key] = value.name
        elif isinstance(value, (list, tuple)) and value and all(
                isinstance(v, keras.layers.Layer) and id(v) in old_ids for v in value):
            layers[key] = _listed(value, new_graph, old_backbone)
        elif value is None or isinstance(value, (bool, int, float, str)):
            plain[key] = value
    if "transformer_layers" in layers and "num_layers" in plain:
        plain["num_layers"] = len(layers["transformer_layers"])  # dropped blocks: the count follows
    return layers, plain


def _listed(old_list, new_graph, old_backbone) -> list:
    """The names for a list attribute (``transformer_layers``) on the edited graph: the listed layers it
    still has, and the new layers of the listed classes an edit added (a grown block), in the order
    the graph calls them. A task's cached generation loops over this list: a block left out of it
    would be skipped by ``generate()`` while ``call()`` runs it."""
    listed = {layer.name for layer in old_list}
    kinds = tuple({type(layer) for layer in old_list})
    old_names = {layer.name for layer in old_backbone.layers}
    added = [layer.name for layer in new_graph.layers if isinstance(layer, kinds) and layer.name not in old_names]
    if not added:
        names = {layer.name for layer in new_graph.layers}
        return [layer.name for layer in old_list if layer.name in names]
    return [layer.name for layer in new_graph.layers if layer.name in listed or layer.name in added]


def _copy_head(new_task, rebuilt, backbone_name) -> list:
    """Give the task's own layers (the head) the rebuilt graph's weights; names of those that do not fit."""
    by_name = {layer.name: layer for layer in rebuilt.layers}
    missing = []
    for layer in new_task.layers:
        if layer.name == backbone_name or not layer.weights:
            continue
        source = by_name.get(layer.name)
        if source is None or [tuple(v.shape) for v in source.weights] != [tuple(v.shape) for v in layer.weights]:
            missing.append(layer.name)
            continue
        for target, value in zip(layer.weights, source.weights):
            target.assign(value)
    return missing


def _same_flags(new_task, rebuilt) -> None:
    """The head layers' flags (weightless ones too) and the task's own flag as the rebuilt graph has
    them: a frozen task stays frozen, and unfreezing its backbone leaves its head as it was."""
    by_name = {layer.name: layer for layer in rebuilt.layers}
    for layer in new_task.layers:
        source = by_name.get(layer.name)
        if source is not None and layer is not getattr(new_task, "backbone", None):
            layer.trainable = source.trainable
    _graph.set_own_trainable(new_task, rebuilt.trainable)


def _edited_backbone_class():
    global _EDITED
    if _EDITED is not None:
        return _EDITED
    import keras_hub

    @keras.saving.register_keras_serializable(package="kerasnb")
    class EditedBackbone(keras_hub.models.Backbone):
        """A keras-hub backbone edited by kerasnb: its graph, and the attributes its task reads."""

        def __init__(self, *args, layer_attributes=None, plain_attributes=None, backbone_class="", **kwargs):
            super().__init__(*args, **kwargs)
            self._kerasnb_attributes = {"layer_attributes": dict(layer_attributes or {}),
                                        "plain_attributes": dict(plain_attributes or {}),
                                        "backbone_class": backbone_class}
            for key, value in (plain_attributes or {}).items():
                setattr(self, key, value)
            for key, value in (layer_attributes or {}).items():
                if value is None:
                    layer = None
                elif isinstance(value, list):
                    layer = [self.get_layer(v) for v in value]
                else:
                    layer = self.get_layer(value)
                setattr(self, key, layer)

        def get_config(self):
            config = _graph.graph_config(self)  # the graph, not the original's hyperparameters
            config.update(self._kerasnb_attributes)
            config["dtype"] = keras.dtype_policies.serialize(self.dtype_policy)
            return config

        @classmethod
        def from_config(cls, config, custom_objects=None):
            config = _shapes_as_tuples(dict(config))
            if isinstance(config.get("dtype"), dict):
                config["dtype"] = keras.dtype_policies.get(config["dtype"])
            model = _graph.model_from_graph_config(cls, config, custom_objects)
            _graph.build_lazy_sublayers(model)  # before Keras loads the saved weights into them
            return model

    _EDITED = EditedBackbone
    return _EDITED


def _shapes_as_tuples(config):
    """``config`` with the input shapes of its layers' ``build_config`` as tuples again.

    JSON gives them back as lists, and Keras builds each layer of a loaded graph from them. keras-hub
    layers read a list as several inputs' shapes (RWKV7's blocks take its first item) or add tuples to
    it (DeepLabV3's pyramid pooling): a keras-hub backbone never meets this, as it loads through its
    constructor, but an edited one loads as a graph. A list of shapes stays a list of tuples.
    Tensors in layer configs (not in the graph's calls, which Keras reads itself) become arrays."""
    def shape(value):
        if isinstance(value, list) and all(v is None or isinstance(v, int) for v in value):
            return tuple(value)
        if isinstance(value, (list, tuple)):
            return type(value)(shape(v) for v in value)
        if isinstance(value, dict):
            return {k: shape(v) for k, v in value.items()}
        return value

    def walk(value):
        if isinstance(value, dict):
            if value.get("class_name") == "__tensor__" and isinstance(value.get("config"), dict):
                # A constructor argument a layer replaced by a variable in build() (D-FINE's decoder
                # puts upsampling_factor's variable where its config reads the number): its value.
                return np.asarray(value["config"]["value"], dtype=value["config"].get("dtype"))
            out = {k: v if k == "inbound_nodes" else walk(v) for k, v in value.items()}
            build = out.get("build_config")
            if isinstance(build, dict):
                out["build_config"] = {k: shape(v) if k in ("input_shape", "shapes_dict") else v
                                       for k, v in build.items()}
            return out
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(config)


class _EditedBackboneLoader:
    """Holds EditedBackbone's registered name until keras-hub is imported, so that a .keras file of an
    edited backbone loads in a new process whichever of kerasnb and keras-hub was imported first."""

    def get_config(self):  # never made: Keras registers only classes that have one
        return {}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return _edited_backbone_class().from_config(config, custom_objects)


class _RegisterAfterKerasHub:
    """An import hook that registers the real EditedBackbone as soon as keras-hub has been imported:
    keras_hub.models.Backbone.from_preset() checks that the registered class is a Backbone before it
    loads anything, so the stand-in above is not enough for it. Importing keras-hub here instead would
    make ``import kerasnb`` slow for everyone."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras_hub":
            return None
        sys.meta_path.remove(self)  # once, and not for the look-up below
        import importlib.util

        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _edited_backbone_class()

        spec.loader.exec_module = exec_module  # this module's own loader object only
        return spec


# Registered before a .keras file or a preset of an edited backbone is loaded in a new process,
# whichever of kerasnb and keras-hub is imported first.
if "keras_hub" in sys.modules:
    _edited_backbone_class()
else:
    keras.saving.register_keras_serializable(package="kerasnb", name="EditedBackbone")(_EditedBackboneLoader)
    sys.meta_path.insert(0, _RegisterAfterKerasHub())
