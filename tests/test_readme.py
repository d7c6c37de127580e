"""README and CI stay in step: CI runs exactly the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README must open with a ```bash block holding the two set-up commands"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_readme_opens_with_exactly_two_commands():
    commands = _readme_setup_commands()
    assert len(commands) == 2
    assert "python -m dpo_lab run" in commands[0] and "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert _readme_setup_commands()[1] in ci


def _resolves(name: str) -> bool:
    """``dpo_lab.a.b.c`` is a module, or an attribute of one; a trailing ``_`` is a prefix (``selfcheck.check_*``)."""
    import importlib

    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for j, attr in enumerate(parts[i:], start=i):
            if j == len(parts) - 1 and attr.endswith("_") and any(a.startswith(attr) for a in dir(obj)):
                return True
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_dpo_lab_name_in_the_docs_and_notebooks_exists():
    """Moving or renaming a module cannot leave the README, docs/ or a notebook pointing at nothing."""
    import json

    texts = {p: p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
    for nb in sorted(ROOT.glob("0*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        texts[nb] = "\n".join("".join(c["source"]) for c in cells)
    found = [
        (path, m.group(0)) for path, text in texts.items() for m in re.finditer(r"\bdpo_lab(?:\.[A-Za-z_]\w*)+", text)
    ]
    assert len(found) > 50  # the docs' API table alone names dozens
    assert sorted(f"{path.name}: {name}" for path, name in found if not _resolves(name)) == []
    assert not _resolves("dpo_lab.evaluation.no_such_module") and not _resolves("dpo_lab.run.layout.NO_SUCH_NAME")
