"""The docstrings ``help()`` serves: every public function and class names each of its arguments
and has an example, and every example runs and shows what the docstring says (issue 18, item 6).

The examples run with ``doctest`` in one fixed namespace (``keras``, ``np``, ``kerasnb``), the
random seed set before each, so their outputs (statuses, shapes, names) are the same every run.
"""

from __future__ import annotations

import doctest
import inspect
import re

import keras
import numpy as np
import pytest

import kerasnb

# Public methods users call, besides everything in kerasnb.__all__ (every public method of the Editor).
METHODS = {
    "SurgeryResult": ("compare",),
    "WeightReport": ("row", "status", "with_status", "counts", "summary", "to_frame"),
    "Editor": None,
}
# Public functions of modules documented in the reference, not in kerasnb.__all__.
MODULE_FUNCTIONS = ("activations.activations_in", "activations.fused_activations", "budget.GlobalPlan",
                    "budget.GlobalPlan.summary", "codegen.code", "compare.compare", "compare.layer_outputs", "lora.attention_projections", "lora.lora_layers",
                    "pruning.register_channel_rule")


def _public() -> dict:
    """``{"kerasnb.name": object}`` for every public function, class and method."""
    import importlib

    found = {}
    for name in kerasnb.__all__:
        obj = getattr(kerasnb, name)
        if inspect.ismodule(obj) or not callable(obj):
            continue  # catalog / transforms (modules), STATUSES (a tuple)
        found[f"kerasnb.{name}"] = obj
    for cls_name, methods in METHODS.items():
        cls = getattr(kerasnb, cls_name)
        if methods is None:
            methods = [n for n, v in vars(cls).items() if not n.startswith("_") and inspect.isfunction(v)]
        for method in methods:
            found[f"kerasnb.{cls_name}.{method}"] = getattr(cls, method)
    for dotted in MODULE_FUNCTIONS:
        module, *attributes = dotted.split(".")
        obj = importlib.import_module(f"kerasnb.{module}")
        for attribute in attributes:
            obj = getattr(obj, attribute)
        found[f"kerasnb.{dotted}"] = obj
    return found


PUBLIC = _public()


def _is_error(obj) -> bool:
    return inspect.isclass(obj) and issubclass(obj, BaseException)


def _parameters(obj) -> list[str]:
    """The names a caller passes: a function's parameters, a class's constructor's (self excluded)."""
    if _is_error(obj) or (inspect.isclass(obj) and issubclass(obj, kerasnb.Status)):
        return []  # raised, or looked up by value: nobody constructs them with named arguments
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return []
    return [p.name for p in signature.parameters.values() if p.name not in ("self", "cls")]


def _documented(doc: str) -> set[str]:
    """Names listed in the docstring's ``Args:`` / ``Attributes:`` sections (Google style)."""
    names = set()
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if line.strip() not in ("Args:", "Attributes:"):
            continue
        indent = len(line) - len(line.lstrip())
        for entry in lines[i + 1:]:
            if entry.strip() and len(entry) - len(entry.lstrip()) <= indent:
                break  # the next section
            match = re.match(r"\s*\**(\w+)( \([^)]*\))?:", entry)
            if match and len(entry) - len(entry.lstrip()) == indent + 4:
                names.add(match.group(1))
    return names


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_docstring_names_every_argument_and_has_an_example(name):
    obj = PUBLIC[name]
    doc = inspect.getdoc(obj) or ""
    assert doc.strip(), f"{name} has no docstring"
    summary = doc.strip().splitlines()
    assert len(summary) == 1 or not summary[1].strip(), f"{name}: the summary is one line, then a blank line"
    missing = [p for p in _parameters(obj) if p not in _documented(doc)]
    assert not missing, f"{name}: its Args section does not name {missing}"
    assert ">>>" in doc, f"{name} has no example"


def _examples(name):
    finder = doctest.DocTestFinder(recurse=False)
    return finder.find(PUBLIC[name], name, globs={})


EDITOR_SETUP_MARK = "The examples of the methods start from this model and editor::"


def _editor_setup() -> str:
    """The code the Editor's docstring says its methods' examples start from (so it is what runs)."""
    lines = inspect.getdoc(kerasnb.Editor).splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == EDITOR_SETUP_MARK) + 2
    block = []
    for line in lines[start:]:
        if line.strip() and not line.startswith("    "):
            break
        block.append(line[4:])
    return "\n".join(block).strip()


@pytest.mark.parametrize("name", sorted(n for n in PUBLIC if ">>>" in (inspect.getdoc(PUBLIC[n]) or "")))
def test_example_runs(name):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in _examples(name):
        keras.utils.set_random_seed(0)
        test.globs = {"keras": keras, "np": np, "kerasnb": kerasnb}
        if name.startswith("kerasnb.Editor."):
            exec(_editor_setup(), test.globs)  # noqa: S102 -- the docstring's own setup, run as written
        output: list[str] = []
        try:
            runner.run(test, out=output.append)
        finally:
            for value in test.globs.values():  # close every panel the example opened
                if isinstance(value, kerasnb.Editor):
                    value.close()
            test.globs.clear()
        assert not runner.failures, f"{name}'s example fails:\n" + "".join(output)


def test_the_argument_check_reads_google_sections():
    """The check above finds names only as entries of an Args / Attributes section."""
    doc = "Summary.\n\nArgs:\n    model: the model.\n    *targets: layers.\n    keep (float): a fraction.\n" \
          "        mentions extra: in a continuation line\n\nReturns:\n    result: not an argument.\n"
    assert _documented(doc) == {"model", "targets", "keep"}
