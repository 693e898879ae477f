"""House rules of the package source, checked by reading it (no model is built).

- Keras internals only in ``kerasnb/_graph.py``: no ``keras.src``, no Keras private attribute
  (``layer._inbound_nodes``, ``getattr(x, "_tracker")``...), no ``Layer.trainable.fset`` elsewhere.
- kerasnb never imports TensorFlow, except inside ``criteria._gradients``: Keras has no
  backend-neutral gradient, so Taylor importance takes the running backend's autodiff there.
- The core (all of kerasnb but ``editor/``) loads neither the editor nor ipywidgets, pandas or
  matplotlib when imported: those come inside the functions that need them.
"""
from __future__ import annotations

import ast
import pathlib
import re

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "kerasnb"
GRAPH = PACKAGE / "_graph.py"
# Private names of other libraries kerasnb may use anywhere: IPython's display protocol.
ALLOWED_FOREIGN = re.compile(r"_repr_\w+_|_kerasnb_\w+")
KERAS_SRC = re.compile(r"\bkeras\.src\b|\btrainable\.fset\b")


def _sources():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, path.read_text(), ast.parse(path.read_text())


def _own_private_names() -> set:
    """Every ``_name`` kerasnb itself defines: functions, classes, module and class attributes, and
    attributes a class sets on ``self``/``cls``. An ``obj._name`` outside this set is someone else's."""
    names = set()
    for _, _, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    for t in ast.walk(target):
                        if isinstance(t, ast.Name):
                            names.add(t.id)
                        elif (isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                              and t.value.id in ("self", "cls")):
                            names.add(t.attr)
    return {n for n in names if n.startswith("_")}


def keras_internals(sources) -> list:
    """``file:line: text`` for each access to another library's private attribute or to ``keras.src``."""
    own = _own_private_names()
    found = []
    for path, text, tree in sources:
        if path == GRAPH:
            continue
        lines = text.splitlines()
        where = path.relative_to(PACKAGE.parent)
        for number, line in enumerate(lines, 1):
            if KERAS_SRC.search(line.split("#", 1)[0]):
                found.append(f"{where}:{number}: {line.strip()}")
        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.Attribute):
                name = node.attr
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) > 1
                  and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
                name = node.args[1].value
            if (name and name.startswith("_") and not name.startswith("__") and name not in own
                    and not ALLOWED_FOREIGN.fullmatch(name)):
                found.append(f"{where}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    return sorted(set(found))


def _imports(tree, module_level_only: bool):
    """``(line, module)`` for each import in ``tree`` (at module level only: not inside a def)."""
    def visit(node, top):
        for child in ast.iter_child_nodes(node):
            inside = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import) and (inside or not module_level_only):
                for alias in child.names:
                    yield child.lineno, alias.name
            elif isinstance(child, ast.ImportFrom) and (inside or not module_level_only):
                base = "." * child.level + (child.module or "")
                yield child.lineno, base
                for alias in child.names:
                    yield child.lineno, f"{base}.{alias.name}" if base.strip(".") else base + alias.name
            yield from visit(child, inside)
    yield from visit(tree, True)


BACKEND_AUTODIFF = ("criteria.py", "_gradients")  # the one function that may import TensorFlow


def tensorflow_imports(sources) -> list:
    found = []
    for path, _, tree in sources:
        allowed = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and (path.name, node.name) == BACKEND_AUTODIFF:
                allowed |= set(range(node.lineno, node.end_lineno + 1))
        found += [f"{path.relative_to(PACKAGE.parent)}:{line}: imports {module}"
                  for line, module in _imports(tree, module_level_only=False)
                  if module.split(".")[0] == "tensorflow" and line not in allowed]
    return found


def heavy_core_imports(sources) -> list:
    """Module-level imports of the editor, ipywidgets, pandas or matplotlib by the core."""
    heavy = re.compile(r"(ipywidgets|pandas|matplotlib)(\..*)?|(kerasnb|)\.+editor(\..*)?")
    editor = PACKAGE / "editor"
    return [f"{path.relative_to(PACKAGE.parent)}:{line}: imports {module} at module level"
            for path, _, tree in sources if editor not in path.parents
            for line, module in _imports(tree, module_level_only=True)
            if heavy.fullmatch(module)]


def test_keras_internals_only_in_graph():
    found = keras_internals(list(_sources()))
    assert not found, "Keras internals outside kerasnb/_graph.py (move them behind a _graph function):\n" + "\n".join(found)


def test_no_tensorflow_import():
    found = tensorflow_imports(list(_sources()))
    assert not found, "kerasnb uses keras only:\n" + "\n".join(found)


def test_core_loads_no_editor_nor_heavy_libraries():
    found = heavy_core_imports(list(_sources()))
    assert not found, "the core imports these inside the functions that need them:\n" + "\n".join(found)


def _planted(text: str):
    """The package's sources with ``text`` added to the end of ``kerasnb/weights.py``."""
    planted = []
    for path, source, _ in _sources():
        if path.name == "weights.py" and path.parent == PACKAGE:
            source = source + "\n" + text + "\n"
        planted.append((path, source, ast.parse(source)))
    return planted


def test_the_checks_catch_a_planted_line():
    # Each check fails on one line of each kind, named by file and line.
    for text in ("def f(layer):\n    return layer._inbound_nodes",
                 "def f(layer):\n    return getattr(layer, '_tracker', None)",
                 "def f(layer):\n    keras.layers.Layer.trainable.fset(layer, True)",
                 "from keras.src.models import functional"):
        found = keras_internals(_planted(text))
        assert found and all(f.startswith("kerasnb/weights.py:") for f in found), (text, found)
    assert tensorflow_imports(_planted("def f():\n    import tensorflow as tf"))
    assert heavy_core_imports(_planted("import pandas as pd"))
    assert heavy_core_imports(_planted("from .editor import panel"))
    assert heavy_core_imports(_planted("from kerasnb.editor.session import Session"))
    assert not heavy_core_imports(_planted("def f():\n    import matplotlib"))
