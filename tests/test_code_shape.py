"""Functions that fit a screen: no function over 80 lines and no class over 250 in ``dpo_lab/``, except a
function that is only declarations (no branch, loop, ``try`` or ``with``: the CLI's argument table)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dpo_lab"
MAX_FUNCTION, MAX_CLASS = 80, 250
CONTROL = (ast.If, ast.For, ast.While, ast.Try, ast.With, ast.Match, ast.IfExp, ast.comprehension)


def _too_long(source: str, name: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        length = (getattr(node, "end_lineno", None) or 0) - getattr(node, "lineno", 0) + 1
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and length > MAX_FUNCTION:
            if any(isinstance(n, CONTROL) for n in ast.walk(node)):
                found.append(f"{name}:{node.lineno} {node.name}() is {length} lines")
        elif isinstance(node, ast.ClassDef) and length > MAX_CLASS:
            found.append(f"{name}:{node.lineno} class {node.name} is {length} lines")
    return found


def test_no_function_over_80_lines_and_no_class_over_250():
    found = [line for p in sorted(PACKAGE.rglob("*.py")) for line in _too_long(p.read_text(), str(p.name))]
    assert not found, "split where the split names a real idea:\n" + "\n".join(found)


def test_the_length_guard_fails_on_a_long_function_but_not_on_a_long_declaration():
    body = "".join(f"    x{i} = {i}\n" for i in range(90))
    declarations = "def table():\n" + body
    logic = "def work(a):\n    if a:\n        pass\n" + body
    assert _too_long(declarations, "m.py") == []
    assert _too_long(logic, "m.py") == ["m.py:1 work() is 93 lines"]
    long_class = "class Big:\n" + "".join(f"    def f{i}(self):\n        return {i}\n" for i in range(130))
    assert _too_long(long_class, "m.py") == ["m.py:1 class Big is 261 lines"]
