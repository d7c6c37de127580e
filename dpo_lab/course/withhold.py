"""The copy of ``dpo_lab`` a grading worker sees: the graded exercises' reference implementations removed.

In-process tripwires can be switched off by the code they watch, so the answer must not exist where the
student's code runs. For each group of exercises graded in one worker, the grader copies the package and
replaces the body of every function (and every method of every class) listed in
:data:`dpo_lab.course.rubric.REFERENCES` / :data:`~dpo_lab.course.rubric.EQUIVALENTS` for those exercises with
``raise Withheld(...)``. Their source, compiled code and ``__wrapped__`` chains are gone from the copy; the
rest of the package (data helpers, ``batch_logprobs`` and ``dpo_loss`` for ``dpo_step``, the grading fixture)
works as usual. A listed object that cannot be found in its module's source is an error, not a skip: a moved
reference must never stay reachable by accident.
"""

from __future__ import annotations

import ast
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Iterable

from . import rubric

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def withheld_targets(exercises: Iterable[str]) -> dict[str, set[str]]:
    """``{module name: {qualified names}}`` to withhold for these exercises (references and equivalents)."""
    targets: dict[str, set[str]] = {}
    for name in exercises:
        for obj in (rubric.REFERENCES[name], *rubric.EQUIVALENTS[name]):
            targets.setdefault(obj.__module__, set()).add(obj.__qualname__)
    return targets


def _label(module: str, qualname: str) -> str:
    return f"{module}.{qualname}"


def _stub(module: str, qualname: str) -> str:
    return f'raise __import__("dpo_lab.course.withheld", fromlist=["Withheld"]).Withheld("{_label(module, qualname)}")'


def stripped_source(source: str, module: str, qualnames: set[str]) -> str:
    """`source` with the bodies of `qualnames` (functions; for a class, every method) replaced by a stub."""
    data = source.encode("utf-8")
    starts = [0]
    for line in data.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    edits: list[tuple[int, int, bytes]] = []
    found: set[str] = set()

    def stub_body(node: ast.AST, label: str) -> None:
        first, last = node.body[0], node.body[-1]
        begin = starts[first.lineno - 1] + first.col_offset
        end = starts[last.end_lineno - 1] + last.end_col_offset
        edits.append((begin, end, _stub(module, label).encode("utf-8")))

    def stub_methods(cls: ast.ClassDef, qualname: str) -> None:
        for node in cls.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                stub_body(node, f"{qualname}.{node.name}")
            elif isinstance(node, ast.ClassDef):
                stub_methods(node, f"{qualname}.{node.name}")

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            qualname = prefix + node.name
            if qualname in qualnames:
                found.add(qualname)
                if isinstance(node, ast.ClassDef):
                    stub_methods(node, qualname)
                else:
                    stub_body(node, qualname)
            elif isinstance(node, ast.ClassDef):
                visit(node.body, qualname + ".")

    visit(ast.parse(source).body, "")
    missing = qualnames - found
    if missing:
        raise LookupError(f"{module}: {sorted(missing)} not found in its source: the grader cannot withhold it")
    for begin, end, text in sorted(edits, reverse=True):  # nested edits (class methods) never overlap
        data = data[:begin] + text + data[end:]
    return data.decode("utf-8")


def _module_file(module: str) -> Path:
    __import__(module)
    path = Path(sys.modules[module].__file__).resolve()
    if PACKAGE_DIR not in path.parents:
        raise LookupError(f"{module} is not part of {PACKAGE_DIR}")
    return path


def build(exercises: Iterable[str], dest: str | Path) -> Path:
    """Write the withheld copy to ``dest/dpo_lab`` (world-readable, no bytecode); returns ``dest``."""
    dest = Path(dest)
    copy = dest / "dpo_lab"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))
    for module, qualnames in withheld_targets(exercises).items():
        original = _module_file(module)
        target = copy / original.relative_to(PACKAGE_DIR)
        target.write_text(stripped_source(original.read_text(encoding="utf-8"), module, qualnames), encoding="utf-8")
    for root, dirs, files in os.walk(dest):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
    return dest


def worker_groups(exercises: list[str]) -> list[list[str]]:
    """Exercises of one notebook split into workers: two exercises share a worker unless one of them USES the
    other's reference (``dpo_step`` runs with the package's ``dpo_loss``, so it cannot share ``dpo_loss``'s)."""
    groups: list[list[str]] = []
    for name in exercises:
        needs = set(rubric.USES.get(name, {}).values())
        for group in groups:
            if not needs & set(group) and not any(name in set(rubric.USES.get(g, {}).values()) for g in group):
                group.append(name)
                break
        else:
            groups.append([name])
    return groups


def bindings(exercise: str) -> dict[str, list[str]]:
    """``{namespace name: [module, qualname]}`` the worker binds while grading `exercise` (see rubric.USES)."""
    out: dict[str, Any] = {}
    for key, other in rubric.USES.get(exercise, {}).items():
        obj = rubric.reference_object(other)
        out[key] = [obj.__module__, obj.__qualname__]
    return out
