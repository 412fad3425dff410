"""Imports flow one way: the package's import graph, read from the source with ``ast``, respects a
layer order, its leaves import only leaves, and no module imports itself back in a cycle.

Every ``import`` counts, function-local ones and ``if TYPE_CHECKING:`` ones included, for the
layer order; the cycle check follows what runs when a module is imported (module-level imports,
and the ``__init__`` of every package a module imports from outside it: Python runs it first).

The layers, lowest first (:data:`LAYERS`; a module may import its own layer and those below):

1. **leaves** (:data:`LEAVES`): ``errors``, ``version``, ``io``, ``metrics``, ``seeding``,
   ``hooks``, ``axes`` — they import nothing from ``yapo_interp`` but other leaves;
2. **data**: ``yapo_interp.data`` and its modules (the datasets, the prompts, preference pairs);
3. **core**: models and SAEs, log-probabilities, steering vectors and their interventions, the
   preference objective, vector discovery, the plot style, the shared command-line flags
   (``yapo_interp.cli``) and command lines written back from configs (``argv``), the test fixtures, and the package's ``__init__`` (a facade over
   ``models``);
4. **stages**: what turns a model and a config into results — train, evaluate, attribution,
   patching, the SAE training and its corpus, the judge, behaviour steering, lm-eval, on-policy
   answers, steering cost, feature pages and figures (a stage may use another stage);
5. **entry points**: the whole study, the sweep, and every ``__main__``.

A new module gets a place in :data:`LAYERS` (the test says which one is missing).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import yapo_interp

PACKAGE = "yapo_interp"

LEAVES = ("yapo_interp.errors", "yapo_interp.version", "yapo_interp.io", "yapo_interp.metrics",
          "yapo_interp.seeding", "yapo_interp.hooks", "yapo_interp.axes")

# (layer, module prefixes) lowest first; a prefix covers the module and, for a package, every
# module below it. The package's own __init__ is named exactly (it would cover everything).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("leaves", LEAVES),
    ("data", ("yapo_interp.data",)),
    ("core", ("yapo_interp", "yapo_interp.models", "yapo_interp.logprobs",
              "yapo_interp.steering", "yapo_interp.objective", "yapo_interp.vectors",
              "yapo_interp.style", "yapo_interp.cli", "yapo_interp.argv", "yapo_interp.testing")),
    ("stages", ("yapo_interp.train", "yapo_interp.evaluate", "yapo_interp.attribution",
                "yapo_interp.patching", "yapo_interp.sae_train", "yapo_interp.corpus",
                "yapo_interp.judge", "yapo_interp.behaviour", "yapo_interp.lmeval",
                "yapo_interp.onpolicy", "yapo_interp.cost", "yapo_interp.feature_pages",
                "yapo_interp.figures")),
    ("entry points", ("yapo_interp.study", "yapo_interp.sweep")),  # and every __main__
)


@dataclass(frozen=True)
class Source:
    """One module's code, and whether it is a package's ``__init__``."""

    code: str
    is_package: bool = False


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` (both modules of the package) at ``line``."""

    source: str
    target: str
    line: int
    local: bool = False       # inside a function (or under ``if __name__ == "__main__":``)
    type_only: bool = False   # under ``if TYPE_CHECKING:``
    implicit: bool = False    # the __init__ of the package ``target`` that Python runs first

    @property
    def at_import(self) -> bool:
        """Runs when ``source`` is imported."""
        return not (self.local or self.type_only)


# --------------------------------------------------------------------------------------------
# Reading the graph
# --------------------------------------------------------------------------------------------


def package_sources(root: Path = Path(yapo_interp.__file__).parent,
                    package: str = PACKAGE) -> dict[str, Source]:
    """Every module below ``root`` by dotted name (``pkg/__init__.py`` is ``pkg``)."""
    sources = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        sources[".".join(parts)] = Source(path.read_text(encoding="utf-8"), is_package)
    return sources


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _is_main_guard(test: ast.expr) -> bool:
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__")


