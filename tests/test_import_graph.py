"""The package's layers, read from its imports (module level AND inside functions): one-way, no cycles.

Each subpackage of ``dpo_lab/`` is a layer; a module may import its own layer and the layers listed
before it, never one after it. The teaching core imports nothing from the package and no third-party
library but torch: a student can read it without the machinery around it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dpo_lab"
# lowest first; the last entry holds the package's top: the public API, the CLI and `python -m dpo_lab`
LAYERS = [
    ("_version",),
    ("infra",),  # atomic files, device/precision/seeding/distributed, manifests, checkpoints
    ("core",),  # HH format, tokenization, collators, log-probs, the DPO loss: what a student reads
    ("fast",),  # the scored LM head, lean log-probs, the reference cache: the core's numbers, faster
    ("training",),  # batching, optimizer, the SFT and DPO loops
    ("data",),  # data sources, the offline corpus, statistics
    ("run",),  # configuration, run-folder layout, models, stages 01-03
    ("evaluation",),  # generation, judges, win rates, Elo, safety, bias, plots, stage 04
    ("course",),  # exercise registry, rubric, self-checks, grader, sandbox, student notebooks
    ("__init__", "__main__", "cli"),
]
CORE_THIRD_PARTY = {"torch"}


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def imports(path: Path, package: Path) -> set[str]:
    """Absolute names of everything `path` imports: ``dpo_lab.x.y`` for the package, top-level names otherwise."""
    name = module_name(path, package)
    is_init = path.name == "__init__.py"
    here = name.split(".") if is_init else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.add(target)
            if target.startswith(package.name):  # `from pkg import module` imports the module itself
                for alias in node.names:
                    if (package.parent / (target + "." + alias.name).replace(".", "/")).with_suffix(".py").exists() or (
                        package.parent / (target + "." + alias.name).replace(".", "/") / "__init__.py"
                    ).exists():
                        found.add(f"{target}.{alias.name}")
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    """``{module: package modules it imports}``; a package's ``__init__`` counts as the package's own name."""
    modules = {module_name(p, package): p for p in package.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = {d for d in imports(path, package) if d in modules and d != name}
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer_of(module: str, package_name: str = "dpo_lab") -> int:
    """Index in LAYERS of a module's first component below the package (the package itself is the top)."""
    parts = module.split(".")
    first = parts[1] if len(parts) > 1 else "__init__"
    for i, names in enumerate(LAYERS):
        if first in names:
            return i
    raise AssertionError(f"{module} belongs to no layer: add its folder to LAYERS in {Path(__file__).name}")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps if layer_of(d) > layer_of(m))


def test_no_import_cycle():
    assert cycles(import_graph(PACKAGE)) == [], "import cycles between dpo_lab modules"


def test_no_layer_imports_a_layer_above_it():
    assert upward_imports(import_graph(PACKAGE)) == []


def test_every_module_is_in_a_layer():
    for module in import_graph(PACKAGE):
        layer_of(module)


def test_the_core_needs_only_torch():
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for path in (PACKAGE / "core").glob("*.py"):
        outside = {
            name
            for name in imports(path, PACKAGE)
            if not name.startswith("dpo_lab.core") and name.split(".")[0] not in stdlib | CORE_THIRD_PARTY
        }
        assert outside == set(), f"{path.name} imports {sorted(outside)}: the teaching core stays plain torch"


@pytest.fixture()
def toy_package(tmp_path):
    package = tmp_path / "dpo_lab"
    for layer in ("core", "training"):
        (package / layer).mkdir(parents=True)
        (package / layer / "__init__.py").write_text("", encoding="utf-8")
    (package / "__init__.py").write_text("from .training.loop import train\n", encoding="utf-8")
    (package / "core" / "loss.py").write_text("def loss():\n    return 0\n", encoding="utf-8")
    (package / "training" / "loop.py").write_text(
        "from ..core.loss import loss\n\ndef train():\n    return loss()\n", encoding="utf-8"
    )
    return package


def test_the_guards_catch_a_cycle_and_an_upward_import_hidden_in_a_function(toy_package):
    assert cycles(import_graph(toy_package)) == [] and upward_imports(import_graph(toy_package)) == []
    (toy_package / "core" / "loss.py").write_text(
        "def loss():\n    from dpo_lab.training import loop\n    return 0\n", encoding="utf-8"
    )
    graph = import_graph(toy_package)
    assert cycles(graph) == [frozenset({"dpo_lab.core.loss", "dpo_lab.training.loop"})]
    assert upward_imports(graph) == [
        "dpo_lab.core.loss -> dpo_lab.training",
        "dpo_lab.core.loss -> dpo_lab.training.loop",
    ]
