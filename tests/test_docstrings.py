"""Every public function of the package says what it does: module-level functions and the methods
(properties included) of module-level classes whose names do not start with ``_``."""

from __future__ import annotations

import ast
from pathlib import Path

import yapo_interp


def public_functions(code: str) -> list[tuple[int, str, bool]]:
    """``(line, qualified name, has a docstring)`` of each public function defined in ``code``."""
    found = []

    def visit(body, prefix):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if not node.name.startswith("_"):
                    found.append((node.lineno, prefix + node.name,
                                  ast.get_docstring(node) is not None))
            elif isinstance(node, ast.ClassDef) and not prefix and not node.name.startswith("_"):
                visit(node.body, node.name + ".")

    visit(ast.parse(code).body, "")
    return found


def test_every_public_function_has_a_docstring():
    root = Path(yapo_interp.__file__).parent
    checked, missing = 0, []
    for path in sorted(root.rglob("*.py")):
        for line, name, documented in public_functions(path.read_text(encoding="utf-8")):
            checked += 1
            if not documented:
                missing.append(f"{path.relative_to(root.parent)}:{line} {name}")
    assert checked > 300  # the walk reaches the whole package
    assert not missing, "public functions without a docstring:\n" + "\n".join(missing)


def test_the_walk_sees_functions_methods_and_properties_but_not_private_ones():
    code = ('def f():\n    """Doc."""\n'
            "def g():\n    def inner():\n        pass\n"
            "def _private():\n    pass\n"
            "class C:\n    @property\n    def p(self):\n        return 1\n"
            '    def _helper(self):\n        pass\n'
            "class _Hidden:\n    def m(self):\n        pass\n")
    assert public_functions(code) == [(1, "f", True), (3, "g", False), (10, "C.p", False)]