def _imports(tree: ast.AST):
    """``(node, local, type_only)`` for every import statement of a module."""
    def walk(node, local, type_only):
        for child in ast.iter_child_nodes(node):
            child_local, child_type_only = local, type_only
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                child_local = True
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                yield from walk(ast.Module(body=child.body, type_ignores=[]), local, True)
                yield from walk(ast.Module(body=child.orelse, type_ignores=[]), local, type_only)
                continue
            elif isinstance(child, ast.If) and _is_main_guard(child.test):
                child_local = True
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, child_local, child_type_only
            yield from walk(child, child_local, child_type_only)
    yield from walk(tree, False, False)


def _resolve(name: str, modules: set[str]) -> str | None:
    """The longest known module that ``name`` (a module or a name in one) is in."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_edges(sources: dict[str, Source], package: str = PACKAGE) -> list[Edge]:
    """Every import of one module of the package by another, with how it runs."""
    modules = set(sources)
    edges = []
    for source, module in sorted(sources.items()):
        tree = ast.parse(module.code)
        here = source if module.is_package else source.rpartition(".")[0]
        for node, local, type_only in _imports(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                         for alias in node.names]
            for name in names:
                if not (name == package or name.startswith(package + ".")):
                    continue
                target = _resolve(name, modules)
                if target is None or target == source:
                    continue
                edges.append(Edge(source, target, node.lineno, local, type_only))
                # importing a.b.c runs a.b's __init__ first (the root package's always runs)
                parent = target.rpartition(".")[0]
                while parent and parent != package:
                    if parent in modules and not (source == parent
                                                  or source.startswith(parent + ".")):
                        edges.append(Edge(source, parent, node.lineno, local, type_only,
                                          implicit=True))
                    parent = parent.rpartition(".")[0]
    return edges


# --------------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------------


def layer_of(module: str, layers=LAYERS, package: str = PACKAGE) -> int | None:
    """The index of ``module``'s layer in ``layers`` (``None`` when none covers it)."""
    if module.endswith(".__main__"):
        return len(layers) - 1
    best, best_length = None, -1
    for index, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            covers = module == prefix or (prefix != package and module.startswith(prefix + "."))
            if covers and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    return best


