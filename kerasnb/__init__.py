"""kerasnb: model surgery for Keras 3, in a Jupyter notebook.

Every operation returns a :class:`SurgeryResult` (a new model plus a weight report); the model
passed in is never changed. The editor panel (``show_editor``) is imported only when used, so
``import kerasnb`` loads neither ipywidgets, pandas nor matplotlib.
"""

from .edits import ChangeInput, Configure, Delete, Insert, Prune, Replace, SetTrainable, Transform, Truncate
from .errors import (
    AmbiguousTarget,
    BudgetNotReachable,
    Conflict,
    CoupledChannels,
    DoesNotFit,
    IncompatibleShape,
    InputLayerEdit,
    InternalError,
    InvalidEdit,
    InvalidParameter,
    InvalidRegistration,
    LayerNotFound,
    NameClash,
    QuantizationRefused,
    SaveFailed,
    UnsaveablePatch,
    SurgeryError,
    UnbuiltModel,
    UnknownShape,
    UnknownType,
    UnprunableLayer,
    UnwidenableLayer,
    UnsupportedLayer,
    UnsupportedModel,
)
from .report import STATUSES, LayerRow, Status, WeightReport
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

__version__ = "0.3.0.dev0"  # CHANGELOG.md: 0.3.0 (unreleased)

__all__ = [
    "AmbiguousTarget", "BudgetNotReachable", "Conflict", "CoupledChannels", "DoesNotFit", "InternalError",
    "InvalidParameter", "InvalidRegistration", "SaveFailed", "UnknownShape", "UnknownType", "UnprunableLayer", "UnwidenableLayer", "ChangeInput", "Configure", "Transform", "Truncate", "Delete", "IncompatibleShape", "Insert", "InputLayerEdit",
    "InvalidEdit", "LayerInfo", "Prune", "channel_groups", "prune", "LayerNotFound", "LayerRow", "NameClash", "Replace", "STATUSES",
    "SetTrainable", "Status", "SurgeryError", "SurgeryResult", "UnbuiltModel", "UnsupportedLayer",
    "UnsupportedModel", "WeightReport", "apply", "catalog", "configure", "delete", "describe",
    "insert", "register_replacement", "replace", "set_trainable", "show_editor", "Editor",
    "change_input", "configure_all", "fold_batchnorm", "replace_all", "split_activations", "swap_activation",
    "truncate", "transforms", "enable_lora", "merge_lora", "count_macs", "prune_heads", "importance", "prune_global",
    "prune_global_plan", "deepen", "widen", "grow_blocks", "quantize", "quantization_sensitivity",
    "QuantizationRefused", "trace", "Trace", "patch", "UnsaveablePatch",
]


_LAZY = {
    # name -> (module, attribute or None for the module itself)
    "show_editor": ("editor", "show_editor"),
    "Editor": ("editor", "Editor"),
    "catalog": ("catalog", None),
    "codegen": ("codegen", None),
    "fitting": ("fitting", None),
    "enable_lora": ("lora", "enable_lora"),
    "merge_lora": ("lora", "merge_lora"),
    "register_replacement": ("catalog", "register_replacement"),
    "prune": ("pruning", "prune"),
    "channel_groups": ("pruning", "channel_groups"),
    "pruning": ("pruning", None),
    "change_input": ("input_change", "change_input"),
    "configure_all": ("transforms", "configure_all"),
    "fold_batchnorm": ("batchnorm", "fold_batchnorm"),
    "replace_all": ("transforms", "replace_all"),
    "split_activations": ("activations", "split_activations"),
    "swap_activation": ("activations", "swap_activation"),
    "truncate": ("transforms", "truncate"),
    "transforms": ("transforms", None),
    "count_macs": ("flops", "count_macs"),
    "flops": ("flops", None),
    "prune_heads": ("heads", "prune_heads"),
    "importance": ("criteria", "importance"),
    "prune_global": ("budget", "prune_global"),
    "deepen": ("deepening", "deepen"),
    "widen": ("growth", "widen"),
    "grow_blocks": ("blocks_growth", "grow_blocks"),
    "prune_global_plan": ("budget", "prune_global_plan"),
    "quantize": ("quantization", "quantize"),
    "quantization_sensitivity": ("quantization", "quantization_sensitivity"),
    "trace": ("tracing", "trace"),
    "Trace": ("tracing", "Trace"),
    "patch": ("patching", "patch"),
}


def __getattr__(name):
    # The panel, the catalog and pruning load only when asked for, so `import kerasnb` stays light.
    # importlib, not `from . import x`: the latter probes this very __getattr__ and recurses.
    import importlib

    if name not in _LAZY:
        renamed = {"count_flops": "count_macs"}.get(name)  # the old name, for one release of messages
        raise AttributeError(f"module 'kerasnb' has no attribute {name!r}"
                             + (f"; it is called {renamed!r} now" if renamed else ""))
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(f"{__name__}.{module_name}")
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value  # later look-ups skip this function
    return value