def _cycles(edges: list[Edge]) -> list[list[str]]:
    """One cycle (``a, b, ..., a``) in each strongly connected component of more than one module
    (Tarjan's algorithm, then a shortest way round from the component's first module)."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def connect(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(set(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    cycles = []
    for component in components:
        start = min(component)
        parents: dict[str, str] = {}  # breadth-first from start until it is reached again
        frontier = [start]
        while start not in parents:
            following = []
            for node in frontier:
                for other in sorted(graph[node] & component):
                    if other not in parents:
                        parents[other] = node
                        following.append(other)
            frontier = following
        path, node = [start], parents[start]
        while node != start:
            path.append(node)
            node = parents[node]
        cycles.append([start, *reversed(path[1:]), start])
    return sorted(cycles)


def layering_problems(sources: dict[str, Source], layers=LAYERS, leaves=LEAVES,
                      package: str = PACKAGE) -> list[str]:
    """What breaks the rules of the module docstring, one line each (empty: nothing)."""
    edges = import_edges(sources, package)
    problems = []
    for module in sorted(sources):
        if layer_of(module, layers, package) is None:
            problems.append(f"{module} has no layer: add it to LAYERS in tests/test_layering.py")
    for edge in edges:
        where = f"{edge.source} (line {edge.line}) imports {edge.target}"
        kind = " (the __init__ Python runs first)" if edge.implicit else ""
        if edge.source in leaves and edge.target not in leaves:
            problems.append(f"leaf {where}{kind}: a leaf imports only leaves")
            continue
        source_layer, target_layer = (layer_of(edge.source, layers, package),
                                      layer_of(edge.target, layers, package))
        if None not in (source_layer, target_layer) and target_layer > source_layer:
            problems.append(f"{where}{kind}: layer '{layers[source_layer][0]}' imports the "
                            f"higher layer '{layers[target_layer][0]}'")
    for component in _cycles([edge for edge in edges if edge.at_import]):
        problems.append(f"import cycle: {' -> '.join(component)} (at import time; move one "
                        "import into the function that needs it, with a comment saying why)")
    return problems


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_the_package_imports_one_way():
    sources = package_sources()
    assert "yapo_interp.errors" in sources and "yapo_interp.data" in sources
    problems = layering_problems(sources)
    assert not problems, "\n".join(problems)


def test_the_graph_reads_every_kind_of_import():
    sources = {
        "yapo_interp": Source("from yapo_interp.models import load_model\n", is_package=True),
        "yapo_interp.models": Source("import torch\nfrom . import errors\n"),
        "yapo_interp.errors": Source(""),
        "yapo_interp.data": Source("from yapo_interp.data.pairs import Pair\n", is_package=True),
        "yapo_interp.data.pairs": Source("from .schema import FORMS\n"),
        "yapo_interp.data.schema": Source(""),
        "yapo_interp.steering": Source(
            "from typing import TYPE_CHECKING\n"
            "from yapo_interp import models\n"
            "if TYPE_CHECKING:\n    from yapo_interp.data import Pair\n"
            "def f():\n    import yapo_interp.data.schema as s\n"),
    }
    edges = {(e.source, e.target, e.local, e.type_only, e.implicit)
             for e in import_edges(sources)}
    assert edges == {
        ("yapo_interp", "yapo_interp.models", False, False, False),
        ("yapo_interp.models", "yapo_interp.errors", False, False, False),
        ("yapo_interp.data", "yapo_interp.data.pairs", False, False, False),
        ("yapo_interp.data.pairs", "yapo_interp.data.schema", False, False, False),
        ("yapo_interp.steering", "yapo_interp.models", False, False, False),
        ("yapo_interp.steering", "yapo_interp.data", False, True, False),
        ("yapo_interp.steering", "yapo_interp.data.schema", True, False, False),
        ("yapo_interp.steering", "yapo_interp.data", True, False, True),
    }


def test_the_checker_fails_when_a_leaf_imports_upward():
    sources = {
        "yapo_interp": Source("", is_package=True),
        "yapo_interp.errors": Source("def f():\n    from yapo_interp.models import load_model\n"),
        "yapo_interp.models": Source("from yapo_interp.errors import UserError\n"),
    }
    problems = layering_problems(sources)
    assert len(problems) == 1
    assert problems[0].startswith("leaf yapo_interp.errors (line 2) imports yapo_interp.models")


def test_the_checker_fails_on_a_lower_layer_importing_a_higher_one_and_on_a_cycle():
    sources = {
        "yapo_interp": Source("", is_package=True),
        "yapo_interp.steering": Source("from yapo_interp.evaluate import score\n"),
        "yapo_interp.evaluate": Source("from yapo_interp.evaluate.scoring import score\n",
                                       is_package=True),
        "yapo_interp.evaluate.scoring": Source("from yapo_interp.steering import steer\n"),
        "yapo_interp.mystery": Source(""),
    }
    problems = layering_problems(sources)
    assert "yapo_interp.mystery has no layer: add it to LAYERS in tests/test_layering.py" in problems
    assert any(p.startswith("yapo_interp.steering (line 1) imports yapo_interp.evaluate: layer "
                            "'core' imports the higher layer 'stages'") for p in problems)
    assert any(p.startswith("import cycle: yapo_interp.evaluate -> yapo_interp.evaluate.scoring "
                            "-> yapo_interp.steering -> yapo_interp.evaluate (at import time")
               for p in problems)
    # the same cycle closed only inside a function is no cycle at import time
    sources["yapo_interp.evaluate.scoring"] = Source(
        "def f():\n    from yapo_interp.steering import steer\n")
    assert not any(p.startswith("import cycle") for p in layering_problems(sources))


def test_a_cycle_through_a_package_init_is_found():
    # feature_pages -> attribution.explain runs attribution/__init__, which imports
    # attribution.analysis, which imports feature_pages: a cycle that no single edge shows
    sources = {
        "yapo_interp": Source("", is_package=True),
        "yapo_interp.feature_pages": Source("from yapo_interp.attribution.explain import x\n"),
        "yapo_interp.attribution": Source("from yapo_interp.attribution.analysis import a\n",
                                          is_package=True),
        "yapo_interp.attribution.analysis": Source("from yapo_interp.feature_pages import p\n"),
        "yapo_interp.attribution.explain": Source(""),
    }
    problems = layering_problems(sources)
    assert problems == ["import cycle: yapo_interp.attribution -> "
                        "yapo_interp.attribution.analysis -> yapo_interp.feature_pages -> "
                        "yapo_interp.attribution (at "
                        "import time; move one import into the function that needs it, with a "
                        "comment saying why)"]
